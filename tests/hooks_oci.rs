//! Hooks from an OCI registry (`spec.hook.image`) and compiled code kept on disk, with
//! `jobsink serve` as a process against the local cluster (docs/hooks.md,
//! "Hooks from an OCI registry" and "Compiled code on disk"), and the JavaScript and Python
//! examples (`plugins/js`, `plugins/python`, built by `plugins/build-polyglot.sh`) served
//! from the registry to Jobs on the real node.
//!
//! The registry is the node build's own `registry` binary (the one `hack/node-up.sh` runs for
//! containerd), started on this machine's loopback for each test: the node's instance listens
//! on the node's loopback, inside the cluster's network namespace, where only containerd
//! reaches it, and the receiver under test runs on this machine.

use jobsink_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{ListParams, LogParams};
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
    support::hooks::hook_ready(&ns.api(), sink, status, reason, CONVERGE).await
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

/// How long a JavaScript or Python hook may take to become ready: its component embeds a
/// language runtime (about 19 MB for Python), compiled by the dev build of `jobsink` on a
/// machine shared with the rest of the suite.
const POLYGLOT_READY: std::time::Duration = std::time::Duration::from_secs(600);

/// The compile limits a dispatcher serving Python hooks needs (docs/hooks.md, "Hooks in
/// JavaScript and Python"), with room for the dev build.
const POLYGLOT_COMPILE: [&str; 6] = [
    "--hook-compile-memory-mib",
    "1024",
    "--hook-compile-cpu-seconds",
    "600",
    "--hook-compile-timeout-seconds",
    "600",
];

/// What the pod of the Job `job` printed, once the Job is Complete (the seed's logger prints
/// its event file).
async fn printed_by_job(ns: &TestNamespace, job: &str) -> String {
    let jobs = ns.api::<Job>();
    eventually(&format!("Job {job} Complete"), CONVERGE, || async {
        let job = jobs.get(job).await.ok()?;
        (support::job_condition(&job, "Complete")?.0 == "True").then_some(())
    })
    .await;
    let pods = ns.api::<Pod>();
    let listed = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .expect("list the Job's pods");
    assert_eq!(listed.items.len(), 1, "one pod for {job}");
    let pod = listed.items[0].name_any();
    pods.logs(&pod, &LogParams::default())
        .await
        .unwrap_or_else(|e| panic!("logs of pod {pod}: {e}"))
}

