//! The JavaScript and Python examples (`plugins/js/reject-by-source`,
//! `plugins/python/reject-by-source`), built from pinned toolchains by
//! `plugins/build-polyglot.sh`, run through `jobsink hook run` as their authors would: an
//! event from an allowed source goes on tagged by the hook, another is refused with the
//! hook's 403 and message, and an empty config is refused at load. No cluster. The build
//! needs node/npm and python3 (and the registries the first time): without them these tests
//! fail, they are never skipped.

use jobsink_testkit as support;

use std::path::Path;
use std::process::{Command, Output};

/// `jobsink hook run` of `wasm` on an event from `source`, with `config`. Compiling a
/// component that embeds a language runtime takes more than the dispatcher's default
/// compile limits (docs/hooks.md, "Hooks in JavaScript and Python"): the test gives it room.
fn hook_run(wasm: &Path, source: &str, config: &str) -> (bool, String) {
    let name = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or("hook");
    let event = std::env::temp_dir().join(format!(
        "jobsink-polyglot-{}-{name}-{}.json",
        std::process::id(),
        source.replace('/', "_")
    ));
    std::fs::write(
        &event,
        format!(
            r#"{{"specversion":"1.0","id":"e-1","source":"{source}","type":"com.example.order.created","datacontenttype":"application/json","data":{{"order":42}}}}"#
        ),
    )
    .expect("writing the event");
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_jobsink"))
        .args(["hook", "run", "--wasm"])
        .arg(wasm)
        .arg("--event")
        .arg(&event)
        .args(["--config", config])
        .args([
            "--compile-memory-mib",
            "1024",
            "--compile-cpu-seconds",
            "600",
        ])
        .args(["--compile-timeout-seconds", "600"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("running jobsink hook run");
    let _ = std::fs::remove_file(&event);
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), text)
}

/// The behaviour every reject-by-source example shares, whatever its language.
fn rejects_by_source(name: &str) {
    let wasm = support::plugins::polyglot_path(name);
    let allowed = "https://trusted.example/\nmy/";

    let (ok, text) = hook_run(&wasm, "my/curl/command", allowed);
    assert!(ok, "an allowed source must be accepted:\n{text}");
    assert!(text.contains("on-event: modify"), "{text}");
    assert!(text.contains("decision: accepted"), "{text}");
    assert!(text.contains(r#""sourcechecked":"true""#), "{text}");

    let (ok, text) = hook_run(&wasm, "evil/x", allowed);
    assert!(!ok, "a source off the list must be refused:\n{text}");
    assert!(text.contains("on-event: reject"), "{text}");
    assert!(
        text.contains(
            "decision: refused, 403 (event rejected by the sink's hook: SourceNotAllowed: \
             events from evil/x are not accepted by this sink)"
        ),
        "{text}"
    );

    let (ok, text) = hook_run(&wasm, "my/curl/command", "");
    assert!(!ok, "an empty config must be refused at load:\n{text}");
    assert!(
        text.contains("list at least one allowed source prefix, one per line"),
        "{text}"
    );
}

#[test]
fn the_javascript_example_rejects_by_source_through_hook_run() {
    rejects_by_source("js_reject_by_source");
}

#[test]
fn the_python_example_rejects_by_source_through_hook_run() {
    rejects_by_source("python_reject_by_source");
}
