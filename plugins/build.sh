#!/usr/bin/env bash
# Builds every hook in this workspace for wasm32-wasip2. Tests and CI call this; the
# components land in plugins/target/wasm32-wasip2/release/<crate_name>.wasm.
set -euo pipefail
cd "$(dirname "$0")"
rustup target list --installed | grep -qx wasm32-wasip2 || {
    echo "build.sh: the wasm32-wasip2 target is missing: rustup target add wasm32-wasip2" >&2
    exit 1
}
cargo build --release --target wasm32-wasip2 "$@"
ls -1 target/wasm32-wasip2/release/*.wasm
