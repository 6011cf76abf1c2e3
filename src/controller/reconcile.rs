//! One reconciliation of one JobSink: observe (dry-run the template, ask the extra condition
//! sources), compute the desired status, and write it only if it differs from the stored one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::DynamicObject;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, CustomResourceExt, Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use crate::crd::{Condition, JobSink, JobSinkSpec, JobSinkStatus, SinkId};

use super::access::{Access, access};
use super::status::desired_status;
use super::writers::WriterBindings;
use super::{ControllerConfig, Error, ExtraCondition, SecuritySources, template};
use crate::conditions::{FALSE, JOB_TEMPLATE_READY, REASON_INVALID_JOB_TEMPLATE};
use crate::k8s::{self, Failure};
use crate::lock::locked;
use crate::metrics::Metrics;

/// How often every sink is reconciled without a change: picks up what no watch reports, e.g.
/// a template that became valid because an admission policy or quota changed.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(5 * 60);
/// First retry delay after a failed reconciliation; doubled per consecutive failure.
pub const ERROR_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay after failures: never longer than the resync period.
pub const ERROR_BACKOFF_MAX: Duration = RESYNC_PERIOD;
/// Delay before reconciling again while the feature flags have not been read: writing a
/// status for the wrong flags would flip addresses twice.
const FLAGS_PENDING_RETRY: Duration = Duration::from_secs(1);
/// Kubernetes Events about a sink may carry at most 1 kB of note.
const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// How many times, and how far apart, a dry run refused right after the sink's namespace got
/// its write binding is tried again: the API server authorizes with a new binding a moment
/// after storing it.
const NEW_BINDING_RETRIES: u32 = 10;
const NEW_BINDING_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Everything a reconciliation needs, shared by all of them.
pub struct Context {
    pub(super) client: Client,
    pub(super) cfg: ControllerConfig,
    pub(super) extra_conditions: Vec<Arc<dyn ExtraCondition>>,
    pub(super) recorder: Recorder,
    pub(super) metrics: Metrics,
    pub(super) security: Option<SecuritySources>,
    /// Consecutive failures per sink, for the retry backoff.
    pub(super) failures: Mutex<HashMap<SinkId, u32>>,
    /// The write binding of each sink namespace.
    pub(super) writers: WriterBindings,
    /// The last conclusive template check of each sink.
    pub(super) templates: Mutex<HashMap<SinkId, CheckedTemplate>>,
}

/// A conclusive template check: the sink (uid and generation) it was made for, when, and its
/// `JobTemplateReady`. Reused until [`RESYNC_PERIOD`] has passed: a reconciliation for a
/// change elsewhere (a hook, a policy, the flags) makes no API call when the status stays.
pub(super) struct CheckedTemplate {
    uid: Option<String>,
    generation: Option<i64>,
    at: Instant,
    condition: Condition,
}

impl Context {
    /// Drops the template checks too old to be reused (and those of deleted sinks with them).
    pub(super) fn forget_old_template_checks(&self) {
        let mut checks = locked(&self.templates);
        checks.retain(|_, c| c.at.elapsed() < RESYNC_PERIOD);
    }

    /// The `JobTemplateReady` of `sink`: the last conclusive check when it is for this very
    /// spec and recent, else a dry run now. `fresh_binding`: the namespace was bound just now,
    /// so a refusal may only mean the API server does not authorize with it yet.
    async fn template_check(&self, sink: &JobSink, fresh_binding: bool) -> template::TemplateCheck {
        let id = SinkId::of(sink);
        let (uid, generation) = (sink.metadata.uid.clone(), sink.metadata.generation);
        {
            let checks = locked(&self.templates);
            if let Some(c) = checks.get(&id)
                && c.uid == uid
                && c.generation == generation
                && c.at.elapsed() < RESYNC_PERIOD
            {
                return template::TemplateCheck {
                    condition: c.condition.clone(),
                    error: None,
                };
            }
        }
        let at = Instant::now();
        let mut check = template::check(&self.client, sink).await;
        let mut retries = if fresh_binding {
            NEW_BINDING_RETRIES
        } else {
            0
        };
        while retries > 0
            && matches!(&check.error, Some(super::Error::DryRunJob(kube::Error::Api(s))) if s.code == 403)
        {
            retries -= 1;
            tokio::time::sleep(NEW_BINDING_RETRY_DELAY).await;
            check = template::check(&self.client, sink).await;
        }
        if check.error.is_none() {
            let checked = CheckedTemplate {
                uid,
                generation,
                at,
                condition: check.condition.clone(),
            };
            locked(&self.templates).insert(id, checked);
        }
        check
    }
}

