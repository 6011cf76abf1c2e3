//! Compiled code kept on disk, so that a restart (or a second process on the same disk) does
//! not compile a component again.
//!
//! One file per component and engine: `<sha256 of the component>-<engine key>.cwasm`. The
//! engine key is a sha256 of the Wasmtime version and of the engine's precompile
//! compatibility hash (`Engine::precompile_compatibility_hash`: every setting that changes
//! the machine code), so that code made by another Wasmtime or other settings is never even
//! looked at. A file holds the sha256 of the code, then the code as Wasmtime serialized it.
//!
//! Loading machine code is `unsafe` (it is mapped executable), so the cache trusts nothing it
//! did not write: the directory must be this user's and closed to everyone else (mode 0700,
//! created so when missing; a directory open to others, or a symlink, disables the cache), a
//! file's code must match the sha256 in front of it (a torn or changed file is deleted and the
//! component compiled again), and Wasmtime itself checks the version and settings a file
//! was made with. The code is read into memory once and that very buffer is checked and
//! deserialized, so it cannot change between the check and the load.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Largest cached file read back (the compiling process's own bound on compiled code).
const MAX_CACHED_BYTES: u64 = 256 << 20;

/// File name suffix of cached code.
const SUFFIX: &str = ".cwasm";

/// What one look-up of the cache found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Code for this component and engine, checked and loaded.
    Hit,
    /// No file for it.
    Miss,
    /// A file that failed a check (its sha256, or Wasmtime's own): deleted.
    Rejected,
}

impl Lookup {
    /// The `result` label of `jobsink_hook_code_cache_total`.
    pub fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Rejected => "rejected",
        }
    }
}

/// Compiled code on disk, for one engine.
#[derive(Debug)]
pub(crate) struct CodeCache {
    dir: PathBuf,
    /// Hex sha256 of the Wasmtime version and the engine's compatibility hash.
    engine_key: String,
    /// Largest total size of the cached files; past it, new code is not written.
    max_bytes: u64,
}

/// Feeds what a `Hash` implementation writes into a sha256, so that the engine's
/// compatibility hash becomes a stable key (std's own hasher is not stable across builds).
struct ShaHasher(Sha256);

impl std::hash::Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// The engine key of `engine`: what decides whether code compiled for one engine loads in
/// another.
pub(crate) fn engine_key(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut hasher = ShaHasher(Sha256::new());
    hasher.0.update(b"wasmtime ");
    hasher.0.update(wasmtime_version().as_bytes());
    hasher.0.update(b"\0");
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..16])
}

/// The Wasmtime version this program is built with (pinned exactly in Cargo.toml).
fn wasmtime_version() -> &'static str {
    "48.0.8"
}

impl CodeCache {
    /// The cache in `dir`, created (mode 0700) when missing. Refuses a directory that is a
    /// symlink, is not this user's, or is open to group or others: code loaded from there
    /// could have been written by someone else.
    pub(crate) fn open(dir: &Path, engine: &Engine, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let meta = std::fs::symlink_metadata(dir)?;
        let refuse = |why: &str| {
            Err(std::io::Error::other(format!(
                "{} {why}: compiled code is only loaded from a directory only this user can write",
                dir.display()
            )))
        };
        if !meta.is_dir() {
            return refuse("is not a directory (a symlink?)");
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return refuse("belongs to another user");
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return refuse("is open to group or others (want mode 0700)");
        }
        Ok(CodeCache {
            dir: dir.to_owned(),
            engine_key: engine_key(engine),
            max_bytes,
        })
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}{SUFFIX}", self.engine_key))
    }

    /// The compiled code of the component with `sha256`, if a checked copy is here.
    pub(crate) fn get(&self, engine: &Engine, sha256: &str) -> (Lookup, Option<Component>) {
        let path = self.path(sha256);
        let bytes = match read_bounded(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return (Lookup::Miss, None),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cached hook code unreadable; compiling again");
                let _ = std::fs::remove_file(&path);
                return (Lookup::Rejected, None);
            }
        };
        match checked_code(&bytes) {
            Some(code) => match deserialize(engine, code) {
                Ok(component) => (Lookup::Hit, Some(component)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cached hook code refused by Wasmtime; compiling again");
                    let _ = std::fs::remove_file(&path);
                    (Lookup::Rejected, None)
                }
            },
            None => {
                tracing::warn!(path = %path.display(), "cached hook code does not match its sha256; compiling again");
                let _ = std::fs::remove_file(&path);
                (Lookup::Rejected, None)
            }
        }
    }

    /// Stores `code` (what Wasmtime serialized) for the component with `sha256`: written to a
    /// temporary file (mode 0600) and renamed, so that a reader never sees half a file. Not
    /// written when the cache would pass its size bound. Failures are logged, not returned:
    /// the cache only saves work.
    pub(crate) fn put(&self, sha256: &str, code: &[u8]) {
        let used = super::disk::used_bytes(&self.dir);
        let size = code.len() as u64 + 32;
        if used.saturating_add(size) > self.max_bytes {
            tracing::info!(
                used_mib = used >> 20,
                max_mib = self.max_bytes >> 20,
                "hook code cache full; this component's code is not kept on disk"
            );
            return;
        }
        let digest = Sha256::digest(code);
        let written = super::disk::write_whole(&self.dir, &self.path(sha256), &[&digest, code]);
        if let Err(error) = written {
            tracing::warn!(dir = %self.dir.display(), %error, "could not keep a hook's compiled code on disk");
        }
    }
}

