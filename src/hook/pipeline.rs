//! The policy layer: `on-event`, then the Job, then `on-job`, with decisions applied in
//! `Enforce` mode, recorded in `Monitor` mode, and failures handled by `failurePolicy`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;

use super::bindings::jobsink::hook::types as wit;
use super::call::CallReport;
use super::convert::{Rejection, event_from_wit, event_to_wit, job_from_json, job_to_json};
use super::engine::HookEngine;
use super::error::HookError;
use super::loader::LoadedHook;
use super::settings::HookSettings;
use crate::cloudevent::CloudEvent;
use crate::crd::{FailurePolicy, HookMode, SinkId};

/// Where in the pipeline something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before any call: the sink declares a hook that is not loaded.
    Load,
    /// `on-event`.
    Event,
    /// `on-job`.
    Job,
}

impl Phase {
    /// The phase as it appears in logs and notes.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Load => "load",
            Phase::Event => "on-event",
            Phase::Job => "on-job",
        }
    }
}

/// Something the caller should record (as a metric and a Kubernetes Event on the JobSink)
/// although the event went on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookNote {
    /// The hook failed and `failurePolicy: Ignore` went on with the unmodified input.
    FailureIgnored { phase: Phase, error: HookError },
    /// Monitor mode: the hook failed, which under `failurePolicy: Fail` refuses the event.
    WouldFail { phase: Phase, error: HookError },
    /// Monitor mode: the hook would have rejected the event.
    WouldReject { phase: Phase, rejection: Rejection },
    /// Monitor mode: the hook would have changed the event (`on-event`) or Job (`on-job`).
    WouldModify { phase: Phase },
}

impl HookNote {
    /// A CamelCase reason for a Kubernetes Event, also usable as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            HookNote::FailureIgnored { .. } => "HookFailureIgnored",
            HookNote::WouldFail { .. } => "HookWouldFail",
            HookNote::WouldReject { .. } => "HookWouldReject",
            HookNote::WouldModify { .. } => "HookWouldModify",
        }
    }

    /// A one-line explanation for the Kubernetes Event's message.
    pub fn message(&self) -> String {
        match self {
            HookNote::FailureIgnored { phase, error } => {
                format!(
                    "{}: {error}; went on with the unmodified input",
                    phase.as_str()
                )
            }
            HookNote::WouldFail { phase, error } => {
                format!(
                    "{}: {error}; the event would have been refused",
                    phase.as_str()
                )
            }
            HookNote::WouldReject { phase, rejection } => format!(
                "{}: would have rejected the event with {} {}: {}",
                phase.as_str(),
                rejection.code,
                rejection.reason,
                rejection.message
            ),
            HookNote::WouldModify { phase } => {
                let what = if *phase == Phase::Job { "Job" } else { "event" };
                format!("{}: would have modified the {what}", phase.as_str())
            }
        }
    }
}

/// What goes on to be created: the event to store and the Job to create.
#[derive(Clone, Debug)]
pub struct HookOutput {
    /// The event after `on-event` (the received event in Monitor mode or on ignored errors).
    pub event: CloudEvent,
    /// The Job after `on-job`, protected fields checked.
    pub job: Job,
    /// What to record although the event went on.
    pub notes: Vec<HookNote>,
}

/// Why nothing may be created for the event. The receiver turns it into its answer
/// (`receiver::ReceiveError::Hook`, mapped to HTTP in `receiver/error.rs`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookRefusal {
    /// The hook rejected the event (Enforce mode): the sender gets the rejection.
    #[error("event rejected by the sink's hook: {}: {}", .0.reason, .0.message)]
    Rejected(Rejection),
    /// The hook failed under `failurePolicy: Fail`: the sender should retry.
    #[error("the sink's hook failed: {0}")]
    Failed(#[source] HookError),
    /// The hook is declared but not loaded, under `failurePolicy: Fail`, with the reason.
    #[error("the sink's hook is not loaded yet: {0}")]
    NotLoaded(String),
    /// No hook slot freed up within the slot wait (the sink's share, the process's call
    /// slots or the memory budget were taken), whatever the failure policy: the hook did not
    /// run, and the sender should retry later.
    #[error(
        "the sink's hook could not start within {} ms: its hook slots are busy; retry later",
        .0.as_millis()
    )]
    Busy(Duration),
}

