//! The `gatehouse` binary: parse arguments, load the config, run until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gatehouse::config::{self, Overrides};
use gatehouse::control::ReloadOutcome;
use gatehouse::{Gateway, StartOptions, demo};

/// Gatehouse: an API gateway that keeps API backends available when nodes, zones or
/// regions fail.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Run {
        /// The config file (YAML or JSON).
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        flags: Flags,
        /// Accept edits of published versions in the file (or an import) instead of
        /// refusing them; each is logged, counted and shown in the status. For
        /// emergencies: the fix is a new version, published.
        #[arg(long)]
        allow_published_edits: bool,
    },
    /// Check a config file; print every error and exit non-zero if there are any.
    Validate {
        /// The config file.
        file: PathBuf,
        #[command(flatten)]
        flags: Flags,
    },
    /// Plugin tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Run six demo upstreams in three zones and a gateway in front of them.
    Demo {
        /// Proxy listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listen address.
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin_listen: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load a plugin file as the gateway would and run `init` and the smoke calls of
    /// every kind it implements with `--config`.
    Check {
        /// The `.wasm` file.
        file: PathBuf,
        /// The plugin's config, as JSON.
        #[arg(long, default_value = "{}")]
        config: String,
    },
}

/// Flags that override the config file's `gateway:` section.
#[derive(Debug, Args)]
struct Flags {
    /// Gateway group to serve.
    #[arg(long)]
    group: Option<String>,
    /// This unit's zone.
    #[arg(long)]
    zone: Option<String>,
    /// This unit's region.
    #[arg(long)]
    region: Option<String>,
    /// Proxy listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listen address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Directory for durable state.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Directory watched for plugins.
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
}

impl From<Flags> for Overrides {
    fn from(f: Flags) -> Self {
        Overrides {
            group: f.group,
            zone: f.zone,
            region: f.region,
            listen: f.listen,
            admin_listen: f.admin_listen,
            state_dir: f.state_dir,
            plugins_dir: f.plugins_dir,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Validate { file, flags } => validate(&file, flags.into()),
        Command::Plugin {
            command: PluginCommand::Check { file, config },
        } => plugin_check(&file, &config),
        Command::Run {
            config,
            flags,
            allow_published_edits,
        } => {
            let options = StartOptions {
                config_path: Some(config),
                overrides: flags.into(),
                allow_published_edits,
            };
            report(runtime().and_then(|rt| rt.block_on(run(options))))
        }
        Command::Demo { listen, admin_listen } => {
            report(runtime().and_then(|rt| rt.block_on(run_demo(listen, admin_listen))))
        }
    }
}

/// `gatehouse validate`: the config, the TLS files it names (exist, parse, keys
/// match, not expired; a warning within 14 days of expiry), then every plugin it names.
fn validate(file: &std::path::Path, overrides: Overrides) -> ExitCode {
    let config = match config::load_file(file, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match gatehouse::tls::check(&config.config) {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
        }
        Err(errors) => {
            eprintln!("config {} is invalid ({} error(s)):", file.display(), errors.len());
            for e in errors {
                eprintln!("  - {e}");
            }
            return ExitCode::FAILURE;
        }
    }
    match gatehouse::plugin::check::check_config(&config.config) {
        Ok(problems) if problems.is_empty() => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for p in &problems {
                eprintln!("{}: {p}", file.display());
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: cannot check plugins: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// `gatehouse plugin check FILE.wasm`.
fn plugin_check(file: &std::path::Path, config: &str) -> ExitCode {
    match gatehouse::plugin::check::check_file(file, config) {
        Ok(r) if r.problems.is_empty() => {
            println!("{}: ok ({})", file.display(), r.worlds.join(", "));
            ExitCode::SUCCESS
        }
        Ok(r) => {
            for p in &r.problems {
                eprintln!("{}: {p}", file.display());
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gatehouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .init();
}

/// The tokio runtime: multi-threaded (`TOKIO_WORKER_THREADS` workers, default one
/// per core), or the single-threaded scheduler when `TOKIO_WORKER_THREADS=1` — one
/// worker gains nothing from work stealing and pays for its cross-thread wake-ups.
fn runtime() -> Result<tokio::runtime::Runtime> {
    let single = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().context("cannot start the tokio runtime")
}

async fn run(options: StartOptions) -> Result<()> {
    let path = options.config_path.clone().unwrap_or_default();
    let loaded = config::load_file(&path, &options.overrides)?;
    if options.allow_published_edits {
        tracing::warn!("--allow-published-edits: published versions may change in place; each change is recorded");
    }
    let gateway = Gateway::start(loaded, options).await?;
    wait_and_stop(gateway).await
}

async fn run_demo(listen: SocketAddr, admin: SocketAddr) -> Result<()> {
    let demo_nodes = demo::DemoNodes::start()
        .await
        .context("cannot start the demo upstream nodes")?;
    let nodes = demo_nodes.addresses();
    let text = demo::render_config(&nodes, listen, admin);
    let loaded = config::load_str(
        &text,
        "built-in demo config",
        &Overrides::default(),
        std::path::Path::new("."),
    )?;
    let gateway = Gateway::start(loaded, StartOptions::default()).await?;
    let _ = gateway.admin.demo.set(demo_nodes);
    let p = gateway.proxy_addr;
    let a = gateway.admin_addr;
    println!("Gatehouse demo: a gateway in zone-a in front of six nodes in zones a, b and c.");
    for (name, addr) in &nodes {
        println!("  node {name:<4} {addr}");
    }
    println!();
    println!("Dashboard: http://{a}/  (stop and start nodes there to watch a failover)");
    println!();
    println!("Try:");
    println!("  curl http://{p}/hello                       # answered by a zone-a node");
    println!("  curl -H 'x-user-id: 42' http://{p}/sticky/x  # same user, same node");
    println!("  curl http://{a}/admin/v1/status");
    println!("  curl http://{a}/metrics");
    println!("  curl -X POST http://{a}/admin/v1/demo/nodes/a-1/stop   # then .../start");
    println!("Press Ctrl-C to stop.");
    wait_and_stop(gateway).await
}

async fn wait_and_stop(gateway: Gateway) -> Result<()> {
    wait_for_signal(&gateway).await?;
    tracing::info!("signal received: finishing in-flight requests");
    gateway.shutdown().await;
    Ok(())
}

/// Waits for SIGTERM or SIGINT; SIGHUP meanwhile forces a config reload.
async fn wait_for_signal(gateway: &Gateway) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => match gateway.reload().await {
                ReloadOutcome::Applied { generation } => tracing::info!(generation, "SIGHUP: config reloaded"),
                ReloadOutcome::Rejected(errors) => {
                    tracing::warn!(errors = errors.len(), "SIGHUP: config rejected; the last good config keeps serving");
                }
                other => tracing::info!(?other, "SIGHUP: config reload"),
            },
        }
    }
}
