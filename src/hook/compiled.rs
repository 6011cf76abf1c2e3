//! [`CompiledHook`]: one compiled component, shared by every sink that uses the same bytes
//! (the loader keeps one per sha256).

use std::sync::Arc;

use super::idle::IdleInstances;
use super::template::Template;
use super::ticker::Ticker;

/// A compiled, pre-instantiated component and what its calls share.
pub(crate) struct CompiledHook {
    /// Lowercase hex sha256 of the component's bytes.
    pub sha256: String,
    pub template: Template,
    /// The engine's epoch ticker, kept ticking while a call of this component runs.
    pub ticker: Arc<Ticker>,
    /// Its spare and retired store (`idle.rs`).
    pub idle: IdleInstances,
}

impl CompiledHook {
    /// Drops the retired store and makes the next spare ([`IdleInstances::upkeep`]).
    pub(crate) fn upkeep(&self) {
        self.idle.upkeep(&self.template, &self.ticker, &self.sha256);
    }
}
