//! EventPolicy authorization (`eventing.knative.dev/v1alpha1`): which EventPolicies apply to a
//! JobSink, who and what they allow, and what the sink's status says about them.
//!
//! - [`types`]: the resource; [`crd`]: its CRD (Knative's schema, for clusters without
//!   Knative; `deploy/eventpolicy-crd.yaml`);
//! - [`CompiledPolicy`]: one policy prepared for use (targets, subjects, filters, problems);
//! - [`filter`]: the SubscriptionsAPI filters of `spec.filters`;
//! - [`authorize`]: the decision for one request; [`event_policies_status`]: what a JobSink's
//!   status says about its policies; [`policy_status`]: a policy's own status (standalone);
//! - [`PolicyCache`]: every EventPolicy of the cluster, compiled, from one watch, and its
//!   changes policy by policy ([`PolicyChange`]).

mod authorize;
mod cache;
mod compiled;
pub mod crd;
pub mod filter;
pub mod policy_status;
mod status;
pub mod types;

pub use authorize::{Denial, authorize, authorize_event, authorize_subject};
pub use cache::{PolicyCache, PolicyChange};
pub use compiled::{CompiledPolicy, Coverage, subject_matches};
pub use policy_status::policy_status;
pub use status::event_policies_status;
pub use types::{API_VERSION, EventPolicy, EventPolicySpec, EventPolicyStatus};
