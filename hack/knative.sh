#!/usr/bin/env bash
# Knative Eventing in the local cluster, built here, for the opt-in Knative tests
# (hack/test-knative.sh). Nothing in the quick path (hack/test.sh) needs it.
#
#   hack/knative.sh build     the components' binaries, from the knative.dev/eventing Go module
#                             (hack/tools/knative), cached by version under
#                             $(hack/cache-dir.sh --knative)/bin; prints that directory
#   hack/knative.sh images    build, then one FROM-scratch image per component
#                             (localhost/knative/<component>:<version>) loaded into the node
#   hack/knative.sh install   images, then the release manifests from the module's config/
#                             (core, in-memory channel, multi-tenant channel-based broker) with
#                             every ko:// image reference pointed at those images; waits until
#                             every Deployment is available
#
# Knative's own JobSink comes with core, as in a real install: deploy/knative/ is what turns
# it over to jobsink. Needs a running cluster (hack/up.sh) for images and install, with the
# same JOBSINK_CLUSTER_INDEX.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
SCRIPT_TAG=knative
# shellcheck source=lib.sh
. "$here/lib.sh"

version=$KNATIVE_EVENTING_VERSION
cache=$("$here/cache-dir.sh" --knative)
module=$here/tools/knative
# Every component the release manifests run (the others are only referenced in environment
# variables of features the tests do not use): name=package. The name is the binary's, the
# image's and the last segment of the package, as ko names them.
components=(
  controller=knative.dev/eventing/cmd/controller
  webhook=knative.dev/eventing/cmd/webhook
  jobsink=knative.dev/eventing/cmd/jobsink
  requestreply=knative.dev/eventing/cmd/requestreply
  mtping=knative.dev/eventing/cmd/mtping
  mtchannel_broker=knative.dev/eventing/cmd/mtchannel_broker
  ingress=knative.dev/eventing/cmd/broker/ingress
  filter=knative.dev/eventing/cmd/broker/filter
  channel_controller=knative.dev/eventing/cmd/in_memory/channel_controller
  channel_dispatcher=knative.dev/eventing/cmd/in_memory/channel_dispatcher
)

image_of() { echo "localhost/knative/$1:$version"; }

# Static binaries (the images have no C library), built together so that compiling the
# shared dependencies happens once; only the missing ones are built.
build() {
  local bin=$cache/bin missing=() pair
  for pair in "${components[@]}"; do
    [ -x "$bin/${pair%%=*}" ] || missing+=("${pair#*=}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    mkdir -p "$bin" "$cache/tmp"
    local start log=$cache/build.log
    start=$(date +%s)
    {
      echo "building ${missing[*]##*/} from knative.dev/eventing@$version"
      (cd "$module" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$cache/tmp/" "${missing[@]}")
      mv "$cache"/tmp/* "$bin/"
      echo "built ${missing[*]##*/} in $(($(date +%s) - start)) s"
    } >>"$log" 2>&1 || { tail -n 60 "$log" >&2; exit 1; }
    tail -n 1 "$log" >&2
  fi
  echo "$bin"
}

images() {
  build >/dev/null
  "$here/images.sh" knative
}

# render <config subdirectory> <output dir>: the module's manifests with every
# ko://knative.dev/eventing/cmd/<path> image reference replaced by the local image.
render() {
  local from=$eventing/$1 to=$2 file
  mkdir -p "$to"
  # Only the manifests (the directories also hold Go placeholders and stray editor files).
  find "$from" -name '*.yaml' | sort | while read -r file; do
    sed -E "s#ko://knative\.dev/eventing/cmd/([a-z_]+/)*([a-z_]+)#localhost/knative/\2:$version#" \
      "$file" >"$to/$(echo "${file#"$from"/}" | tr / _)"
  done
  if grep -rq 'ko://' "$to"; then
    fail "an image reference was not rewritten: $(grep -rh 'ko://' "$to" | head -n 1)"
  fi
}

install() {
  images
  local out=$JOBSINK_CLUSTER_DIR/knative t0
  t0=$(date +%s)
  eventing=$(cd "$module" && go mod download knative.dev/eventing && go list -m -f '{{.Dir}}' knative.dev/eventing)
  rm -rf "$out"
  render config/core "$out/core"
  # In the git repository config/core/configmaps/ links these two in; module zips leave
  # links out. The controller reads image names from them (for features not used here).
  render third_party/eventing-integrations-latest "$out/core"
  render config/channels/in-memory-channel "$out/in-memory-channel"
  render config/brokers/mt-channel-broker "$out/mt-channel-broker"
  # As a release is installed: core first, and the channel and broker only once its webhook
  # answers (it validates their ConfigMaps).
  kc apply -f "$out/core" >/dev/null
  kc wait --for=condition=Established crd --all --timeout=120s >/dev/null
  kc -n knative-eventing rollout status deployment/eventing-webhook --timeout=300s >/dev/null
  apply_until_admitted "$out/in-memory-channel"
  apply_until_admitted "$out/mt-channel-broker"
  kc wait --for=condition=Established crd --all --timeout=120s >/dev/null
  kc -n knative-eventing wait --for=condition=Available deployment --all --timeout=300s >/dev/null
  say "Knative Eventing $version installed in $(($(date +%s) - t0)) s (manifests in $out)"
}

# The webhook takes a few seconds after it is ready to publish its certificate and rules.
apply_until_admitted() {
  local deadline=$((SECONDS + 120))
  until kc apply -f "$1" >/dev/null 2>"$JOBSINK_CLUSTER_DIR/knative/apply.err"; do
    [ $SECONDS -lt $deadline ] || fail "applying $1: $(cat "$JOBSINK_CLUSTER_DIR/knative/apply.err")"
    sleep 2
  done
}

case "${1:-}" in
build) build ;;
images) images ;;
install) install ;;
*)
  echo "usage: $0 build|images|install" >&2
  exit 2
  ;;
esac
