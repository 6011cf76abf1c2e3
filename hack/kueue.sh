#!/usr/bin/env bash
# Kueue in the local cluster, built here, for the Kueue tests (hack/test-kueue.sh) and the
# burst benchmark (benches/burst.rs). Nothing in the quick path (hack/test.sh) needs it.
#
#   hack/kueue.sh build      Kueue's manager, from the sigs.k8s.io/kueue Go module
#                            (hack/tools/kueue), cached by version under
#                            $(hack/cache-dir.sh --kueue)/bin; prints that directory
#   hack/kueue.sh images     build, then the image localhost/kueue/kueue:<version> (FROM
#                            scratch) imported into the node and pushed to its registry
#   hack/kueue.sh install    images, then the module's own manifests (config/default:
#                            CRDs, RBAC, the manager, its webhooks with the certificates it
#                            makes and rotates itself, the visibility API) with only the image
#                            pointed at ours; waits until the webhooks admit objects
#   hack/kueue.sh uninstall  deletes what install applied
#
# Needs a running cluster (hack/up.sh) for images and install, with the same
# JOBSINK_CLUSTER_INDEX.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
SCRIPT_TAG=kueue
# shellcheck source=lib.sh
. "$here/lib.sh"

version=$KUEUE_VERSION
cache=$("$here/cache-dir.sh" --kueue)
module=$here/tools/kueue
image=localhost/kueue/kueue:$version

# One static binary (the image has no C library), with the version Kueue reports.
build() {
  local bin=$cache/bin
  if [ ! -x "$bin/kueue" ]; then
    mkdir -p "$bin"
    local start log=$cache/build.log
    start=$(date +%s)
    {
      echo "building kueue from sigs.k8s.io/kueue@$version"
      (cd "$module" && CGO_ENABLED=0 go build -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$version" \
        -o "$bin/kueue.tmp" sigs.k8s.io/kueue/cmd/kueue)
      mv "$bin/kueue.tmp" "$bin/kueue"
      echo "built kueue in $(($(date +%s) - start)) s"
    } >>"$log" 2>&1 || { tail -n 60 "$log" >&2; exit 1; }
    tail -n 1 "$log" >&2
  fi
  echo "$bin"
}

images() {
  build >/dev/null
  "$here/images.sh" kueue
}

# The module's config/ in the module cache (read-only; kustomize only reads it).
config_dir() {
  (cd "$module" && go mod download sigs.k8s.io/kueue &&
    echo "$(go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)/config")
}

# The manifests as the module's config/default renders them, through an overlay of ours that
# changes nothing but the manager's image (kustomize takes a base by relative path only).
render() {
  local out=$JOBSINK_CLUSTER_DIR/kueue config
  config=$(config_dir)
  rm -rf "$out"
  mkdir -p "$out/overlay"
  cat >"$out/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(realpath --relative-to="$out/overlay" "$config/default")
images:
- name: us-central1-docker.pkg.dev/k8s-staging-images/kueue/kueue
  newName: ${image%:*}
  newTag: $version
EOF
  kubectl kustomize "$out/overlay" >"$out/kueue.yaml"
  grep -q "image: $image\$" "$out/kueue.yaml" || fail "the manager's image was not rewritten"
  echo "$out/kueue.yaml"
}

install() {
  images
  local manifests t0
  t0=$(date +%s)
  manifests=$(render)
  # Server-side: the CRDs are larger than client-side apply's annotation allows.
  kc apply --server-side -f "$manifests" >/dev/null
  kc wait --for=condition=Established crd -l app.kubernetes.io/name=kueue --timeout=120s >/dev/null
  kc -n kueue-system rollout status deployment/kueue-controller-manager --timeout=300s >/dev/null
  # Ready means the manager runs; its webhooks answer once it has written its certificate
  # into the Secret, the kubelet has put it into the pod, and the webhook configurations
  # carry its CA. A dry-run ResourceFlavor goes through the mutating and validating webhooks.
  local deadline=$((SECONDS + 180)) err=$JOBSINK_CLUSTER_DIR/kueue/probe.err
  until kc apply --dry-run=server -f - >/dev/null 2>"$err" <<EOF; do
apiVersion: kueue.x-k8s.io/v1beta2
kind: ResourceFlavor
metadata:
  name: jobsink-probe
EOF
    [ $SECONDS -lt $deadline ] || fail "Kueue's webhooks never answered: $(cat "$err")"
    sleep 2
  done
  say "Kueue $version installed in $(($(date +%s) - t0)) s (manifests in $manifests)"
}

uninstall() {
  local manifests=$JOBSINK_CLUSTER_DIR/kueue/kueue.yaml
  [ -f "$manifests" ] || manifests=$(render)
  kc delete --ignore-not-found --wait=true -f "$manifests" >/dev/null
}

case "${1:-}" in
build) build ;;
images) images ;;
install) install ;;
uninstall) uninstall ;;
*)
  echo "usage: $0 build|images|install|uninstall" >&2
  exit 2
  ;;
esac
