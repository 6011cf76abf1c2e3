#!/usr/bin/env bash
# Builds the JavaScript and Python hooks (plugins/js/*, plugins/python/*) into
# plugins/target/polyglot/<language>_<name>.wasm, with toolchains pinned here and installed
# once into a cache directory outside the clone (keyed by their versions):
#
#   ${JOBSINK_POLYGLOT_CACHE:-$HOME/.cache/jobsink}/polyglot-<versions>/
#
# Needs node and npm (for jco/componentize-js) and python3 with venv (for componentize-py),
# plus network access to npm and PyPI the first time. Tests call this (tests/polyglot.rs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Pinned toolchains: change them here only (the READMEs of the examples name them too).
JCO_VERSION=1.35.0
COMPONENTIZE_JS_VERSION=0.23.0
COMPONENTIZE_PY_VERSION=0.25.1

key="jco-$JCO_VERSION-cjs-$COMPONENTIZE_JS_VERSION-cpy-$COMPONENTIZE_PY_VERSION"
cache=${JOBSINK_POLYGLOT_CACHE:-$HOME/.cache/jobsink}/polyglot-$key
out=$here/target/polyglot
mkdir -p "$cache" "$out"

need() {
    command -v "$1" >/dev/null || {
        echo "build-polyglot.sh: $1 is missing ($2)" >&2
        exit 1
    }
}

# Each toolchain is installed into its directory and marked done with a file afterwards, so
# an interrupted install is never taken for a finished one (the next run starts it again).
install_js() {
    [ -f "$cache/js/.done" ] && return
    need node "install Node.js 20 or later"
    need npm "install npm"
    rm -rf "$cache/js" && mkdir -p "$cache/js"
    (cd "$cache/js" && echo '{"private":true}' >package.json &&
        npm install --no-audit --no-fund --save-exact \
            "@bytecodealliance/jco@$JCO_VERSION" \
            "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >&2)
    touch "$cache/js/.done"
}

install_py() {
    [ -f "$cache/py/.done" ] && return
    need python3 "install Python 3.10 or later with venv"
    rm -rf "$cache/py"
    python3 -m venv "$cache/py"
    "$cache/py/bin/pip" install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
    touch "$cache/py/.done"
}

lock=$cache/.lock
exec 9>"$lock"
flock 9
install_js
install_py
exec 9>&-

# Rebuilds a component only when its source, the WIT or the toolchains changed.
build() { # <output name> <source dir> <command...>
    local name=$1 dir=$2
    shift 2
    local stamp
    stamp=$(find "$dir" -maxdepth 1 -type f \( -name '*.js' -o -name '*.py' \) | sort |
        xargs cat "$here/../wit/hook.wit" "$here/build-polyglot.sh" | sha256sum | cut -d' ' -f1)-$key
    if [ -f "$out/$name.wasm" ] && [ "$(cat "$out/$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    rm -f "$out/$name.wasm" "$out/$name.stamp"
    (cd "$dir" && "$@" -o "$out/$name.wasm" >&2)
    echo "$stamp" >"$out/$name.stamp"
}

# JavaScript: the QuickJS engine, without the component model's async ABI (docs/hooks.md,
# "Hooks in JavaScript and Python").
build js_reject_by_source "$here/js/reject-by-source" \
    "$cache/js/node_modules/.bin/jco" componentize hook.js \
    --wit ../../../wit/hook.wit --world-name event-hook \
    --backend quickjs --backend-qjs-disable-async
# Python: CPython, the app module `app`, every WASI import a trapping stub inside the
# component (docs/hooks.md, "Hooks in JavaScript and Python").
PYTHONDONTWRITEBYTECODE=1 build python_reject_by_source "$here/python/reject-by-source" \
    "$cache/py/bin/componentize-py" -d ../../../wit/hook.wit -w event-hook componentize app --stub-wasi
ls -1 "$out"/*.wasm
