//! How one sink's hook is run: `spec.hook` with defaults applied and maxima enforced.

use std::time::Duration;

use crate::crd::{
    DEFAULT_HOOK_MEMORY_LIMIT_MIB, DEFAULT_HOOK_TIMEOUT_MS, FailurePolicy, HookMode, HookSpec,
    MAX_HOOK_MEMORY_LIMIT_MIB, MAX_HOOK_TIMEOUT_MS,
};

/// Deadline of one hook call when `timeoutMs` is unset ([`DEFAULT_HOOK_TIMEOUT_MS`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(DEFAULT_HOOK_TIMEOUT_MS as u64);
/// Largest accepted `timeoutMs` ([`MAX_HOOK_TIMEOUT_MS`]).
pub const MAX_TIMEOUT: Duration = Duration::from_millis(MAX_HOOK_TIMEOUT_MS as u64);
/// Memory of one instance when `memoryLimitMiB` is unset ([`DEFAULT_HOOK_MEMORY_LIMIT_MIB`]).
pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = (DEFAULT_HOOK_MEMORY_LIMIT_MIB as usize) << 20;
/// Largest accepted `memoryLimitMiB` ([`MAX_HOOK_MEMORY_LIMIT_MIB`]); also the pooling
/// allocator's per-memory ceiling.
pub const MAX_MEMORY_LIMIT_BYTES: usize = (MAX_HOOK_MEMORY_LIMIT_MIB as usize) << 20;

/// Largest component accepted, from a ConfigMap (which holds at most 1 MiB) or an OCI
/// image: a Python component embeds CPython (about 19 MB), and the bound still keeps compile
/// time and memory finite (compilation itself is bounded too, `compile.rs`).
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

/// The run settings of one sink's hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookSettings {
    /// `Fail` refuses the event when the hook fails; `Ignore` goes on with the input.
    pub failure_policy: FailurePolicy,
    /// `Enforce` applies decisions; `Monitor` only records them.
    pub mode: HookMode,
    /// Deadline of one call (at most [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// Memory limit of one instance (at most [`MAX_MEMORY_LIMIT_BYTES`]).
    pub memory_limit_bytes: usize,
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            failure_policy: FailurePolicy::Fail,
            mode: HookMode::Enforce,
            timeout: DEFAULT_TIMEOUT,
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
        }
    }
}

impl HookSettings {
    /// Settings from `spec.hook`: unset fields take their defaults, zero counts as unset, and
    /// values above the maxima are clamped to them (the CRD schema already refuses them, this
    /// guards against objects written around it).
    pub fn from_spec(spec: &HookSpec) -> Self {
        let timeout = match spec.timeout_ms {
            None | Some(0) => DEFAULT_TIMEOUT,
            Some(ms) => Duration::from_millis(u64::from(ms)).min(MAX_TIMEOUT),
        };
        let memory_limit_bytes = match spec.memory_limit_mi_b {
            None | Some(0) => DEFAULT_MEMORY_LIMIT_BYTES,
            Some(mib) => usize::try_from(mib)
                .ok()
                .and_then(|mib| mib.checked_mul(1 << 20))
                .unwrap_or(MAX_MEMORY_LIMIT_BYTES)
                .min(MAX_MEMORY_LIMIT_BYTES),
        };
        HookSettings {
            failure_policy: spec.failure_policy.unwrap_or_default(),
            mode: spec.mode.unwrap_or_default(),
            timeout,
            memory_limit_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_hook_spec_gets_the_documented_defaults() {
        let settings = HookSettings::from_spec(&HookSpec::default());
        assert_eq!(settings, HookSettings::default());
        assert_eq!(settings.timeout, Duration::from_millis(100));
        assert_eq!(settings.memory_limit_bytes, 32 << 20);
    }

    #[test]
    fn values_above_the_maxima_are_clamped() {
        let spec = HookSpec {
            timeout_ms: Some(60_000),
            memory_limit_mi_b: Some(4096),
            failure_policy: Some(FailurePolicy::Ignore),
            mode: Some(HookMode::Monitor),
            ..HookSpec::default()
        };
        let settings = HookSettings::from_spec(&spec);
        assert_eq!(settings.timeout, MAX_TIMEOUT);
        assert_eq!(settings.memory_limit_bytes, MAX_MEMORY_LIMIT_BYTES);
        assert_eq!(settings.failure_policy, FailurePolicy::Ignore);
        assert_eq!(settings.mode, HookMode::Monitor);
    }
}