#[tokio::test]
async fn javascript_and_python_hooks_pulled_by_digest_change_the_event_file_their_jobs_read() {
    let registry = Registry::start().await;
    let dir = cache_dir("polyglot");
    let mut flags = vec!["--hook-cache-dir", dir.to_str().unwrap()];
    flags.extend(POLYGLOT_COMPILE);
    let serve = Serve::start(&flags).await;
    let ns = TestNamespace::new("oci-polyglot").await;
    let languages = [
        ("javascript", "js_reject_by_source"),
        ("python", "python_reject_by_source"),
    ];
    for (sink_name, component) in languages {
        let wasm = support::plugins::polyglot_path(component);
        let pinned = push(&wasm, &format!("{}/hooks/{sink_name}:v1", registry.host()));
        apply(&ns, &sink(sink_name, &image_hook(&pinned)));
    }
    for (sink_name, _) in languages {
        support::hooks::hook_ready(&ns.api(), sink_name, "True", None, POLYGLOT_READY).await;
        // An event from `my/...` gets 202 and one from elsewhere the hook's 403.
        rejects_as_the_hook_says(&serve, &ns, sink_name, sink_name).await;
        // The accepted event's Job mounts the event as the hook changed it: tagged with the
        // extension `sourcechecked`, its data untouched.
        let job = jobsink::job::job_name(sink_name, "my/curl/command", &format!("{sink_name}-ok"));
        let printed = printed_by_job(&ns, &job).await;
        let event: serde_json::Value = serde_json::from_str(printed.trim())
            .unwrap_or_else(|e| panic!("the {sink_name} Job printed no event ({e}): {printed}"));
        assert_eq!(event["sourcechecked"], "true", "{sink_name}: {printed}");
        assert_eq!(event["source"], "my/curl/command", "{sink_name}: {printed}");
        assert_eq!(
            event["id"],
            format!("{sink_name}-ok"),
            "{sink_name}: {printed}"
        );
        assert_eq!(
            event["data"]["details"], "JobSinkDemo",
            "{sink_name}: {printed}"
        );
        // The event refused by the hook made no Job.
        let refused =
            jobsink::job::job_name(sink_name, "other/sender", &format!("{sink_name}-other"));
        assert!(
            ns.api::<Job>().get_opt(&refused).await.unwrap().is_none(),
            "a Job was made for the event the {sink_name} hook refused"
        );
    }
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A registry that needs a login: a proxy on 127.0.0.1 in front of `upstream` that answers
/// 401 with a Basic challenge unless a request carries `user:password`, as a registry with
/// basic authentication does. It counts the requests it let through.
struct LoginRegistry {
    port: u16,
    let_through: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl LoginRegistry {
    async fn start(upstream: String, user: &str, password: &str) -> Self {
        use axum::body::{Body, to_bytes};
        use axum::extract::Request;
        use axum::response::Response;
        use base64::Engine as _;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let let_through = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = let_through.clone();
        let forward = http();
        let app = axum::Router::new().fallback(move |request: Request| {
            let (expected, counter, forward, upstream) = (
                expected.clone(),
                counter.clone(),
                forward.clone(),
                upstream.clone(),
            );
            async move {
                let given = request.headers().get("authorization").cloned();
                if given.as_ref().and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                    return Response::builder()
                        .status(401)
                        .header("www-authenticate", "Basic realm=\"hooks\"")
                        .body(Body::from("login needed"))
                        .unwrap();
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let path = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let body = to_bytes(body, usize::MAX).await.unwrap();
                let mut sent =
                    forward.request(parts.method.clone(), format!("http://{upstream}{path}"));
                for (name, value) in &parts.headers {
                    if name != "host" && name != "authorization" {
                        sent = sent.header(name.as_str(), value.as_bytes());
                    }
                }
                let answer = sent.body(body).send().await.unwrap();
                let mut response = Response::builder().status(answer.status().as_u16());
                for (name, value) in answer.headers() {
                    response = response.header(name.as_str(), value.as_bytes());
                }
                response
                    .body(Body::from(answer.bytes().await.unwrap()))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        LoginRegistry {
            port,
            let_through,
            server,
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn let_through(&self) -> usize {
        self.let_through.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for LoginRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Pushes reject-by-source to `registry` as `hooks/private:v1` with a config of its own
/// (so a manifest digest no other test uses), and returns its pinned reference.
async fn push_private(registry: &Registry) -> String {
    let access = jobsink::hook::oci::Access {
        insecure: true,
        auth: oci_client::secrets::RegistryAuth::Anonymous,
        timeout: std::time::Duration::from_secs(120),
    };
    let image = format!("{}/hooks/private:v1", registry.host())
        .parse()
        .unwrap();
    let layer = std::fs::read(support::plugins::plugin_path("reject_by_source")).unwrap();
    let config = format!(
        r#"{{"architecture":"wasm","os":"wasip2","private":"{}"}}"#,
        std::process::id()
    );
    jobsink::hook::oci::push_artifact(layer, config.into_bytes(), &image, &access)
        .await
        .expect("push the private artifact")
}

/// A `kubernetes.io/dockerconfigjson` Secret `name` with `user` and `password` for `host`,
/// as `kubectl create secret docker-registry` makes it.
fn pull_secret(ns: &TestNamespace, name: &str, host: &str, user: &str, password: &str) {
    let (ok, _, err) = kubectl(
        &[
            "create",
            "secret",
            "docker-registry",
            name,
            "-n",
            &ns.name,
            &format!("--docker-server={host}"),
            &format!("--docker-username={user}"),
            &format!("--docker-password={password}"),
        ],
        None,
    );
    assert!(ok, "kubectl create secret docker-registry failed: {err}");
}

#[tokio::test]
async fn a_registry_that_needs_a_login_serves_only_sinks_with_its_credentials_even_from_the_cache()
{
    let registry = Registry::start().await;
    let login = LoginRegistry::start(registry.host(), "hooks", "s3cret").await;
    // Pushed straight to the registry; pulled through the login. Its config makes its
    // manifest's digest its own: the other tests' processes, which load every sink's hook,
    // pull the same component anonymously, and bytes pulled without credentials anywhere are
    // public (docs/hooks.md).
    let pinned = push_private(&registry)
        .await
        .replace(&registry.host(), &login.host());
    let dir = cache_dir("login");
    let serve = Serve::start(&["--hook-cache-dir", dir.to_str().unwrap()]).await;
    let ns = TestNamespace::new("oci-login").await;
    let with_secret =
        |secret: &str| format!("{}    imagePullSecret: {secret}\n", image_hook(&pinned));

    // Without credentials, and with a wrong password: the registry's 401, tried again.
    apply(&ns, &sink("anonymous", &image_hook(&pinned)));
    let message = hook_ready(&ns, "anonymous", "False", Some("HookPullFailed")).await;
    assert!(
        message.contains(&pinned) && message.contains("trying again in"),
        "{message}"
    );
    pull_secret(&ns, "wrong", &login.host(), "hooks", "guess");
    apply(&ns, &sink("wrong-login", &with_secret("wrong")));
    hook_ready(&ns, "wrong-login", "False", Some("HookPullFailed")).await;
    // A Secret that does not exist.
    apply(&ns, &sink("no-secret", &with_secret("missing")));
    let message = hook_ready(&ns, "no-secret", "False", Some("HookPullSecretInvalid")).await;
    assert!(message.contains("missing"), "{message}");
    assert_eq!(login.let_through(), 0, "nothing passed the login yet");

    // With the right credentials the hook is pulled through the login and serves.
    pull_secret(&ns, "right", &login.host(), "hooks", "s3cret");
    apply(&ns, &sink("logged-in", &with_secret("right")));
    hook_ready(&ns, "logged-in", "True", None).await;
    rejects_as_the_hook_says(&serve, &ns, "logged-in", "l").await;
    assert!(
        login.let_through() >= 2,
        "the manifest and the component came through the login"
    );

    // The component is now in this dispatcher's cache, but a sink without the credentials
    // still does not get it from there: a second anonymous sink is refused as the first was.
    apply(&ns, &sink("anonymous-later", &image_hook(&pinned)));
    hook_ready(&ns, "anonymous-later", "False", Some("HookPullFailed")).await;
    // One with them is served from the cache after the registry confirmed its login.
    let before = login.let_through();
    apply(&ns, &sink("logged-in-later", &with_secret("right")));
    hook_ready(&ns, "logged-in-later", "True", None).await;
    rejects_as_the_hook_says(&serve, &ns, "logged-in-later", "m").await;
    assert!(
        login.let_through() > before,
        "the cached copy was confirmed with the registry"
    );
    let text = metrics(&serve).await;
    assert!(
        count(&text, "jobsink_hook_image_pulls_total{result=\"cached\"}") >= 1,
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
