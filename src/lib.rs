//! jobsink: a drop-in implementation of Knative Eventing's JobSink, plus per-sink WebAssembly
//! hooks.

pub mod cloudevent;
pub mod controller;
pub mod crd;
pub mod hook;
pub mod job;
pub mod k8s;
pub mod location;
pub mod metrics;
pub mod sinks;
