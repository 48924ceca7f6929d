//! Support for Gatehouse's black-box tests: real upstream HTTP servers whose
//! behaviour a test can change while they run, a gateway started in-process or as
//! the real binary, and a small HTTP client.

pub mod browser;
pub mod client;
pub mod gateway;
pub mod grpc;
pub mod redis;
pub mod tls;
pub mod upstream;

pub use browser::Browser;
pub use client::{Client, Reply};
pub use gateway::{BinaryGateway, TestGateway, write_config};
pub use upstream::{Behavior, TestUpstream};

/// Installs a log subscriber once (honours `RUST_LOG`; quiet by default).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// `name.wasm` from the example plugins (`plugins/`) or the test fixtures
/// (`tests/plugins/`), as built by `scripts/build-plugins.sh`.
pub fn plugin_wasm(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["../plugins", "plugins"] {
        let p = root
            .join(dir)
            .join("target/wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        if p.exists() {
            return p;
        }
    }
    panic!("{name}.wasm not found: build the plugins first with scripts/build-plugins.sh");
}

/// Polls `check` (every 20 ms) until it holds or `limit` passes; whether it held.
pub async fn eventually<F, Fut>(limit: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
