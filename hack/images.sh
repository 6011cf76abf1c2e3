#!/usr/bin/env bash
# Builds the images the local node runs, with podman (no registry, no Docker), and loads them
# into the node's containerd (namespace k8s.io) under their exact names:
#
#   hack/images.sh base      the pause image, and local stand-ins for the seed's images
#                            docker.io/library/bash:5 and docker.io/curlimages/curl:latest
#                            (and docker.io/library/busybox:latest), also pushed to the node's
#                            local registry (127.0.0.1:$REGISTRY_PORT, containerd's only
#                            registry) so that `imagePullPolicy: Always` works
#   hack/images.sh jobsink   the jobsink image (localhost/jobsink:<version>) from the release
#                            binary, with the `Containerfile` at the top of the repository;
#                            JOBSINK_IMAGE_PROFILE=quick-release builds it with that cargo
#                            profile instead (quicker to build, slower to run: Cargo.toml)
#   hack/images.sh knative   one image per Knative Eventing component built by
#                            `hack/knative.sh build` (localhost/knative/<component>:<version>)
#   hack/images.sh kueue     Kueue's manager built by `hack/kueue.sh build`
#                            (localhost/kueue/kueue:<version>), also pushed to the node's
#                            registry: Kueue's manifests pull it with `imagePullPolicy: Always`
#
# Images are FROM scratch: static binaries, or dynamic ones with exactly the libraries they
# link (found with ldd). Needs a running node (hack/up.sh) for the import.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=cluster-env.sh
. "$here/cluster-env.sh"
ctr_bin="$("$here/cache-dir.sh" --node)/bin/ctr"
# ctr in the node's image namespace. It repeats containerd's cgroup v1 deprecation warning on
# every call; that line is dropped, anything else on stderr stays.
ctr() {
  "$ctr_bin" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@" \
    2> >(grep -v "DEPRECATION: The support for cgroup v1" >&2)
}
work=$(mktemp -d /tmp/jobsink-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
# podman's image names are machine-wide: two clusters' builds of the same name must not
# interleave between `podman build` and `podman save`.
exec 9>"${TMPDIR:-/tmp}/jobsink-images.lock"
flock 9

# with_libs <rootfs> <binary>...: copies the binaries' shared libraries (and the loader).
with_libs() {
  local root=$1
  shift
  ldd "$@" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

# with_busybox <rootfs>: busybox and a link for each of its commands in /bin, keeping what
# is already there.
with_busybox() {
  local root=$1
  mkdir -p "$root/bin" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for cmd in $(/bin/busybox --list); do
    [ -e "$root/bin/$cmd" ] || ln -s busybox "$root/bin/$cmd"
  done
}

# build <name> <containerfile> <context dir>: builds, then imports into containerd.
build() {
  local name=$1 file=$2 context=$3
  podman build --quiet --file "$file" --tag "$name" "$context" >/dev/null
  podman save --quiet --format oci-archive --output "$work/image.tar" "$name"
  ctr images import "$work/image.tar" >/dev/null
  echo "$name $(du -k "$work/image.tar" | cut -f1) KiB" >&2
  rm -f "$work/image.tar"
}

# push <name> <repository:tag>: copies an image to the local Docker Hub stand-in.
push() {
  "${IN_NETNS[@]}" podman push --quiet --tls-verify=false "$1" \
    "docker://127.0.0.1:$REGISTRY_PORT/$2"
}

base() {
  local ctx
  ctx=$work/pause
  mkdir -p "$ctx/rootfs"
  gcc -static -Os -s -o "$ctx/rootfs/pause" "$here/images/pause/pause.c"
  build localhost/jobsink/pause:1 "$here/images/pause/Containerfile" "$ctx"

  ctx=$work/bash
  mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/usr/local/bin"
  cp /usr/bin/bash-static "$ctx/rootfs/bin/bash"
  ln -s /bin/bash "$ctx/rootfs/usr/local/bin/bash"
  with_busybox "$ctx/rootfs"
  build docker.io/library/bash:5 "$here/images/bash/Containerfile" "$ctx"
  push docker.io/library/bash:5 library/bash:5

  ctx=$work/busybox
  with_busybox "$ctx/rootfs"
  build docker.io/library/busybox:latest "$here/images/busybox/Containerfile" "$ctx"
  push docker.io/library/busybox:latest library/busybox:latest

  ctx=$work/curl
  mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc"
  cp /usr/bin/curl "$ctx/rootfs/usr/bin/curl"
  with_libs "$ctx/rootfs" /usr/bin/curl
  with_busybox "$ctx/rootfs"
  cp "$here/images/curl/entrypoint.sh" "$ctx/rootfs/entrypoint.sh"
  printf 'root:x:0:0:root:/root:/bin/sh\ncurl_user:x:100:101:curl:/home/curl_user:/bin/sh\n' \
    >"$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\ncurl_group:x:101:\n' >"$ctx/rootfs/etc/group"
  build docker.io/curlimages/curl:latest "$here/images/curl/Containerfile" "$ctx"
  push docker.io/curlimages/curl:latest curlimages/curl:latest
}

jobsink() {
  local version ctx target_dir profile
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)
  profile=$(image_profile)
  # cargo's own progress on stderr (a line when there is nothing to build).
  (cd "$repo" && cargo build --profile "$profile" --locked --bin jobsink)
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  ctx=$work/jobsink
  mkdir -p "$ctx/rootfs/usr/local/bin"
  cp "$target_dir/$profile/jobsink" "$ctx/rootfs/usr/local/bin/jobsink"
  with_libs "$ctx/rootfs" "$target_dir/$profile/jobsink"
  build "localhost/jobsink:$version" "$repo/Containerfile" "$ctx"
}

knative() {
  local bin version ctx name
  bin=$("$here/cache-dir.sh" --knative)/bin
  version=$(. "$here/versions.env" && echo "$KNATIVE_EVENTING_VERSION")
  [ -d "$bin" ] || { echo "no Knative binaries in $bin: run hack/knative.sh build" >&2; exit 1; }
  for binary in "$bin"/*; do
    name=$(basename "$binary")
    # Keyed by version: an image already in the node is the same build.
    if ctr images ls -q | grep -qxF "localhost/knative/$name:$version"; then continue; fi
    ctx=$work/knative-$name
    mkdir -p "$ctx/rootfs/ko-app"
    cp "$binary" "$ctx/rootfs/ko-app/$name"
    sed "s#/ko-app/NAME#/ko-app/$name#" "$here/images/knative/Containerfile" >"$ctx/Containerfile"
    build "localhost/knative/$name:$version" "$ctx/Containerfile" "$ctx"
    # 60 MB each: the node has its copy, podman's would only fill the disk.
    podman rmi --force "localhost/knative/$name:$version" >/dev/null
    rm -rf "$ctx"
  done
}

kueue() {
  local bin version name ctx
  bin=$("$here/cache-dir.sh" --kueue)/bin
  version=$(. "$here/versions.env" && echo "$KUEUE_VERSION")
  name=localhost/kueue/kueue:$version
  [ -x "$bin/kueue" ] || { echo "no Kueue binary in $bin: run hack/kueue.sh build" >&2; exit 1; }
  # Keyed by version: an image already in the node (and its registry) is the same build.
  if ctr images ls -q | grep -qxF "$name" &&
    "${IN_NETNS[@]}" curl -fsS -o /dev/null \
      "http://127.0.0.1:$REGISTRY_PORT/v2/kueue/kueue/manifests/$version"; then
    return
  fi
  ctx=$work/kueue
  mkdir -p "$ctx/rootfs"
  cp "$bin/kueue" "$ctx/rootfs/manager"
  build "$name" "$here/images/kueue/Containerfile" "$ctx"
  push "$name" "kueue/kueue:$version"
  podman rmi --force "$name" >/dev/null
}

case "${1:-}" in
base) base ;;
jobsink) jobsink ;;
knative) knative ;;
kueue) kueue ;;
*)
  echo "usage: $0 base|jobsink|knative|kueue" >&2
  exit 2
  ;;
esac
