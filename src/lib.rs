//! jobsink: a drop-in implementation of Knative Eventing's JobSink with per-sink WebAssembly
//! hooks.

pub mod cloudevent;
pub mod crd;
pub mod job;
pub mod hook;
