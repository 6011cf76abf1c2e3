//! jobsink: a drop-in implementation of Knative Eventing's JobSink, plus per-sink WebAssembly
//! hooks.
//!
//! `docs/architecture.md` follows one event through the modules and maps every module to
//! what it holds ("Where each concern lives"); `docs/contract.md` says what is promised to
//! Knative's users, `docs/hooks.md` what hooks may do.

pub mod auth;
pub mod clock;
pub mod cloudevent;
pub mod conditions;
pub mod config;
pub mod controller;
mod cputime;
pub mod crd;
pub mod features;
pub mod hook;
pub mod job;
pub mod job_index;
pub mod k8s;
pub mod leader;
pub mod location;
mod lock;
pub mod metrics;
pub mod policy;
pub mod receiver;
pub mod sinks;
pub mod tls;
pub mod wiring;

mod serve;

pub use serve::serve;
