//! A real Redis server for tests: `redis-server` on a free loopback port, with no
//! persistence, killed when dropped. Tests kill and restart it to simulate outages.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::gateway::free_port;

/// A running (or stopped) Redis server owned by a test.
#[derive(Debug)]
pub struct TestRedis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `redis://127.0.0.1:port`
    pub url: String,
    dir: tempfile::TempDir,
}

impl TestRedis {
    /// Starts a server on a free port and waits until it answers `PING`.
    pub async fn start() -> Self {
        let mut r = Self {
            child: None,
            port: free_port(),
            url: String::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        r.url = format!("redis://127.0.0.1:{}", r.port);
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}); scripts/setup.sh installs it"));
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.command(&["PING"]).as_deref() == Ok("+PONG") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not answer PING within 10 s", self.port);
    }

    /// Kills the server (SIGKILL, as in a crash); its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty, as after a crash).
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Whether the server process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends one command and returns the first line of the reply (`+OK`, `:3`,
    /// `$5` ...), for checks and set-up.
    pub fn command(&self, args: &[&str]) -> Result<String, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).map_err(|e| e.to_string())?;
        Ok(line.trim_end().to_string())
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
