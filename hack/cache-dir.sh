#!/usr/bin/env bash
# Prints the versioned cache directory for the control plane binaries (outside the clone).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
echo "${JOBSINK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobsink}/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
