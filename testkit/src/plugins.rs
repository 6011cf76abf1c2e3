//! The test hooks of the `plugins/` workspace, built on demand: the first test of a process
//! that asks for one runs `plugins/build.sh`, so `cargo test` works on a fresh clone. A file
//! lock keeps test processes running at the same time from building (and copying) at once.
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
    if let Err(error) = BUILT.get_or_init(build) {
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

/// Runs `plugins/build.sh` under an exclusive lock on `plugins/target/.build-lock`.
fn build() -> Result<(), String> {
    let target = workspace().join("target");
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let lock_path = target.join(".build-lock");
    let lock = File::create(&lock_path)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let output = Command::new(workspace().join("build.sh"))
        .output()
        .map_err(|e| format!("running plugins/build.sh: {e}"))?;
    drop(lock);
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "building the test hooks with plugins/build.sh failed ({}); it needs the \
         wasm32-wasip2 target (`rustup target add wasm32-wasip2`). Its output:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    ))
}
