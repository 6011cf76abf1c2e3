//! A compiled component ready to instantiate: the linked template (`InstancePre`) and where
//! its exports are, looked up once at load.

use wasmtime::Engine;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use super::bindings::exports::jobsink::hook::{config, event_phase, job_phase};
use super::host::HostState;

/// Which phases a component exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phases {
    pub event: bool,
    pub job: bool,
}

/// The pre-instantiated template of one component and its exports' indices.
pub(crate) struct Template {
    pub pre: InstancePre<HostState>,
    pub config: config::GuestIndices,
    pub event: Option<event_phase::GuestIndices>,
    pub job: Option<job_phase::GuestIndices>,
}

/// The phases' exports of one instance, looked up and type-checked. An instance made ahead
/// of its call (a spare) has them; a fresh one looks each up when it calls it.
#[derive(Default)]
pub(crate) struct Exports {
    pub event: Option<event_phase::Guest>,
    pub job: Option<job_phase::Guest>,
}

impl Template {
    pub(crate) fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    pub(crate) fn phases(&self) -> Phases {
        Phases {
            event: self.event.is_some(),
            job: self.job.is_some(),
        }
    }

    /// A new instance in `store`; runs the component's start functions.
    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Instance> {
        self.pre.instantiate(store)
    }

    /// Looks up both phases' exports of `instance` (type-checking them).
    pub(crate) fn exports(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Exports> {
        Ok(Exports {
            event: (self.event.as_ref())
                .map(|e| e.load(&mut *store, instance))
                .transpose()?,
            job: (self.job.as_ref())
                .map(|j| j.load(&mut *store, instance))
                .transpose()?,
        })
    }
}