/// A JobSink as far as reconcile could read it.
struct Observed {
    /// The sink, or why its `spec` does not decode (e.g. `spec.job.spec.completions: "x"`).
    sink: Result<JobSink, serde_json::Error>,
    /// The stored status, if it decodes.
    status: Option<JobSinkStatus>,
}

/// Reconciles one sink; see the module doc.
#[instrument(skip_all, fields(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
pub async fn reconcile(
    obj: Arc<DeserializeGuard<JobSink>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciled();
    let id = SinkId::of(obj.as_ref());
    let Some(access) = observe_access(&ctx, &id, obj.meta()) else {
        debug!("feature flags not read yet");
        return Ok(Action::requeue(FLAGS_PENDING_RETRY));
    };
    let observed = match &obj.0 {
        Ok(sink) => Observed {
            sink: Ok(sink.clone()),
            status: sink.status.clone(),
        },
        Err(invalid) => read_undecodable(&ctx.client, &id, &invalid.error).await?,
    };
    let status = observed.status.as_ref();
    let fresh_binding = match ctx.writers.ensure(&id.namespace).await {
        Ok(fresh) => fresh,
        Err(error) => {
            warn!(%error, "binding the write role in the sink's namespace failed");
            false
        }
    };
    let (conditions, check_error) = match &observed.sink {
        Ok(sink) => {
            let check = ctx.template_check(sink, fresh_binding).await;
            let mut conditions = vec![check.condition];
            let extra = ctx.extra_conditions.iter();
            conditions.extend(extra.filter_map(|source| source.condition(sink)));
            (conditions, check.error)
        }
        Err(error) => (vec![template::undecodable(error)], None),
    };
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let generation = obj.meta().generation;
    let desired = desired_status(access, &id, generation, status, conditions, &now);
    if status != Some(&desired) {
        let api = Api::<JobSink>::namespaced(ctx.client.clone(), &id.namespace);
        match k8s::patch_status(&api, &id.name, status, &desired).await {
            Ok(_) => {}
            // Deleted since the watch saw it: nothing left to do, and no retry.
            Err(error) if k8s::failure(&error) == Failure::NotFound => {
                return Ok(Action::await_change());
            }
            Err(error) => return Err(Error::PatchStatus(error)),
        }
        info!(ready = ready_status(&desired), "status updated");
        if let Some(refused) = newly_invalid_template(status, &desired) {
            publish_invalid_template(&ctx.recorder, &obj, refused).await;
        }
    } else {
        debug!("status unchanged");
    }
    if let Some(error) = check_error {
        return Err(error);
    }
    locked(&ctx.failures).remove(&id);
    Ok(Action::requeue(RESYNC_PERIOD))
}