impl HookRefusal {
    /// A low-cardinality name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HookRefusal::Rejected(_) => "rejected",
            HookRefusal::Failed(_) => "failed",
            HookRefusal::NotLoaded(_) => "not_loaded",
            HookRefusal::Busy(_) => "busy",
        }
    }
}

/// One phase as it ran, for `jobsink hook run`.
#[derive(Clone, Debug)]
pub(crate) struct PhaseRun {
    pub phase: Phase,
    /// `pass`, `modify`, `reject` or `error`.
    pub decision: &'static str,
    pub report: CallReport,
    /// Wall time including the wait for a permit and the hop to a blocking thread.
    pub elapsed: Duration,
}

/// Runs the sink's hook over one event: `on-event`, then `build_job` on the resulting
/// event, then `on-job`. `hook` is the loaded component, or why the sink's hook is not
/// loaded. Most callers want [`HookRegistry::run`](super::HookRegistry::run), which finds
/// both for a sink and records the outcome.
///
/// `build_job` is called only when the event goes on; on a refusal nothing is built.
pub async fn run_hooks(
    engine: &HookEngine,
    hook: Result<&Arc<LoadedHook>, &str>,
    settings: &HookSettings,
    sink: &SinkId,
    event: CloudEvent,
    build_job: impl FnOnce(&CloudEvent) -> Job,
) -> Result<HookOutput, HookRefusal> {
    run_traced(engine, hook, settings, sink, event, build_job)
        .await
        .0
}

/// [`run_hooks`], also returning how each phase ran.
pub(crate) async fn run_traced(
    engine: &HookEngine,
    hook: Result<&Arc<LoadedHook>, &str>,
    settings: &HookSettings,
    sink: &SinkId,
    event: CloudEvent,
    build_job: impl FnOnce(&CloudEvent) -> Job,
) -> (Result<HookOutput, HookRefusal>, Vec<PhaseRun>) {
    let mut runs = Vec::new();
    let mut policy = Policy {
        settings,
        sink,
        notes: Vec::new(),
    };
    let hook = match hook {
        Ok(hook) => hook,
        Err(why) => {
            return match policy.settle::<()>(Phase::Load, Err(HookError::NotLoaded)) {
                Err(HookRefusal::Failed(HookError::NotLoaded)) => {
                    (Err(HookRefusal::NotLoaded(why.to_owned())), runs)
                }
                Err(refusal) => (Err(refusal), runs),
                Ok(_) => {
                    let job = build_job(&event);
                    let notes = policy.notes;
                    (Ok(HookOutput { event, job, notes }), runs)
                }
            };
        }
    };

    // One reservation for both phases: an event that started is not refused halfway.
    let reservation = match engine.reserve(hook, sink).await {
        Ok(reservation) => Arc::new(reservation),
        Err(waited) => return (Err(HookRefusal::Busy(waited)), runs),
    };
    let mut event = event;
    if hook.phases().event {
        let start = std::time::Instant::now();
        let (result, report) = engine
            .call_event(hook, settings, sink, &reservation, event_to_wit(&event))
            .await;
        let verdict = result.and_then(|decision| match decision {
            wit::EventDecision::Pass => Ok(Verdict::Keep),
            wit::EventDecision::Modify(modified) => {
                event_from_wit(&event, modified).map(Verdict::Replace)
            }
            wit::EventDecision::Reject(rejection) => {
                Ok(Verdict::Reject(Rejection::from_wit(rejection)))
            }
        });
        runs.push(PhaseRun::new(
            Phase::Event,
            &verdict,
            report,
            start.elapsed(),
        ));
        match policy.settle(Phase::Event, verdict) {
            Ok(Some(modified)) => event = modified,
            Ok(None) => {}
            Err(refusal) => return (Err(refusal), runs),
        }
    }

    let mut job = build_job(&event);
    if hook.phases().job {
        let start = std::time::Instant::now();
        let verdict = match job_to_json(&job) {
            Ok(json) => {
                let (result, report) = engine
                    .call_job(
                        hook,
                        settings,
                        sink,
                        &reservation,
                        event_to_wit(&event),
                        json,
                    )
                    .await;
                let verdict = result.and_then(|decision| match decision {
                    wit::JobDecision::Pass => Ok(Verdict::Keep),
                    wit::JobDecision::Modify(json) => {
                        job_from_json(&job, &json).map(Verdict::Replace)
                    }
                    wit::JobDecision::Reject(rejection) => {
                        Ok(Verdict::Reject(Rejection::from_wit(rejection)))
                    }
                });
                runs.push(PhaseRun::new(Phase::Job, &verdict, report, start.elapsed()));
                verdict
            }
            Err(error) => Err(error),
        };
        match policy.settle(Phase::Job, verdict) {
            Ok(Some(modified)) => job = modified,
            Ok(None) => {}
            Err(refusal) => return (Err(refusal), runs),
        }
    }
    let notes = policy.notes;
    (Ok(HookOutput { event, job, notes }), runs)
}

