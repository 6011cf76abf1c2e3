#!/usr/bin/env bash
# Starts the local cluster's one real node against the control plane hack/up.sh started, in
# the cluster's network namespace:
# containerd (with Debian's runc, CNI bridge networking) and the images it runs, the local
# Docker Hub stand-in, kubelet, kube-proxy (iptables mode, so Service IPs work from pods and
# from this machine) and CoreDNS (on the node address, so `*.svc.cluster.local` resolves in
# pods). Waits until the Node is Ready and each piece answers. Called by hack/up.sh.
#
# Settings that matter on these machines: the VM refuses a negative oom_score_adj, so
# containerd must not give pod sandboxes one (restrict_oom_score_adj); cgroup v1 needs
# kubelet's failCgroupV1: false and the cgroupfs driver; there is no registry, so the pause
# image is built here and pinned.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
SCRIPT_TAG=node
# shellcheck source=lib.sh
. "$here/lib.sh"

k8s_bin=$("$here/cache-dir.sh")/bin
node_bin=$("$here/cache-dir.sh" --node)/bin
pki=$JOBSINK_CLUSTER_DIR/pki
runc=$(command -v runc) || fail "runc is missing (Debian package runc)"
[ -x /usr/lib/cni/bridge ] || fail "CNI plugins are missing (Debian package containernetworking-plugins)"
# kubelet refuses a cgroup root that does not exist; cpuset children start with no CPUs.
for hierarchy in /sys/fs/cgroup/*/; do
  [ -f "$hierarchy/cgroup.procs" ] || continue
  mkdir -p "$hierarchy${KUBELET_CGROUP_ROOT#/}"
  if [ -f "$hierarchy/cpuset.cpus" ]; then
    cat "$hierarchy/cpuset.cpus" >"$hierarchy${KUBELET_CGROUP_ROOT#/}/cpuset.cpus"
    cat "$hierarchy/cpuset.mems" >"$hierarchy${KUBELET_CGROUP_ROOT#/}/cpuset.mems"
  fi
done
mkdir -p "$NODE_DIR"/{containerd,cni/net.d,cni/ipam,kubelet,pod-logs}

cat >"$NODE_DIR/containerd/config.toml" <<EOT
version = 3
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "localhost/jobsink/pause:1"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$NODE_DIR/containerd/certs.d"

[plugins.'io.containerd.cri.v1.runtime']
  # The VM refuses negative oom_score_adj values (even for root): without this every pod
  # sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$NODE_DIR/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
EOT

# Every image reference, docker.io or any other registry, is pulled from the local registry:
# pulls never leave this machine, and an image that is not there fails at once (ErrImagePull).
for registry in docker.io _default; do
  mkdir -p "$NODE_DIR/containerd/certs.d/$registry"
  printf 'server = "http://127.0.0.1:%s"\n' "$REGISTRY_PORT" \
    >"$NODE_DIR/containerd/certs.d/$registry/hosts.toml"
done

# Pods on the node bridge, addresses from POD_CIDR (state kept with the cluster, so a new
# cluster starts with every address free). No masquerade: pod traffic stays on this machine.
cat >"$NODE_DIR/cni/net.d/10-jobsink.conflist" <<EOT
{
  "cniVersion": "1.0.0",
  "name": "jobsink",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_DIR/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOT

PATH="$node_bin:$PATH" start containerd "${IN_NETNS[@]}" "$node_bin/containerd" --config "$NODE_DIR/containerd/config.toml"
wait_for containerd 30 "$node_bin/ctr" --address "$CONTAINERD_SOCK" version
start registry "${IN_NETNS[@]}" "$node_bin/registry" -port "$REGISTRY_PORT"
wait_for registry 30 "${IN_NETNS[@]}" curl -fsS "http://127.0.0.1:$REGISTRY_PORT/v2/"
t_images=$(date +%s.%N)
"$here/images.sh" base
t_kubelet=$(date +%s.%N)

cat >"$NODE_DIR/kubelet/config.yaml" <<EOT
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These machines mount cgroup v1 controllers (cgroup2 only at /sys/fs/cgroup/unified).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $KUBELET_CGROUP_ROOT
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$NODE_IP]
# Pods get only the cluster's DNS: nothing outside this machine is looked up.
resolvConf: ""
podLogsDir: $NODE_DIR/pod-logs
failSwapOn: false
# Never evict pods or delete the locally built images for lack of disk: there is no registry
# to pull them again from.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOT
start kubelet "${IN_NETNS[@]}" "$k8s_bin/kubelet" \
  --config "$NODE_DIR/kubelet/config.yaml" \
  --kubeconfig "$JOBSINK_CLUSTER_DIR/kubelet.kubeconfig" \
  --root-dir "$NODE_DIR/kubelet" \
  --cert-dir "$NODE_DIR/kubelet/pki" \
  --hostname-override "$NODE_NAME" \
  --node-ip "$NODE_IP"

cat >"$NODE_DIR/kube-proxy.yaml" <<EOT
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_PATH}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
# Leave the machine's conntrack settings as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOT
start kube-proxy "${IN_NETNS[@]}" "$k8s_bin/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml"

cat >"$NODE_DIR/Corefile" <<EOT
.:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_PATH
        pods insecure
    }
    cache 5
    # No forward: names outside the cluster are not looked up anywhere.
}
EOT
start coredns "${IN_NETNS[@]}" "$node_bin/coredns" -conf "$NODE_DIR/Corefile"

node_ready() {
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_for "kubelet (Node $NODE_NAME Ready)" 120 node_ready
t_ready=$(date +%s.%N)
wait_for kube-proxy 60 "${IN_NETNS[@]}" curl -fsS "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"
wait_for coredns 60 "${IN_NETNS[@]}" curl -fsS "http://127.0.0.1:$COREDNS_READY_PORT/ready"
say "$(awk -v a="$t_images" -v b="$t_kubelet" -v c="$t_ready" 'BEGIN {
  printf "images built and loaded in %.1fs; kubelet started to Node Ready in %.1fs", b-a, c-b }')"
say "node $NODE_NAME Ready at $NODE_IP (pods on $POD_CIDR, DNS $NODE_IP, Services $SERVICE_CIDR; network namespace $CLUSTER_NETNS)"
