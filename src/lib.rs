//! jobsink: a drop-in implementation of Knative Eventing's JobSink with per-sink WebAssembly
//! hooks.

pub mod cloudevent;
pub mod crd;
pub mod hook;
pub mod job;
