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

/// The path of the test hook `<name>.wasm` (a crate name with `_` for `-`), built first if
/// this process has not built the plugins yet. Panics, saying how to fix it, when the build
/// fails.
pub fn plugin_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        build(
            "build.sh",
            ".build-lock",
            "the test hooks",
            "it needs the wasm32-wasip2 target (`rustup target add wasm32-wasip2`)",
        )
    });
    if let Err(error) = built {
        panic!("{error}");
    }
    let path = workspace()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} does not exist after plugins/build.sh: is `{name}` a crate of plugins/?",
        path.display()
    );
    path
}

/// The path of the JavaScript or Python example `<name>.wasm` (`js_reject_by_source`,
/// `python_reject_by_source`), built first by `plugins/build-polyglot.sh` (pinned toolchains,
/// cached outside the clone) if this process has not built them yet. Panics, saying what is
/// missing, when the build fails: these tests are never skipped.
pub fn polyglot_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        build(
            "build-polyglot.sh",
            ".polyglot-build-lock",
            "the JavaScript and Python hooks",
            "it needs node, npm and python3 with venv (and the package registries the first time)",
        )
    });
    if let Err(error) = built {
        panic!("{error}");
    }
    let path = workspace()
        .join("target/polyglot")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} was not built by plugins/build-polyglot.sh",
        path.display()
    );
    path
}

/// Runs `plugins/<script>` under an exclusive lock on `plugins/target/<lock>`; on failure,
/// says what it builds (`what`), what it needs (`needs`) and what it printed.
fn build(script: &str, lock: &str, what: &str, needs: &str) -> Result<(), String> {
    let target = workspace().join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let lock_path = target.join(lock);
    let lock = File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let output = Command::new(workspace().join(script))
        .output()
        .map_err(|e| format!("running plugins/{script}: {e}"))?;
    drop(lock);
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "building {what} with plugins/{script} failed ({}); {needs}. Its output:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    ))
}