/// A phase's decision, after the host's checks on modified output.
enum Verdict<T> {
    Keep,
    Replace(T),
    Reject(Rejection),
}

impl PhaseRun {
    fn new<T>(
        phase: Phase,
        verdict: &Result<Verdict<T>, HookError>,
        report: CallReport,
        elapsed: Duration,
    ) -> Self {
        let decision = match verdict {
            Ok(Verdict::Keep) => "pass",
            Ok(Verdict::Replace(_)) => "modify",
            Ok(Verdict::Reject(_)) => "reject",
            Err(_) => "error",
        };
        PhaseRun {
            phase,
            decision,
            report,
            elapsed,
        }
    }
}

/// Applies mode and failure policy to verdicts, collecting notes.
struct Policy<'a> {
    settings: &'a HookSettings,
    sink: &'a SinkId,
    notes: Vec<HookNote>,
}

impl Policy<'_> {
    /// `Ok(Some(new))` to go on with a replacement, `Ok(None)` to go on with the input,
    /// `Err` to refuse the event.
    fn settle<T>(
        &mut self,
        phase: Phase,
        verdict: Result<Verdict<T>, HookError>,
    ) -> Result<Option<T>, HookRefusal> {
        let monitor = self.settings.mode == HookMode::Monitor;
        let note = match verdict {
            Ok(Verdict::Keep) => return Ok(None),
            Ok(Verdict::Replace(value)) if !monitor => return Ok(Some(value)),
            Ok(Verdict::Reject(rejection)) if !monitor => {
                tracing::info!(
                    namespace = %self.sink.namespace,
                    sink = %self.sink.name,
                    phase = phase.as_str(),
                    code = rejection.code,
                    reason = %rejection.reason,
                    "hook rejected the event"
                );
                return Err(HookRefusal::Rejected(rejection));
            }
            Ok(Verdict::Replace(_)) => HookNote::WouldModify { phase },
            Ok(Verdict::Reject(rejection)) => HookNote::WouldReject { phase, rejection },
            Err(error) => match (self.settings.failure_policy, monitor) {
                (FailurePolicy::Ignore, _) => HookNote::FailureIgnored { phase, error },
                (FailurePolicy::Fail, true) => HookNote::WouldFail { phase, error },
                (FailurePolicy::Fail, false) => {
                    tracing::warn!(
                        namespace = %self.sink.namespace,
                        sink = %self.sink.name,
                        phase = phase.as_str(),
                        kind = error.kind(),
                        %error,
                        "hook failed; refusing the event"
                    );
                    return Err(HookRefusal::Failed(error));
                }
            },
        };
        tracing::warn!(
            namespace = %self.sink.namespace,
            sink = %self.sink.name,
            reason = note.reason(),
            message = %note.message(),
            "hook note"
        );
        self.notes.push(note);
        Ok(None)
    }
}