/// The access part of the status under the flags in force, the TLS Secret and the
/// EventPolicies; `None` while the flags have not been read.
fn observe_access(
    ctx: &Context,
    id: &SinkId,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<Access> {
    let Some(security) = &ctx.security else {
        return Some(Access::plain(&ctx.cfg, id));
    };
    let features = security.features.current()?;
    let labels = meta.labels.clone().unwrap_or_default();
    let applying = security.policies.applying(&id.namespace, &id.name, &labels);
    let (condition, policies) =
        crate::policy::event_policies_status(&features, security.policies.is_loaded(), &applying);
    let tls = security.tls.state();
    Some(access(
        &ctx.cfg,
        id,
        &features,
        Some(&tls),
        condition,
        policies,
    ))
}

/// Retries a failed reconciliation with per-sink exponential backoff, and counts the failure.
pub fn error_policy(
    obj: Arc<DeserializeGuard<JobSink>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconcile_failed(error.metric_label());
    let failures = {
        let mut map = locked(&ctx.failures);
        let count = map.entry(SinkId::of(obj.as_ref())).or_default();
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff_delay(failures);
    warn!(error = %error, source = ?std::error::Error::source(error), namespace = obj.namespace(),
        name = obj.name_any(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Delay before retry number `failures` (1-based): base × 2^(failures-1), capped.
pub fn backoff_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    ERROR_BACKOFF_BASE
        .saturating_mul(1 << exponent)
        .min(ERROR_BACKOFF_MAX)
}

/// Reads a sink whose cached copy did not decode, field by field, so that a broken status (which
/// we overwrite anyway) is told apart from a broken spec (which we report).
async fn read_undecodable(client: &Client, id: &SinkId, error: &str) -> Result<Observed, Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &id.namespace, &JobSink::api_resource());
    let object = api.get(&id.name).await.map_err(Error::ReadSink)?;
    let status = object
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let spec = object.data.get("spec").cloned().unwrap_or_default();
    debug!(%error, "JobSink does not decode");
    let sink = serde_json::from_value::<JobSinkSpec>(spec).map(|spec| {
        let mut sink = JobSink::new(&id.name, spec);
        sink.metadata = object.metadata;
        sink.status.clone_from(&status);
        sink
    });
    Ok(Observed { sink, status })
}

fn ready_status(status: &JobSinkStatus) -> &str {
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::conditions::READY);
    ready.map_or("", |c| c.status.as_str())
}

/// The `JobTemplateReady=False` condition of `desired` if it is new (not in `previous`).
fn newly_invalid_template<'a>(
    previous: Option<&JobSinkStatus>,
    desired: &'a JobSinkStatus,
) -> Option<&'a Condition> {
    let refused = desired
        .conditions
        .iter()
        .find(|c| c.type_ == JOB_TEMPLATE_READY && c.status == FALSE)?;
    let before = previous.and_then(|p| p.conditions.iter().find(|c| c.type_ == JOB_TEMPLATE_READY));
    (before.map(|b| (&b.status, &b.message)) != Some((&refused.status, &refused.message)))
        .then_some(refused)
}

/// Tells `kubectl describe jobsink` and `kubectl events` why the sink is not ready. Failure
/// to publish is logged, not retried: the status already says it.
async fn publish_invalid_template(
    recorder: &Recorder,
    obj: &DeserializeGuard<JobSink>,
    refused: &Condition,
) {
    let meta = obj.meta();
    let reference = ObjectReference {
        api_version: Some(JobSink::api_version(&()).into_owned()),
        kind: Some(JobSink::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: REASON_INVALID_JOB_TEMPLATE.to_owned(),
        note: refused
            .message
            .as_deref()
            .map(|m| truncate(m, EVENT_NOTE_MAX_BYTES)),
        action: "ValidateJobTemplate".to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &reference).await {
        warn!(%error, "publishing the InvalidJobTemplate event failed");
    }
}

fn truncate(text: &str, max_bytes: usize) -> String {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::{condition, ready, with_summary};

    #[test]
    fn the_error_backoff_doubles_from_one_second_up_to_the_resync_period() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(5), Duration::from_secs(16));
        assert_eq!(backoff_delay(50), RESYNC_PERIOD);
        assert_eq!(backoff_delay(0), Duration::from_secs(1));
    }

    fn status_with(template: Condition) -> JobSinkStatus {
        JobSinkStatus {
            conditions: with_summary(&[], vec![template], "t"),
            ..Default::default()
        }
    }

    #[test]
    fn an_event_is_published_only_when_the_template_becomes_invalid_or_its_message_changes() {
        let bad = |m: &str| {
            condition(
                JOB_TEMPLATE_READY,
                FALSE,
                Some(REASON_INVALID_JOB_TEMPLATE),
                Some(m),
            )
        };
        let good = status_with(ready(JOB_TEMPLATE_READY));
        let refused = status_with(bad("a"));
        assert!(newly_invalid_template(None, &refused).is_some());
        assert!(newly_invalid_template(Some(&good), &refused).is_some());
        assert!(newly_invalid_template(Some(&refused), &refused).is_none());
        assert!(newly_invalid_template(Some(&refused), &status_with(bad("b"))).is_some());
        assert!(newly_invalid_template(Some(&refused), &good).is_none());
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
