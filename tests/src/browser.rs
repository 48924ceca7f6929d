//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/setup.sh`). Each [`Browser`] starts its
//! own chromedriver on a free loopback port, in a process group of its own, and
//! kills that whole group (chromedriver and the browser it started) when dropped,
//! also when a test panics.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::gateway::free_port;

/// How long any single wait for the page may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver process and one browser session.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session (1400×1000). Panics with
    /// what to install when either is missing: `scripts/setup.sh` installs both.
    pub async fn start() -> Browser {
        let driver_bin =
            find(&["chromedriver"]).expect("chromedriver not found: run scripts/setup.sh (chromium-driver)");
        let chrome = find(&["chromium", "chromium-browser"]).expect("chromium not found: run scripts/setup.sh");
        let port = free_port();
        let driver = Command::new(driver_bin)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chrome,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", "--no-first-run", "--disable-extensions"],
            }),
        );
        let client = tokio::time::timeout(
            WAIT,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("chromium session timed out")
        .expect("chromium session");
        Browser { client, driver }
    }

    /// Opens `url` and waits until the dashboard has rendered its first poll.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
        self.wait_js(
            "return !!(window.__gatehouse && window.__gatehouse.state.status)",
            "first poll",
        )
        .await;
    }

    /// Runs `script` and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Waits until `script` returns `true`; panics with `what` after [`WAIT`].
    pub async fn wait_js(&self, script: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let errors = self.js("return window.__gatehouseErrors || null").await;
                let text = self.js("return document.body.innerText.slice(0, 3000)").await;
                panic!(
                    "timed out waiting for {what}; page errors: {errors}; page text:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The errors the page collected (script errors, failed resources, rejected
    /// promises, `console.error`, CSP violations); `None` if the collector is missing.
    pub async fn page_errors(&self) -> Option<Vec<String>> {
        let v = self.js("return window.__gatehouseErrors || null").await;
        v.as_array()
            .map(|a| a.iter().map(|e| e.as_str().unwrap_or_default().to_string()).collect())
    }

    /// Sets the value of the form field `css` (clearing it first).
    pub async fn fill(&self, css: &str, value: &str) {
        let el = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        el.clear().await.unwrap_or_else(|e| panic!("{css}: {e}"));
        el.send_keys(value).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    }

    /// Clicks the element `css` (found again if a refresh replaced it meanwhile).
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self.client.wait().at_most(WAIT).for_element(Locator::Css(css)).await;
            let el = found.unwrap_or_else(|e| panic!("{css}: {e}"));
            match el.click().await {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale") && Instant::now() < deadline => continue,
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Chooses `value` in the `<select>` `css`.
    pub async fn select(&self, css: &str, value: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {css}={value}: {e}"));
    }

    /// The text of the element `css`, once one exists.
    pub async fn text(&self, css: &str) -> String {
        let el = self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        el.text().await.unwrap_or_default()
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Ends the session, then chromedriver and the browser (on drop).
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group; the browser it started is in it.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
    }
}
