//! Gateways under test: in-process ([`TestGateway`]) or the real binary
//! ([`BinaryGateway`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use gatehouse::config::{self, Overrides};
use gatehouse::{Gateway, StartOptions};

use crate::Client;

/// A gateway running in this process on ephemeral loopback ports.
#[derive(Debug)]
pub struct TestGateway {
    /// The running gateway.
    pub gateway: Gateway,
    /// `http://127.0.0.1:port`
    pub url: String,
    /// `http://127.0.0.1:port` of the admin API.
    pub admin: String,
    /// Scratch directory (state, plugins, config file).
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway from YAML; listeners are moved to ephemeral ports and
    /// `state_dir`/`plugins_dir` default into a scratch directory.
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, Overrides::default()).await
    }

    /// As [`TestGateway::start`] with flag overrides (zone, group, ...).
    pub async fn start_with(yaml: &str, mut overrides: Overrides) -> Self {
        crate::init_logs();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.yaml");
        std::fs::write(&path, yaml).unwrap();
        overrides.listen.get_or_insert("127.0.0.1:0".parse().unwrap());
        overrides.admin_listen.get_or_insert("127.0.0.1:0".parse().unwrap());
        let loaded = config::load_file(&path, &overrides).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::start(
            loaded,
            StartOptions {
                config_path: Some(path),
                overrides,
                ..StartOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            url: format!("http://{}", gateway.proxy_addr),
            admin: format!("http://{}", gateway.admin_addr),
            gateway,
            dir,
        }
    }

    /// `url + path`
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The config file the gateway was started from.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gatehouse.yaml")
    }

    /// Graceful shutdown.
    pub async fn stop(self) -> bool {
        self.gateway.shutdown().await
    }
}

/// Writes `yaml` to `dir/name` and returns the path.
pub fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// The `gatehouse` binary built next to the test executable.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("gatehouse");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p gatehouse --bin gatehouse`)",
        bin.display()
    );
    bin
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real binary, running as a child process.
#[derive(Debug)]
pub struct BinaryGateway {
    /// The process.
    pub child: tokio::process::Child,
    /// Proxy base URL.
    pub url: String,
    /// Admin base URL.
    pub admin: String,
}

impl BinaryGateway {
    /// Runs `gatehouse run --config path` on free ports with extra args, and waits
    /// until `/readyz` answers 200.
    pub async fn start(config: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(config, extra, &[]).await
    }

    /// Like [`BinaryGateway::start`], with extra environment variables for the process.
    pub async fn start_with_env(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let (port, admin_port) = (free_port(), free_port());
        let mut cmd = tokio::process::Command::new(binary());
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn gatehouse");
        let gw = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        };
        gw.wait_ready(Duration::from_secs(20)).await;
        gw
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, limit: Duration) {
        let client = Client::new().with_timeout(Duration::from_secs(1));
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(r) = client.get(&format!("{}/readyz", self.admin)).await
                && r.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway not ready after {limit:?}");
    }

    /// `url + path`
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("process is running")
    }

    /// Sends a signal (`libc` numbering, e.g. 15 for SIGTERM).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait(&mut self, limit: Duration) -> Option<i32> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|s| s.code())
    }
}