/// Reads a cache file whole, or `None` when there is none; refuses files over
/// [`MAX_CACHED_BYTES`] and anything but a regular file.
fn read_bounded(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    // Only this user can write the directory (checked at open), so nobody else can have put
    // a symlink here either.
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_CACHED_BYTES {
        return Err(std::io::Error::other(
            "not a regular file of a plausible size",
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CACHED_BYTES).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// The code of a cache file whose sha256 (its first 32 bytes) matches the rest.
fn checked_code(file: &[u8]) -> Option<&[u8]> {
    let (digest, code) = file.split_at_checked(32)?;
    (Sha256::digest(code).as_slice() == digest).then_some(code)
}

/// Loads machine code this program serialized.
///
/// `Component::deserialize` is unsafe because it maps the bytes as executable code: they
/// must be what Wasmtime serialized, unchanged. They are: a process of this program wrote
/// them into a directory only this user can write, behind their sha256, which was checked on
/// this very buffer; Wasmtime then checks the version and settings they were made with.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see above.
    unsafe { Component::deserialize(engine, code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(component (core module (func (export "f"))))"#;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("jobsink-code-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn code_is_found_again_and_a_changed_file_is_refused_and_deleted() {
        let engine = Engine::default();
        let dir = dir("roundtrip");
        let cache = CodeCache::open(&dir, &engine, 64 << 20).expect("cache");
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let wasm = wat::parse_str(WAT).unwrap();
        let sha = hex::encode(Sha256::digest(&wasm));
        assert_eq!(cache.get(&engine, &sha).0, Lookup::Miss);
        let code = engine.precompile_component(&wasm).unwrap();
        cache.put(&sha, &code);
        assert_eq!(cache.get(&engine, &sha).0, Lookup::Hit);

        // One flipped bit in the code: refused before Wasmtime sees it, and deleted.
        let path = cache.path(&sha);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(cache.get(&engine, &sha).0, Lookup::Rejected);
        assert!(!path.exists());
        assert_eq!(cache.get(&engine, &sha).0, Lookup::Miss);

        // Bytes behind a matching sha256 that are not code: Wasmtime refuses them.
        let junk = b"not machine code".to_vec();
        cache.put(&sha, &junk);
        assert_eq!(cache.get(&engine, &sha).0, Lookup::Rejected);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_open_to_others_is_refused() {
        let engine = Engine::default();
        let dir = dir("open");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = CodeCache::open(&dir, &engine, 1 << 20).unwrap_err();
        assert!(error.to_string().contains("mode 0700"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn engines_with_other_settings_have_other_keys() {
        let a = Engine::default();
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let b = Engine::new(&config).unwrap();
        assert_eq!(engine_key(&a), engine_key(&Engine::default()));
        assert_ne!(engine_key(&a), engine_key(&b));
    }

    #[test]
    fn the_version_in_the_engine_key_is_the_pinned_wasmtime() {
        let manifest = include_str!("../../Cargo.toml");
        let pin = format!("wasmtime = {{ version = \"={}\"", wasmtime_version());
        assert!(manifest.contains(&pin), "Cargo.toml does not pin {pin}");
    }

    #[test]
    fn a_full_cache_writes_nothing_more() {
        let engine = Engine::default();
        let dir = dir("full");
        let cache = CodeCache::open(&dir, &engine, 100).expect("cache");
        cache.put(&"a".repeat(64), &[0; 200]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
