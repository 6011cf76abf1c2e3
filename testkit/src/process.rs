//! `jobsink serve` as a real process: for the tests of what only a process shows (signals,
//! sockets, timeouts) and for the benchmarks. One launcher for both ([`Launch`]); the process
//! is killed when its [`Serve`] is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{CONVERGE, install_crd, install_eventpolicy_crd, service_account_kubeconfig};

/// The binary under test: `JOBSINK_BIN` when set (a copy of this tree's build, where several
/// worktrees share one cargo target directory and its `target/debug/jobsink`), else the one
/// cargo built beside the running test or benchmark (`target/<profile>/jobsink`, as
/// `target/<profile>/deps/<test>` is the running executable; cargo builds the binary before
/// the tests and benchmarks of its package).
pub fn binary() -> String {
    if let Ok(bin) = std::env::var("JOBSINK_BIN") {
        return bin;
    }
    let exe = std::env::current_exe().expect("the path of the running test");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("jobsink"))
        .filter(|bin| bin.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no jobsink binary beside {}: run the tests with cargo, or set JOBSINK_BIN",
                exe.display()
            )
        });
    bin.to_string_lossy().into_owned()
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// How to start `jobsink serve`: [`Launch::test`] for the tests, [`Launch::bench`] for the
/// benchmarks; then [`Launch::start`].
#[derive(Clone, Debug)]
pub struct Launch {
    /// Flags after `serve` and the listen addresses.
    pub extra: Vec<String>,
    /// Run as the product's ServiceAccount (a kubeconfig with its token), so that a verb
    /// missing from the shipped RBAC fails a test; else as `KUBECONFIG` (admin).
    pub as_service_account: bool,
    /// `RUST_LOG` of the process.
    pub log: &'static str,
    /// Honour `JOBSINK_RECEIVER_NICE` and `JOBSINK_RECEIVER_CPUS` ([`crate::bench`]).
    pub placed: bool,
}

impl Launch {
    /// As the tests run it: the ServiceAccount's identity, info logs of our own.
    pub fn test(extra: &[&str]) -> Self {
        Launch {
            extra: extra.iter().map(|a| a.to_string()).collect(),
            as_service_account: true,
            log: "warn,jobsink=info",
            placed: false,
        }
    }

    /// As the benchmarks run it: admin's identity, errors only, placed as asked.
    pub fn bench(extra: &[&str]) -> Self {
        Launch {
            extra: extra.iter().map(|a| a.to_string()).collect(),
            as_service_account: false,
            log: "error",
            placed: true,
        }
    }

    /// Installs both CRDs (as `kubectl apply -f deploy/` does: with OIDC on, the receiver is
    /// not ready until it has listed EventPolicies), starts the process on free ports and
    /// waits until it is ready. A `--metrics-listen` among the flags replaces the default
    /// (loopback, a free port); its port is then the one given.
    pub async fn start(self) -> anyhow::Result<Serve> {
        tokio::task::spawn_blocking(|| {
            install_crd();
            install_eventpolicy_crd();
        })
        .await?;
        let kubeconfig = if self.as_service_account {
            Some(tokio::task::spawn_blocking(service_account_kubeconfig).await?)
        } else {
            None
        };
        let (port, mut metrics_port, tls_port) = (free_port(), free_port(), free_port());
        let mut args = vec![
            "serve".to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--tls-listen".to_owned(),
            format!("127.0.0.1:{tls_port}"),
        ];
        let metrics_listen = self
            .extra
            .iter()
            .position(|a| a == "--metrics-listen")
            .and_then(|i| self.extra.get(i + 1));
        match metrics_listen {
            Some(addr) => metrics_port = addr.parse::<std::net::SocketAddr>()?.port(),
            None => {
                args.push("--metrics-listen".to_owned());
                args.push(format!("127.0.0.1:{metrics_port}"));
            }
        }
        args.extend(self.extra.iter().cloned());
        let mut serve = Serve {
            child: None,
            port,
            metrics_port,
            args,
            kubeconfig,
            launch: self,
        };
        serve.spawn()?;
        serve.wait_ready().await?;
        Ok(serve)
    }
}

/// A running `jobsink serve`, killed when dropped.
pub struct Serve {
    child: Option<Child>,
    pub port: u16,
    pub metrics_port: u16,
    args: Vec<String>,
    kubeconfig: Option<PathBuf>,
    launch: Launch,
}

/// The command running [`binary`], placed on CPUs and at a nice value when `placed` and
/// `JOBSINK_RECEIVER_CPUS` (a `taskset` CPU list) or `JOBSINK_RECEIVER_NICE` ask for it
/// ([`crate::bench`]).
fn command(placed: bool) -> Command {
    let mut argv: Vec<String> = vec![];
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if placed && let Some(nice) = var("JOBSINK_RECEIVER_NICE") {
        argv.extend(["nice".into(), "-n".into(), nice]);
    }
    if placed && let Some(cpus) = var("JOBSINK_RECEIVER_CPUS") {
        argv.extend(["taskset".into(), "-c".into(), cpus]);
    }
    argv.push(binary());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

impl Serve {
    /// Starts `jobsink serve` as the tests do ([`Launch::test`]) with `extra` flags.
    pub async fn start(extra: &[&str]) -> Self {
        Launch::test(extra)
            .start()
            .await
            .unwrap_or_else(|e| panic!("jobsink serve {extra:?}: {e:#}"))
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = command(self.launch.placed);
        if let Some(kubeconfig) = &self.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let child = command
            .args(&self.args)
            .env("RUST_LOG", self.launch.log)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts another process with the same flags (after [`Serve::kill`]), on the same ports.
    pub async fn restart(&mut self) {
        self.spawn().expect("restart jobsink serve");
        self.wait_ready().await.expect("jobsink serve ready again");
    }

    /// Waits until `/readyz` answers 200; fails at once if the process exits first.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = self.url("/readyz");
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                anyhow::bail!("jobsink serve exited ({status}) before it was ready");
            }
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("jobsink serve was not ready within {CONVERGE:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `signal` (e.g. `TERM`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{signal} {}", self.pid());
    }

    /// SIGKILL, and the process reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit (after a signal) and returns whether it succeeded.
    pub async fn exited(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("a process was started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.success();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobsink serve did not exit within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client for a `jobsink serve` of the tests, patient with a loaded machine.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// The seed's curl event (binary mode) with `id`, to `url`.
pub fn event(url: &str, id: &str) -> reqwest::RequestBuilder {
    http()
        .post(url)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-source", "my/curl/command")
        .header("ce-type", "my.demo.event")
        .header("ce-id", id)
        .body(r#"{"details":"JobSinkDemo"}"#)
}
