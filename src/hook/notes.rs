//! What a hook did although its event went on (Monitor mode, ignored failures) is published
//! as a Kubernetes Event on the JobSink, within bounds: a hook that notes every event of a
//! flood must not turn the flood into as many writes to the API server.
//!
//! Per sink and reason, at most [`NOTES_PER_WINDOW`] Events are published in each
//! [`NOTE_WINDOW`]; later notes of that window are only counted, and the first Event of a
//! later window says how many were left out. One task writes the Events, one at a time, so
//! that the recorder folds repeats into a series without losing a count to a race; at most
//! [`MAX_NOTES_QUEUED`] wait for it. A note that finds the queue full (a slow API server) is
//! counted the same way, without using up its window's share. Every note, published or not,
//! is counted in `jobsink_hook_outcomes_total` by the registry. See `docs/hooks.md#notes`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::mpsc;
use tracing::warn;

use crate::crd::SinkId;
use crate::lock::locked;

/// Events published per sink and reason in one [`NOTE_WINDOW`].
pub const NOTES_PER_WINDOW: u32 = 5;

/// The window [`NOTES_PER_WINDOW`] counts in.
pub const NOTE_WINDOW: Duration = Duration::from_secs(60);

/// Notes waiting to be written, for all sinks.
pub const MAX_NOTES_QUEUED: usize = 16;

/// (sink, reason) pairs remembered before windows that ended are forgotten.
const MAX_TRACKED: usize = 4096;

/// The window of one sink and reason.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    published: u32,
    /// Notes not published since the last Event that was.
    left_out: u64,
}

/// Decides which notes are published; pure, so that the bounds are tested without a clock.
#[derive(Debug, Default)]
pub(crate) struct NoteBudget {
    windows: HashMap<(SinkId, &'static str), Window>,
}

impl NoteBudget {
    /// Whether a note of `reason` for `sink` at `now` is published; if it is, how many notes
    /// of the pair were left out before it.
    pub(crate) fn admit(
        &mut self,
        sink: &SinkId,
        reason: &'static str,
        now: Instant,
    ) -> Option<u64> {
        if self.windows.len() >= MAX_TRACKED {
            self.windows
                .retain(|_, w| now.duration_since(w.started) < NOTE_WINDOW);
        }
        let window = self
            .windows
            .entry((sink.clone(), reason))
            .or_insert(Window {
                started: now,
                published: 0,
                left_out: 0,
            });
        if now.duration_since(window.started) >= NOTE_WINDOW {
            window.started = now;
            window.published = 0;
        }
        if window.published >= NOTES_PER_WINDOW {
            window.left_out += 1;
            return None;
        }
        window.published += 1;
        Some(std::mem::take(&mut window.left_out))
    }

    /// A note that could not be queued: it counts as left out, without using up the share of
    /// its window.
    pub(crate) fn not_written(&mut self, sink: &SinkId, reason: &'static str, now: Instant) {
        self.windows
            .entry((sink.clone(), reason))
            .or_insert(Window {
                started: now,
                published: 0,
                left_out: 0,
            })
            .left_out += 1;
    }

    /// Forgets a sink that is gone.
    pub(crate) fn forget(&mut self, sink: &SinkId) {
        self.windows.retain(|(s, _), _| s != sink);
    }
}

/// Publishes hook notes as Kubernetes Events within the bounds above. Cheap to share.
pub(crate) struct Notes {
    budget: Mutex<NoteBudget>,
    queue: mpsc::Sender<(Event, ObjectReference)>,
}

impl Notes {
    /// Starts the writer task; needs a Tokio runtime.
    pub(crate) fn new(recorder: Recorder) -> Self {
        let (queue, mut written) = mpsc::channel::<(Event, ObjectReference)>(MAX_NOTES_QUEUED);
        tokio::spawn(async move {
            while let Some((event, regarding)) = written.recv().await {
                if let Err(error) = recorder.publish(&event, &regarding).await {
                    warn!(%error, "could not publish a Kubernetes Event");
                }
            }
        });
        Notes {
            budget: Mutex::new(NoteBudget::default()),
            queue,
        }
    }

    /// Publishes a Warning Event on `regarding` (the sink `sink`), off the request path,
    /// unless a bound says not to.
    pub(crate) fn publish(
        &self,
        sink: &SinkId,
        regarding: ObjectReference,
        reason: &'static str,
        message: String,
    ) {
        let Ok(slot) = self.queue.try_reserve() else {
            locked(&self.budget).not_written(sink, reason, Instant::now());
            return;
        };
        let Some(left_out) = locked(&self.budget).admit(sink, reason, Instant::now()) else {
            return;
        };
        let note = if left_out == 0 {
            message
        } else {
            format!(
                "{message} ({left_out} earlier notes of this kind were not published; \
                 jobsink_hook_outcomes_total counts them all)"
            )
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: "RunHook".into(),
            secondary: None,
        };
        slot.send((event, regarding));
    }

    /// Forgets a sink that is gone.
    pub(crate) fn forget(&self, sink: &SinkId) {
        locked(&self.budget).forget(sink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_notes_publishes_the_window_s_share_and_counts_the_rest() {
        let mut budget = NoteBudget::default();
        let sink = SinkId::new("ns", "s");
        let start = Instant::now();
        let published = (0..100)
            .filter(|_| budget.admit(&sink, "HookWouldModify", start).is_some())
            .count();
        assert_eq!(published, NOTES_PER_WINDOW as usize);
        // The next window's first Event says how many were left out.
        let later = start + NOTE_WINDOW;
        assert_eq!(budget.admit(&sink, "HookWouldModify", later), Some(95));
        assert_eq!(budget.admit(&sink, "HookWouldModify", later), Some(0));
    }

    #[test]
    fn sinks_and_reasons_have_windows_of_their_own() {
        let mut budget = NoteBudget::default();
        let (a, b) = (SinkId::new("t1", "s"), SinkId::new("t2", "s"));
        let now = Instant::now();
        for _ in 0..50 {
            budget.admit(&a, "HookWouldModify", now);
        }
        assert_eq!(budget.admit(&a, "HookWouldReject", now), Some(0));
        assert_eq!(budget.admit(&b, "HookWouldModify", now), Some(0));
    }

    #[test]
    fn a_note_that_could_not_be_written_is_counted_as_left_out() {
        let mut budget = NoteBudget::default();
        let sink = SinkId::new("ns", "s");
        let now = Instant::now();
        budget.not_written(&sink, "HookFailureIgnored", now);
        assert_eq!(budget.admit(&sink, "HookFailureIgnored", now), Some(1));
        budget.not_written(&sink, "HookFailureIgnored", now);
        // Still within the window's share, and it says one was left out.
        assert_eq!(budget.admit(&sink, "HookFailureIgnored", now), Some(1));
        let rest = (0..10)
            .filter(|_| budget.admit(&sink, "HookFailureIgnored", now).is_some())
            .count();
        assert_eq!(rest, NOTES_PER_WINDOW as usize - 2);
    }

    #[test]
    fn the_pairs_remembered_are_bounded() {
        let mut budget = NoteBudget::default();
        let start = Instant::now();
        for n in 0..MAX_TRACKED {
            budget.admit(
                &SinkId::new("ns", format!("s{n}")),
                "HookWouldModify",
                start,
            );
        }
        let later = start + NOTE_WINDOW;
        budget.admit(&SinkId::new("ns", "new"), "HookWouldModify", later);
        assert_eq!(budget.windows.len(), 1);
    }
}
