//! What can go wrong with a hook: a call that failed ([`HookError`], handled by the sink's
//! failure policy; a rejection is a decision, not an error: `pipeline.rs`), and a component
//! that cannot serve ([`LoadError`], reported as `HookReady=False`).

use std::time::Duration;

use super::slots::OverBudget;

/// A failed hook call. Texts that come from the guest are truncated to
/// [`MAX_GUEST_TEXT_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The hook returned `err(...)`.
    #[error("the hook returned an error: {0}")]
    Returned(String),
    /// The hook trapped (a panic, `unreachable`, stack overflow...), with the tail of its
    /// stderr when it printed something (Rust panics print their message there).
    #[error("the hook trapped: {0}")]
    Trapped(String),
    /// The call ran past its deadline and was interrupted.
    #[error("the hook ran past its deadline of {} ms", .0.as_millis())]
    DeadlineExceeded(Duration),
    /// The instance tried to grow its memory past the limit.
    #[error("the hook exceeded its memory limit of {} MiB", .0 >> 20)]
    MemoryLimitExceeded(usize),
    /// A modified event or Job larger than the host accepts.
    #[error("the hook's {what} is {size} bytes, more than the {limit} allowed")]
    OutputTooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// The modified event has a different `id`, `source` or `specversion`.
    #[error("the hook changed the event's {0}, which identifies the event")]
    IdentityChanged(&'static str),
    /// The modified Job has a different name, namespace, owner or `job-sink-*` label.
    #[error("the hook changed the Job's {0}, which is protected")]
    ProtectedFieldChanged(String),
    /// The modified event is not a valid CloudEvent.
    #[error("the hook returned an invalid event: {0}")]
    InvalidEvent(String),
    /// The modified Job is not a batch/v1 Job.
    #[error("the hook returned an invalid Job: {0}")]
    InvalidJob(String),
    /// The instance could not be created (for example no free instance slot).
    #[error("the hook could not be started: {0}")]
    Instantiate(String),
    /// The sink declares a hook that is not loaded (yet, or its last update was bad).
    #[error("the hook is not loaded")]
    NotLoaded,
    /// The worker thread running the call was lost (a host bug, never the guest's doing).
    #[error("the hook call was lost: {0}")]
    Internal(String),
}

impl HookError {
    /// A low-cardinality name for metrics and Kubernetes Event reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            HookError::Returned(_) => "returned_error",
            HookError::Trapped(_) => "trapped",
            HookError::DeadlineExceeded(_) => "deadline_exceeded",
            HookError::MemoryLimitExceeded(_) => "memory_limit_exceeded",
            HookError::OutputTooLarge { .. } => "output_too_large",
            HookError::IdentityChanged(_) => "identity_changed",
            HookError::ProtectedFieldChanged(_) => "protected_field_changed",
            HookError::InvalidEvent(_) => "invalid_event",
            HookError::InvalidJob(_) => "invalid_job",
            HookError::Instantiate(_) => "instantiate_failed",
            HookError::NotLoaded => "not_loaded",
            HookError::Internal(_) => "internal",
        }
    }
}

/// A component that cannot serve. The previous version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the component is {size} bytes, more than the {limit} allowed")]
    TooLarge { size: usize, limit: usize },
    #[error("the component's sha256 is {actual}, but spec.hook.sha256 says {expected}")]
    Sha256Mismatch { expected: String, actual: String },
    #[error("not a WebAssembly component: {0:#}")]
    NotAComponent(#[source] wasmtime::Error),
    /// Compiling ran into one of its limits (time, CPU, memory, code size).
    #[error("{0}; hooks must compile within the dispatcher's limits")]
    CompileLimit(String),
    /// The compiling process could not be run (a host problem, not the component's).
    #[error("the hook could not be compiled: {0}")]
    Compiler(String),
    #[error("the component imports `{import}`, which hooks may not use ({why})")]
    ForbiddenImport { import: String, why: &'static str },
    #[error("the component does not export `{0}`")]
    MissingExport(&'static str),
    #[error("the component cannot be linked: {0:#}")]
    Link(#[source] wasmtime::Error),
    #[error("the component cannot be linked: {phase}: {source:#}")]
    PhaseMismatch {
        phase: &'static str,
        #[source]
        source: wasmtime::Error,
    },
    #[error("the hook refused its config: {0}")]
    ConfigRejected(String),
    #[error("validate-config failed: {0}")]
    ValidateFailed(#[source] HookError),
    #[error(transparent)]
    OverMemoryBudget(#[from] OverBudget),
}

impl LoadError {
    /// A CamelCase reason for the `HookReady` condition and Kubernetes Events.
    pub fn reason(&self) -> &'static str {
        match self {
            LoadError::TooLarge { .. } => "HookTooLarge",
            LoadError::Sha256Mismatch { .. } => "HookSha256Mismatch",
            LoadError::NotAComponent(_) => "HookNotAComponent",
            LoadError::CompileLimit(_) => "HookCompileLimit",
            LoadError::Compiler(_) => "HookCompileFailed",
            LoadError::ForbiddenImport { .. } => "HookForbiddenImport",
            LoadError::MissingExport(_) => "HookMissingExport",
            LoadError::Link(_) | LoadError::PhaseMismatch { .. } => "HookLinkFailed",
            LoadError::ConfigRejected(_) => "HookConfigRejected",
            LoadError::ValidateFailed(_) => "HookValidateFailed",
            LoadError::OverMemoryBudget(_) => "HookOverMemoryBudget",
        }
    }
}

/// Longest text taken from a guest into an error, a rejection or a log line: enough for a
/// useful message, small enough for logs, headers and Kubernetes Events.
pub const MAX_GUEST_TEXT_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes on a character boundary, with control characters
/// replaced by spaces so that a guest cannot forge log lines.
pub(crate) fn guest_text(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = text[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_text_is_cut_on_a_character_boundary_and_loses_control_characters() {
        assert_eq!(guest_text("a\nb", 10), "a b");
        assert_eq!(guest_text("ééé", 3), "é…");
    }
}
