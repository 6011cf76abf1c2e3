//! `jobsink serve` as a real process (the debug build of this tree), for the tests of what
//! only a process shows: signals, sockets, timeouts. It runs as the product's ServiceAccount
//! (`super::service_account_kubeconfig`) and is killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    CONVERGE, eventually, install_crd, install_eventpolicy_crd, service_account_kubeconfig,
};

pub struct Serve {
    child: Child,
    pub port: u16,
    pub metrics_port: u16,
    args: Vec<String>,
}

/// The binary under test: `JOBSINK_BIN` when set (a copy of this tree's build, where several
/// worktrees share one cargo target directory and its `target/debug/jobsink`), else the one
/// cargo built for this test run.
pub fn binary() -> String {
    std::env::var("JOBSINK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_jobsink").to_owned())
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Serve {
    /// Starts `jobsink serve` with `extra` flags on free ports and waits until it is ready.
    /// A `--metrics-listen` among `extra` replaces the default (loopback, a free port); its
    /// port is then the one given.
    pub async fn start(extra: &[&str]) -> Self {
        // Both CRDs, as `kubectl apply -f deploy/` installs them: with OIDC on, the receiver
        // is not ready until it has listed EventPolicies.
        tokio::task::spawn_blocking(|| {
            install_crd();
            install_eventpolicy_crd();
        })
        .await
        .expect("install CRDs");
        let kubeconfig = tokio::task::spawn_blocking(service_account_kubeconfig)
            .await
            .expect("service account kubeconfig");
        let (port, mut metrics_port, tls_port) = (free_port(), free_port(), free_port());
        let mut args = vec![
            "serve".to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
            "--tls-listen".to_owned(),
            format!("127.0.0.1:{tls_port}"),
        ];
        let metrics_listen = extra
            .iter()
            .position(|a| *a == "--metrics-listen")
            .and_then(|i| extra.get(i + 1));
        match metrics_listen {
            Some(addr) => {
                let addr: std::net::SocketAddr = addr.parse().expect("--metrics-listen address");
                metrics_port = addr.port();
            }
            None => {
                args.push("--metrics-listen".to_owned());
                args.push(format!("127.0.0.1:{metrics_port}"));
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = Command::new(binary())
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn,jobsink=info")
            .stdout(Stdio::null())
            .spawn()
            .expect("start jobsink serve");
        let serve = Self {
            child,
            port,
            metrics_port,
            args,
        };
        serve.wait_ready().await;
        serve
    }

    /// Starts another process with the same flags (after [`Serve::kill`]), on the same ports.
    pub async fn restart(&mut self) {
        self.child = Command::new(binary())
            .args(&self.args)
            .env("KUBECONFIG", service_account_kubeconfig())
            .env("RUST_LOG", "warn,jobsink=info")
            .stdout(Stdio::null())
            .spawn()
            .expect("restart jobsink serve");
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let url = self.url("/readyz");
        eventually("jobsink serve to be ready", CONVERGE, || {
            let url = url.clone();
            async move {
                let r = reqwest::get(&url).await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit (after a signal) and returns whether it succeeded.
    pub async fn exited(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
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
