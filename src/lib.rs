//! jobsink: a drop-in implementation of Knative Eventing's JobSink, plus per-sink WebAssembly
//! hooks.
//!
//! Where things are:
//! - an event enters in [`receiver`] (HTTP), is decoded and validated in [`cloudevent`];
//! - its Job and Secret are built, purely, in [`job`], and created in `receiver::create`;
//! - JobSink status (address, conditions) is reconciled in [`controller`];
//! - the JobSinks the receiver serves come from the watch cache in [`sinks`], the Jobs that
//!   already exist (duplicates) from the index in [`jobs`];
//! - the controller runs on the replica holding the Lease ([`leader`]);
//! - hooks run in [`hook`] (`HookRegistry::run`), API errors are classified in [`k8s`];
//! - who may send: feature flags in [`features`], OIDC tokens in [`auth`], EventPolicies in
//!   [`policy`], the HTTPS listener and its certificate in [`tls`];
//! - metrics are defined in [`metrics`], flags in [`config`].
//!
//! `docs/architecture.md` follows one event through these modules; `docs/contract.md` says
//! what is promised to Knative's users, `docs/hooks.md` what hooks may do.

pub mod auth;
pub mod cloudevent;
pub mod config;
pub mod controller;
mod cputime;
pub mod crd;
pub mod features;
pub mod hook;
pub mod job;
pub mod jobs;
pub mod k8s;
pub mod leader;
pub mod location;
mod lock;
pub mod metrics;
pub mod policy;
pub mod receiver;
pub mod sinks;
pub mod tls;

mod serve;

pub use serve::{controller_extensions, serve};
