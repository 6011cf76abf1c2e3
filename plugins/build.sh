#!/usr/bin/env bash
# Builds every hook in this workspace for wasm32-wasip2. Tests and CI call this; the
# components land in plugins/target/wasm32-wasip2/release/<crate_name>.wasm.
# PLUGINS_TARGET_DIR (optional) puts the cargo build directory elsewhere, e.g. a cache outside
# the clone; the .wasm files are then copied to the path above.
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx wasm32-wasip2 || {
    echo "build.sh: the wasm32-wasip2 target is missing: rustup target add wasm32-wasip2" >&2
    exit 1
}
target=${PLUGINS_TARGET_DIR:-$PWD/target}
CARGO_TARGET_DIR=$target cargo build --release --target wasm32-wasip2 "$@"
out=target/wasm32-wasip2/release
if [ "$target" != "$PWD/target" ]; then
    mkdir -p "$out"
    cp "$target"/wasm32-wasip2/release/*.wasm "$out/"
fi
ls -1 "$out"/*.wasm
