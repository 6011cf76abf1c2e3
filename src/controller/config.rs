//! What the controller needs to know about where it runs: the namespace and Service of the
//! receiver, and the cluster's DNS domain, from which every sink's address is built.

use std::time::Duration;

use crate::crd::SinkId;

/// Namespace the receiver runs in when nothing else is said (upstream's default, so that the
/// seed's URL `http://job-sink.knative-eventing.svc.cluster.local/...` is right).
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "knative-eventing";
/// Name of the receiver's Service (`deploy/service.yaml`), the host part of every address.
pub const DEFAULT_SERVICE_NAME: &str = "job-sink";
/// Kubernetes' default cluster domain, used when neither the environment nor resolv.conf
/// says otherwise.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Where the receiver is reachable, as the controller advertises it in `status.address`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Namespace of the receiver's Service (env `SYSTEM_NAMESPACE` in the Deployment).
    pub system_namespace: String,
    /// DNS domain of the cluster, e.g. `cluster.local` (see [`detect_cluster_domain`]).
    pub cluster_domain: String,
    /// Name of the receiver's Service.
    pub service_name: String,
    /// Age past which a Job without its Secret is removed ([`super::orphans`]).
    pub orphan_grace: Duration,
    /// Whether the controller writes the status of EventPolicies: on when jobsink runs alone,
    /// off next to Knative (`--knative-lease`), whose EventPolicy controller writes it.
    pub event_policy_status: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            system_namespace: DEFAULT_SYSTEM_NAMESPACE.to_owned(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            orphan_grace: super::orphans::DEFAULT_ORPHAN_GRACE,
            event_policy_status: true,
        }
    }
}

impl ControllerConfig {
    /// The address of one sink: `http://<service>.<system ns>.svc.<domain>/<ns>/<name>`, no
    /// port and no trailing slash, as upstream advertises it.
    pub fn sink_url(&self, sink: &SinkId) -> String {
        self.url("http", sink)
    }

    /// The HTTPS address of one sink: as [`Self::sink_url`] with scheme `https` (Service port
    /// 443).
    pub fn sink_https_url(&self, sink: &SinkId) -> String {
        self.url("https", sink)
    }

    fn url(&self, scheme: &str, sink: &SinkId) -> String {
        format!(
            "{scheme}://{}.{}.svc.{}/{}/{}",
            self.service_name,
            self.system_namespace,
            self.cluster_domain,
            sink.namespace,
            sink.name
        )
    }
}

/// The cluster's DNS domain: `env_value` (env `CLUSTER_DOMAIN`) when set and not blank, else
/// the first search domain of `resolv_conf` that starts with `svc.` without that prefix
/// (a pod's `search ns.svc.cluster.local svc.cluster.local cluster.local` gives
/// `cluster.local`), else [`DEFAULT_CLUSTER_DOMAIN`].
pub fn detect_cluster_domain(env_value: Option<&str>, resolv_conf: &str) -> String {
    if let Some(domain) = env_value.map(str::trim).filter(|d| !d.is_empty()) {
        return domain.trim_end_matches('.').to_owned();
    }
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("search"))
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .flat_map(str::split_whitespace)
        .find_map(|domain| domain.strip_prefix("svc."))
        .map(|domain| domain.trim_end_matches('.'))
        .filter(|domain| !domain.is_empty())
        .unwrap_or(DEFAULT_CLUSTER_DOMAIN)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD_RESOLV_CONF: &str = "search default.svc.cluster.local svc.cluster.local cluster.local\n\
                                   nameserver 10.96.0.10\noptions ndots:5\n";

    #[test]
    fn the_seed_url_is_built_with_the_default_configuration() {
        let url = ControllerConfig::default().sink_url(&SinkId::new("default", "job-sink-logger"));
        assert_eq!(
            url,
            "http://job-sink.knative-eventing.svc.cluster.local/default/job-sink-logger"
        );
    }

    #[test]
    fn the_url_uses_the_configured_namespace_service_and_domain() {
        let cfg = ControllerConfig {
            system_namespace: "sys".into(),
            cluster_domain: "example.org".into(),
            service_name: "sink".into(),
            ..Default::default()
        };
        assert_eq!(
            cfg.sink_url(&SinkId::new("ns", "n")),
            "http://sink.sys.svc.example.org/ns/n"
        );
    }

    #[test]
    fn the_environment_wins_over_resolv_conf() {
        assert_eq!(
            detect_cluster_domain(Some("corp.internal"), POD_RESOLV_CONF),
            "corp.internal"
        );
    }

    #[test]
    fn a_blank_environment_value_is_ignored() {
        assert_eq!(
            detect_cluster_domain(Some("  "), POD_RESOLV_CONF),
            "cluster.local"
        );
    }

    #[test]
    fn the_first_svc_search_domain_gives_the_cluster_domain() {
        let conf = "nameserver 10.0.0.10\nsearch team.svc.my.zone svc.my.zone my.zone svc.other\n";
        assert_eq!(detect_cluster_domain(None, conf), "my.zone");
    }

    #[test]
    fn a_pod_resolv_conf_gives_cluster_local() {
        assert_eq!(
            detect_cluster_domain(None, POD_RESOLV_CONF),
            "cluster.local"
        );
    }

    #[test]
    fn without_a_svc_search_domain_the_default_is_used() {
        assert_eq!(
            detect_cluster_domain(None, "search example.com\nnameserver 1.1.1.1\n"),
            "cluster.local"
        );
        assert_eq!(detect_cluster_domain(None, ""), "cluster.local");
        assert_eq!(
            detect_cluster_domain(None, "searchsvc.x svc.y\n"),
            "cluster.local"
        );
    }

    #[test]
    fn a_trailing_dot_is_dropped() {
        assert_eq!(
            detect_cluster_domain(None, "search svc.cluster.local.\n"),
            "cluster.local"
        );
    }
}
