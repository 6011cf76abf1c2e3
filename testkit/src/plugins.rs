//! The test hooks of the `plugins/` workspace, built on demand: the first test of a process
//! that asks for one runs `plugins/build.sh`, so `cargo test` works on a fresh clone. A file
//! lock keeps test processes running at the same time from building (and copying) at once.
//!
//! The JavaScript and Python examples (`plugins/js`, `plugins/python`) come the same way
//! from `plugins/build-polyglot.sh`.
//!
//! Used by the integration tests (`support::hooks`), the benchmarks and the crate's own unit
//! tests.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory of the `plugins/` workspace.
fn workspace() -> PathBuf {
    Path::new(crate::REPO).join("plugins")
}

/// One build script of `plugins/`: what it builds, where its components land, what it needs
/// when it fails, and whether this process has run it.
struct Script {
    /// `plugins/<file>`.
    file: &'static str,
    /// Its lock, `plugins/target/<lock>`.
    lock: &'static str,
    /// Where its `<name>.wasm` files land, under `plugins/`.
    out: &'static str,
    what: &'static str,
    needs: &'static str,
    /// Its outcome, once this process has run it.
    built: OnceLock<Result<(), String>>,
}

/// `plugins/build.sh`: the test hooks.
static TEST_HOOKS: Script = Script {
    file: "build.sh",
    lock: ".build-lock",
    out: "target/wasm32-wasip2/release",
    what: "the test hooks",
    needs: "it needs the wasm32-wasip2 target (`rustup target add wasm32-wasip2`)",
    built: OnceLock::new(),
};

/// `plugins/build-polyglot.sh`: the JavaScript and Python examples.
static POLYGLOT: Script = Script {
    file: "build-polyglot.sh",
    lock: ".polyglot-build-lock",
    out: "target/polyglot",
    what: "the JavaScript and Python hooks",
    needs: "it needs node, npm and python3 with venv (and the package registries the first time)",
    built: OnceLock::new(),
};

/// `<name>.wasm` built by `script`, which runs once per process (under its file lock, so that
/// test processes running at the same time do not build at once). Panics, saying how to fix
/// it, when the build fails or does not make `<name>`.
fn built(script: &'static Script, name: &str) -> PathBuf {
    if let Err(error) = script.built.get_or_init(|| build(script)) {
        panic!("{error}");
    }
    let path = workspace().join(script.out).join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} does not exist after plugins/{}: is `{name}` one of the components it builds?",
        path.display(),
        script.file
    );
    path
}

/// The path of the test hook `<name>.wasm` (a crate name with `_` for `-`), built first by
/// `plugins/build.sh` if this process has not built the plugins yet.
pub fn plugin_path(name: &str) -> PathBuf {
    built(&TEST_HOOKS, name)
}

/// The path of the JavaScript or Python example `<name>.wasm` (`js_reject_by_source`,
/// `python_reject_by_source`), built first by `plugins/build-polyglot.sh` (pinned toolchains,
/// cached outside the clone) if this process has not built them yet. These tests are never
/// skipped: a failed build fails them.
pub fn polyglot_path(name: &str) -> PathBuf {
    built(&POLYGLOT, name)
}

/// Runs `script` under an exclusive lock on its lock file; on failure, says what it builds,
/// what it needs and what it printed.
fn build(script: &Script) -> Result<(), String> {
    let Script {
        file,
        lock,
        what,
        needs,
        ..
    } = script;
    let target = workspace().join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let lock_path = target.join(lock);
    let lock = File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let output = Command::new(workspace().join(file))
        .output()
        .map_err(|e| format!("running plugins/{file}: {e}"))?;
    drop(lock);
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "building {what} with plugins/{file} failed ({}); {needs}. Its output:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    ))
}
