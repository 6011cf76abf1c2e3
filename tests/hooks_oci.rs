//! Hooks from an OCI registry (`spec.hook.image`) and compiled code kept on disk, with
//! `jobsink serve` as a process against the local cluster (docs/hooks.md,
//! "Hooks from an OCI registry" and "Compiled code on disk").
//!
//! The registry is the node build's own `registry` binary (the one `hack/node-up.sh` runs for
//! containerd), started on this machine's loopback for each test: the node's instance listens
//! on the node's loopback, inside the cluster's network namespace, where only containerd
//! reaches it, and the receiver under test runs on this machine.

use jobsink_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use jobsink::crd::JobSink;
use sha2::{Digest, Sha256};
use support::process::{Serve, binary, event, free_port, http};
use support::{CONVERGE, TestNamespace, eventually, kubectl};

/// The node build's in-memory OCI registry on 127.0.0.1, killed on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    async fn start() -> Self {
        let out = Command::new("hack/cache-dir.sh")
            .arg("--node")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("hack/cache-dir.sh runs");
        let dir = String::from_utf8(out.stdout).expect("a path");
        let program = Path::new(dir.trim()).join("bin/registry");
        assert!(
            program.exists(),
            "{} is missing: hack/up.sh builds the node's binaries (registry included)",
            program.display()
        );
        let port = free_port();
        let child = Command::new(&program)
            .args(["-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the registry");
        let registry = Registry { child, port };
        let url = format!("http://127.0.0.1:{port}/v2/");
        eventually("the registry to answer", CONVERGE, || {
            let url = url.clone();
            async move {
                let r = http().get(&url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `jobsink hook push FILE REF --insecure`: the pinned reference it prints.
fn push(file: &Path, reference: &str) -> String {
    let out = Command::new(binary())
        .args(["hook", "push"])
        .arg(file)
        .args([reference, "--insecure"])
        .output()
        .expect("jobsink hook push runs");
    assert!(
        out.status.success(),
        "jobsink hook push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A fresh cache directory for one `jobsink serve`.
fn cache_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jobsink-oci-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The seed's logger named `name`, hooked with `hook` (YAML lines under `hook:`).
fn sink(name: &str, hook: &str) -> String {
    include_str!("data/seed/job-sink-logger.yaml")
        .replace("name: job-sink-logger", &format!("name: {name}"))
        .replace("spec:\n  job:", &format!("spec:\n  hook:\n{hook}  job:"))
}

/// reject-by-source from `image`, allowing sources under `my/`, over plain HTTP.
fn image_hook(image: &str) -> String {
    format!(
        "    image: \"{image}\"\n    insecureRegistry: true\n    config: \"my/\"\n    timeoutMs: 1000\n"
    )
}

fn apply(ns: &TestNamespace, yaml: &str) {
    let (ok, _, err) = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply failed: {err}");
}

/// Waits for `sink`'s HookReady to have `status` and `reason`; returns its message.
async fn hook_ready(ns: &TestNamespace, sink: &str, status: &str, reason: Option<&str>) -> String {
    let sinks = ns.api::<JobSink>();
    eventually(
        &format!("HookReady={status} {reason:?} on {sink}"),
        CONVERGE,
        || async {
            let s = sinks.get(sink).await.ok()?;
            let c = s
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "HookReady")?;
            (c.status == status && c.reason.as_deref() == reason)
                .then(|| c.message.unwrap_or_default())
        },
    )
    .await
}

/// The hook of `sink` serves: an event from `my/...` is accepted, one from elsewhere gets the
/// hook's rejection.
async fn rejects_as_the_hook_says(serve: &Serve, ns: &TestNamespace, sink: &str, id: &str) {
    let url = serve.url(&format!("/{}/{sink}", ns.name));
    eventually(&format!("{sink}'s hook to serve"), CONVERGE, || async {
        let r = event(&url, &format!("{id}-ok")).send().await.ok()?;
        (r.status() == 202).then_some(())
    })
    .await;
    let r = http()
        .post(&url)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-source", "other/sender")
        .header("ce-type", "my.demo.event")
        .header("ce-id", format!("{id}-other"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(body.contains("SourceNotAllowed"), "{body}");
}

async fn metrics(serve: &Serve) -> String {
    http()
        .get(serve.metrics_url())
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

fn count(metrics: &str, series: &str) -> u64 {
    support::sample(metrics, series).unwrap_or(0.0) as u64
}

/// Files (not temporary ones) in `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test]
async fn a_pushed_image_pinned_by_digest_serves_and_a_second_sink_shares_its_cached_copy() {
    let registry = Registry::start().await;
    let wasm = support::plugins::plugin_path("reject_by_source");
    let pinned = push(&wasm, &format!("{}/hooks/reject:v1", registry.host()));
    let prefix = format!("{}/hooks/reject@sha256:", registry.host());
    let digest = pinned
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("push printed {pinned:?}, not {prefix}<digest>"));
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()));
    // The same file gives the same reference.
    assert_eq!(
        push(&wasm, &format!("{}/hooks/reject:v2", registry.host())),
        pinned
    );

    let dir = cache_dir("shared");
    let serve = Serve::start(&["--hook-cache-dir", dir.to_str().unwrap()]).await;
    let ns = TestNamespace::new("oci-image").await;
    apply(&ns, &sink("first", &image_hook(&pinned)));
    hook_ready(&ns, "first", "True", None).await;
    rejects_as_the_hook_says(&serve, &ns, "first", "a").await;
    // The component and its manifest, each one file named by its digest. (Every `jobsink
    // serve` on the cluster loads every sink's hook, other tests' too: the evidence is this
    // component's own files, not the process's counters.)
    let images = dir.join("images");
    let component = images.join(format!(
        "sha256-{}",
        hex::encode(Sha256::digest(std::fs::read(&wasm).unwrap()))
    ));
    let manifest = images.join(format!("sha256-{digest}"));
    let (component_id, manifest_id) = (file_id(&component), file_id(&manifest));

    apply(&ns, &sink("second", &image_hook(&pinned)));
    hook_ready(&ns, "second", "True", None).await;
    rejects_as_the_hook_says(&serve, &ns, "second", "b").await;
    // The second sink was served from the cache: a pull would have written the files anew.
    assert_eq!(file_id(&component), component_id);
    assert_eq!(file_id(&manifest), manifest_id);
    let text = metrics(&serve).await;
    assert!(
        count(&text, "jobsink_hook_image_pulls_total{result=\"pulled\"}") >= 1,
        "{text}"
    );
    assert!(
        count(&text, "jobsink_hook_image_pulls_total{result=\"cached\"}") >= 1,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Which file `path` is (device and inode) and when it was last written: a file written
/// anew (a temporary file renamed over it) is another file.
fn file_id(path: &Path) -> (u64, u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.dev(), meta.ino(), meta.modified().unwrap())
}

/// The compiled code of the component `wasm` in the code cache `dir` (one engine key).
fn code_file(dir: &Path, wasm: &Path) -> PathBuf {
    let sha = hex::encode(Sha256::digest(std::fs::read(wasm).unwrap()));
    let found: Vec<PathBuf> = files(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&sha) && name.ends_with(".cwasm")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn an_unknown_digest_a_tag_alone_a_wrong_pin_and_a_too_large_component_are_refused() {
    let registry = Registry::start().await;
    let wasm = support::plugins::plugin_path("reject_by_source");
    let pinned = push(&wasm, &format!("{}/hooks/refusals:v1", registry.host()));
    let large = push_too_large(&registry).await;
    let dir = cache_dir("refusals");
    let serve = Serve::start(&["--hook-cache-dir", dir.to_str().unwrap()]).await;
    let ns = TestNamespace::new("oci-refusals").await;

    let unknown = format!(
        "{}/hooks/refusals@sha256:{}",
        registry.host(),
        "0".repeat(64)
    );
    apply(&ns, &sink("unknown", &image_hook(&unknown)));
    let message = hook_ready(&ns, "unknown", "False", Some("HookPullFailed")).await;
    assert!(message.contains(&unknown), "{message}");
    assert!(message.contains("trying again in"), "{message}");

    let tag = format!("{}/hooks/refusals:v1", registry.host());
    apply(&ns, &sink("tagged", &image_hook(&tag)));
    let message = hook_ready(&ns, "tagged", "False", Some("HookImageNotPinned")).await;
    assert!(
        message.contains(&format!(
            "{}/hooks/refusals@sha256:<digest>",
            registry.host()
        )),
        "{message}"
    );

    let wrong_pin = format!(
        "{}    sha256: \"{}\"\n",
        image_hook(&pinned),
        "a".repeat(64)
    );
    apply(&ns, &sink("pinned", &wrong_pin));
    hook_ready(&ns, "pinned", "False", Some("HookSha256Mismatch")).await;

    apply(&ns, &sink("large", &image_hook(&large)));
    let message = hook_ready(&ns, "large", "False", Some("HookTooLarge")).await;
    let over = format!("{} bytes", jobsink::hook::MAX_COMPONENT_BYTES + 1);
    assert!(message.contains(&over), "{message}");

    // The server refuses a sink naming both sources, or neither.
    let both = format!(
        "    configMapRef: {{name: x, key: hook.wasm}}\n{}",
        image_hook(&pinned)
    );
    let (ok, _, err) = kubectl(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(&sink("both", &both)),
    );
    assert!(
        !ok && err.contains("exactly one of configMapRef and image"),
        "{err}"
    );
    // Refused events for the sinks whose hook did not load (failurePolicy Fail).
    let r = event(&serve.url(&format!("/{}/tagged", ns.name)), "t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pushes, in the Wasm component layout, a "component" one byte over the component size limit (which
/// `jobsink hook push` itself refuses to push), and returns its pinned reference.
async fn push_too_large(registry: &Registry) -> String {
    let access = jobsink::hook::oci::Access {
        insecure: true,
        auth: oci_client::secrets::RegistryAuth::Anonymous,
        timeout: std::time::Duration::from_secs(120),
    };
    let image = format!("{}/hooks/large:v1", registry.host())
        .parse()
        .unwrap();
    let layer = vec![0u8; jobsink::hook::MAX_COMPONENT_BYTES + 1];
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    jobsink::hook::oci::push_artifact(layer, config, &image, &access)
        .await
        .expect("push the large artifact")
}

#[tokio::test]
async fn a_restart_loads_the_compiled_code_from_disk_and_a_corrupted_file_is_compiled_again() {
    let registry = Registry::start().await;
    let wasm = support::plugins::plugin_path("reject_by_source");
    let pinned = push(&wasm, &format!("{}/hooks/restart:v1", registry.host()));
    let dir = cache_dir("restart");
    let mut serve = Serve::start(&["--hook-cache-dir", dir.to_str().unwrap()]).await;
    let ns = TestNamespace::new("code-cache").await;
    apply(&ns, &sink("restarted", &image_hook(&pinned)));
    hook_ready(&ns, "restarted", "True", None).await;
    rejects_as_the_hook_says(&serve, &ns, "restarted", "first").await;
    let code = code_file(&dir.join("code"), &wasm);
    let code_id = file_id(&code);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("code"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let images = dir.join("images");
    let component = images.join(format!(
        "sha256-{}",
        hex::encode(Sha256::digest(std::fs::read(&wasm).unwrap()))
    ));
    let component_id = file_id(&component);

    // A new process: the image from the image cache, the code from the code cache (neither
    // file written again), and a cache hit counted.
    serve.kill();
    serve.restart().await;
    rejects_as_the_hook_says(&serve, &ns, "restarted", "second").await;
    assert_eq!(file_id(&code), code_id, "the code was compiled again");
    assert_eq!(
        file_id(&component),
        component_id,
        "the image was pulled again"
    );
    let text = metrics(&serve).await;
    assert!(
        count(&text, "jobsink_hook_code_cache_total{result=\"hit\"}") >= 1,
        "{text}"
    );
    assert!(
        count(&text, "jobsink_hook_image_pulls_total{result=\"cached\"}") >= 1,
        "{text}"
    );

    // One flipped byte in the middle of the code: refused, deleted, compiled again; the hook
    // serves as before.
    serve.kill();
    let mut bytes = std::fs::read(&code).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&code, &bytes).unwrap();
    let corrupted_id = file_id(&code);
    serve.restart().await;
    rejects_as_the_hook_says(&serve, &ns, "restarted", "third").await;
    let text = metrics(&serve).await;
    assert!(
        count(&text, "jobsink_hook_code_cache_total{result=\"rejected\"}") >= 1,
        "{text}"
    );
    assert_ne!(
        file_id(&code),
        corrupted_id,
        "the corrupted file is still there"
    );
    let again = std::fs::read(&code).expect("the code, written again");
    assert_ne!(again, bytes);
    let _ = std::fs::remove_dir_all(&dir);
}
