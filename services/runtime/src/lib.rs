//! The shared runtime of every StellaOps service: one operational contract for all of them.
//!
//! A service binary declares itself with [`Service`] (name, port, extra settings, routes) and
//! hands control to [`Service::main`], which:
//! 1. parses the command line (`serve`, `healthcheck`, `describe`, and for jobs `--seed`);
//! 2. loads and validates configuration; a bad value exits 78 before anything is bound;
//! 3. installs JSON logging with secret redaction;
//! 4. serves the contract routes (see [`server`]) beside the service's own, and drains on SIGTERM.

pub mod config;
pub mod settings;

mod build_info;
mod healthcheck;
mod logging;
mod metrics;
mod readiness;
mod reap;
pub mod redact;
mod server;
mod shutdown;
mod telemetry;
mod url;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use axum;
pub use build_info::BuildInfo;
use clap::Parser;
pub use config::{Config, Setting};
pub use settings::s;
pub use sqlx;
use sqlx::PgPool;
pub use tokio;
pub use tracing;

/// Exit status for invalid configuration (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

/// What a service route builder and a job receive.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub build: BuildInfo,
    /// The PostgreSQL pool, when `STELLA_DATABASE_URL` is configured.
    pub db: Option<PgPool>,
    workers: Workers,
    drain: shutdown::Drain,
}

impl Context {
    /// Runs a background worker; on shutdown `stopped` resolves and the runtime waits (within the
    /// grace period) for the worker to return, so it can flush what it holds.
    pub fn spawn_worker<F, Fut>(&self, name: &'static str, worker: F)
    where
        F: FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(worker(Box::pin(self.drain.stopped())));
        self.workers.0.lock().expect("worker list lock").push((name, handle));
    }

    /// Runs `work` as a background worker now and then every `interval` after it finished, until
    /// shutdown. The stop signal is awaited only between rounds: a round in progress finishes.
    /// Each round's future owns what it uses (clone a pool or an `Arc` into it), as the worker
    /// outlives the caller.
    pub fn every<F, Fut>(&self, name: &'static str, interval: Duration, mut work: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.repeat(name, move || {
            let round = work();
            async move {
                round.await;
                ControlFlow::Continue(interval)
            }
        });
    }

    /// Like [`Context::every`], for a worker whose pause depends on the round (none after a full
    /// batch, say): `work` returns `Continue(pause)`, or `Break(())` when the worker is done.
    pub fn repeat<F, Fut>(&self, name: &'static str, mut work: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ControlFlow<(), Duration>> + Send + 'static,
    {
        self.spawn_worker(name, move |mut stopped| async move {
            while let ControlFlow::Continue(pause) = work().await {
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        });
    }
}

impl Context {
    /// Like [`Context::repeat`], and a pause also ends early when `wake` changes: a worker that
    /// is told about new work (a database notification, see `stella_core::wake`) starts at once
    /// instead of at its next poll. A change during a round is not lost: it ends the next pause
    /// at once. Should the sender go away, the pauses are plain sleeps again.
    pub fn repeat_or_woken<F, Fut>(&self, name: &'static str, mut wake: tokio::sync::watch::Receiver<u64>, mut work: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ControlFlow<(), Duration>> + Send + 'static,
    {
        self.spawn_worker(name, move |mut stopped| async move {
            let mut listening = true;
            while let ControlFlow::Continue(pause) = work().await {
                let sleep = tokio::time::sleep(pause);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = &mut sleep => break,
                        changed = wake.changed(), if listening => {
                            if changed.is_ok() { break }
                            listening = false;
                        }
                    }
                }
            }
        });
    }
}

/// Background workers to wait for at shutdown.
#[derive(Clone, Default)]
pub(crate) struct Workers(Arc<Mutex<Vec<NamedWorker>>>);

type NamedWorker = (&'static str, tokio::task::JoinHandle<()>);

impl Workers {
    async fn join_until(&self, deadline: tokio::time::Instant) -> bool {
        let handles = std::mem::take(&mut *self.0.lock().expect("worker list lock"));
        let mut clean = true;
        for (name, handle) in handles {
            if tokio::time::timeout_at(deadline, handle).await.is_err() {
                tracing::error!(worker = name, "worker did not finish within the grace period");
                clean = false;
            }
        }
        clean
    }
}

/// Flags of a one-shot job.
#[derive(Clone, Copy, Debug)]
pub struct JobArgs {
    pub seed: bool,
}

type JobFn = Box<dyn FnOnce(Context, JobArgs) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>>;
type RoutesFn = fn(&Context) -> axum::Router;

/// The declaration of one service binary.
pub struct Service {
    name: &'static str,
    port: Option<u16>,
    settings: Vec<Setting>,
    aggregation_only: bool,
    routes: Option<RoutesFn>,
    job: Option<JobFn>,
    checks: Vec<(&'static str, Check)>,
}

/// A service's own check of one setting's value, beyond its kind: the error says what is
/// expected, and the service exits 78 like for any other bad value.
pub type Check = fn(&str) -> Result<(), String>;

impl Service {
    /// A long-running HTTP service on its documented default port.
    pub fn server(name: &'static str, port: u16) -> Service {
        Service {
            name,
            port: Some(port),
            settings: [settings::COMMON, settings::DEPENDENCIES].concat(),
            aggregation_only: false,
            routes: None,
            job: None,
            checks: Vec::new(),
        }
    }

    /// A one-shot job that runs to completion and exits 0.
    pub fn job<F, Fut>(name: &'static str, job: F) -> Service
    where
        F: FnOnce(Context, JobArgs) -> Fut + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Service {
            name,
            port: None,
            settings: settings::JOB.to_vec(),
            aggregation_only: false,
            routes: None,
            job: Some(Box::new(move |ctx, args| Box::pin(job(ctx, args)))),
            checks: Vec::new(),
        }
    }

    /// Adds a service-specific setting.
    pub fn setting(mut self, setting: Setting) -> Service {
        self.settings.push(setting);
        self
    }

    /// Adds a service-specific setting whose value `check` validates at start-up.
    pub fn checked_setting(mut self, setting: Setting, check: Check) -> Service {
        self.checks.push((setting.name, check));
        self.settings.push(setting);
        self
    }

    /// Conseiller and Excitator: `GET /capabilities` says `{"merge": false}` and
    /// `STELLA_DISABLE_MERGE=false` is refused at start-up.
    pub fn aggregation_only(mut self) -> Service {
        self.aggregation_only = true;
        self.settings.extend_from_slice(settings::AGGREGATION_ONLY);
        self
    }

    /// The service's own routes, merged beside the contract routes.
    pub fn routes(mut self, routes: RoutesFn) -> Service {
        self.routes = Some(routes);
        self
    }

    /// Runs the binary; the return value is the process exit code.
    pub fn main(self) -> ExitCode {
        let cli = Cli::parse();
        let binary = format!("stella-{}", self.name);
        if let Some(Command::Describe { json }) = cli.command {
            self.describe(json);
            return ExitCode::SUCCESS;
        }
        let config = match self.load_config() {
            Ok(c) => c,
            Err(e) => {
                // One line on stderr: the variable, the bad value and what is accepted.
                eprintln!("{binary}: configuration error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        match cli.command.unwrap_or(Command::Serve) {
            Command::Describe { .. } => unreachable!("answered before configuration is read"),
            Command::Healthcheck => self.healthcheck(&config),
            Command::Serve => {
                if cli.seed && self.job.is_none() {
                    eprintln!("{binary}: --seed applies to one-shot jobs only");
                    return ExitCode::from(2);
                }
                let build = BuildInfo::current();
                redact::install(config.secret_values());
                let telemetry = logging::init(
                    &binary,
                    &build,
                    config.text("STELLA_LOG_LEVEL").unwrap_or("info"),
                    config.text("STELLA_LOG_FORMAT").unwrap_or("json"),
                    config.text("OTEL_EXPORTER_OTLP_ENDPOINT"),
                );
                let telemetry = match telemetry {
                    Ok(guard) => guard,
                    Err(e) => {
                        eprintln!("{binary}: configuration error: OTEL_EXPORTER_OTLP_ENDPOINT: {e}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("starting the async runtime");
                let code = runtime.block_on(self.run(config, build, cli.seed));
                // Flushes spans and metrics outside the runtime, as the exporter requires.
                drop(runtime);
                drop(telemetry);
                code
            }
        }
    }

    fn load_config(&self) -> Result<Config, config::ConfigError> {
        let config = Config::load(self.name, self.port, &self.settings, &config::ProcessEnv)?;
        if self.aggregation_only && !config.bool("STELLA_DISABLE_MERGE") {
            return Err(config::ConfigError::Refused {
                name: "STELLA_DISABLE_MERGE".into(),
                value: "false".into(),
                why: format!(
                    "stella-{} only aggregates and links source documents; it has no merge path (set it to true or unset it)",
                    self.name
                ),
            });
        }
        for (name, check) in &self.checks {
            if let Some(value) = config.text(name) {
                let secret = self.settings.iter().any(|s| s.name == *name && s.secret);
                check(value).map_err(|expected| config::ConfigError::Invalid {
                    name: name.to_string(),
                    value: if secret { redact::MARK.to_string() } else { format!("{:?}", without_userinfo(value)) },
                    expected: if secret { expected.replace(value, redact::MARK) } else { expected },
                })?;
            }
        }
        if let Some(url) = config.text("STELLA_DATABASE_URL") {
            if let Err(e) = sqlx::postgres::PgConnectOptions::from_str(url) {
                return Err(config::ConfigError::Invalid {
                    name: "STELLA_DATABASE_URL".into(),
                    value: redact::MARK.into(),
                    expected: format!("a PostgreSQL URL ({})", e.to_string().replace(url, redact::MARK)),
                });
            }
        } else if self.job.is_some() {
            return Err(config::ConfigError::Required {
                name: "STELLA_DATABASE_URL".into(),
                why: format!("stella-{} needs PostgreSQL; set it or STELLA_DATABASE_URL_FILE", self.name),
            });
        }
        Ok(config)
    }

    fn describe(&self, json: bool) {
        let kind = if self.job.is_some() { "job" } else { "server" };
        if json {
            let doc = serde_json::json!({
                "binary": format!("stella-{}", self.name),
                "service": self.name,
                "kind": kind,
                "defaultPort": self.port,
                "aggregationOnly": self.aggregation_only,
                "settings": config::describe(&self.settings, self.port),
            });
            println!("{}", serde_json::to_string_pretty(&doc).expect("describe is valid JSON"));
        } else {
            let port = self.port.map(|p| format!(", port {p}")).unwrap_or_default();
            println!("stella-{} ({kind}{port})", self.name);
            for s in &self.settings {
                println!("  {:<32} {}", s.name, s.description);
            }
        }
    }

    fn healthcheck(&self, config: &Config) -> ExitCode {
        let (Some(port), Some(listen)) = (config.int("STELLA_PORT"), config.text("STELLA_LISTEN_ADDR")) else {
            eprintln!("stella-{} is a one-shot job and has no healthcheck", self.name);
            return ExitCode::from(2);
        };
        let listen: IpAddr = listen.parse().expect("validated at load");
        match healthcheck::check(listen, port as u16, Duration::from_secs(3)) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(line) => {
                println!("{line}");
                ExitCode::FAILURE
            }
        }
    }

    async fn run(self, config: Config, build: BuildInfo, seed: bool) -> ExitCode {
        reap::spawn_if_pid1();
        let db_options = config
            .text("STELLA_DATABASE_URL")
            .map(|url| sqlx::postgres::PgConnectOptions::from_str(url).expect("validated at load"));
        let db = db_options.clone().map(|options| {
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(config.int("STELLA_DATABASE_POOL_SIZE").unwrap_or(5) as u32)
                .acquire_timeout(Duration::from_secs(5))
                // An idle service keeps one connection (its readiness checks use it), not the
                // pool's high-water mark: each PostgreSQL backend holds a few MiB.
                .idle_timeout(Duration::from_secs(30))
                .connect_lazy_with(options)
        });
        let drain = shutdown::Drain::default();
        let ctx = Context { config: Arc::new(config), build, db, workers: Workers::default(), drain: drain.clone() };
        tracing::info!(config = %ctx.config.redacted(), "configuration loaded");
        if let Some(job) = self.job {
            return match job(ctx, JobArgs { seed }).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "job failed");
                    ExitCode::FAILURE
                }
            };
        }
        let config = &ctx.config;
        let listen: IpAddr = config.text("STELLA_LISTEN_ADDR").unwrap_or("0.0.0.0").parse().expect("validated at load");
        let addr = SocketAddr::new(listen, config.int("STELLA_PORT").expect("port has a default") as u16);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        let deps =
            ctx.db.clone().zip(db_options).map(|(p, o)| readiness::Dependency::Postgres(p, o)).into_iter().collect();
        let timeout = config.duration("STELLA_READINESS_TIMEOUT").unwrap_or(Duration::from_secs(2));
        let readiness = readiness::Readiness::new(deps, timeout, drain.clone());
        let own = self.routes.map(|r| r(&ctx)).unwrap_or_default();
        let app = server::app(&ctx, own, readiness, drain.clone(), self.aggregation_only);
        let grace = config.duration("STELLA_SHUTDOWN_GRACE").unwrap_or(Duration::from_secs(25));
        tracing::info!(%addr, "listening");
        if server::serve(listener, app, drain, grace, ctx.workers.clone()).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// The command line every service binary shares.
#[derive(Parser)]
#[command(about = "A StellaOps service (see `describe` for its settings)", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// One-shot jobs only: also load the seed data (quickstart).
    #[arg(long, global = true)]
    seed: bool,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Ask this service's readiness endpoint; exit 0 when ready, 1 otherwise (for HEALTHCHECK).
    Healthcheck,
    /// Print the service's name, port and every setting it reads.
    Describe {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// A URL's `user:password@` replaced by the redaction mark: a setting that is not secret may
/// still be given with credentials by mistake, and an error message must not repeat them.
fn without_userinfo(value: &str) -> String {
    match value.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}@{}", redact::MARK, &rest[at + 1..]),
                None => value.to_string(),
            }
        }
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct NoEnv;
    impl config::Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn read(&self, _: &std::path::Path) -> std::io::Result<String> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }

    fn context() -> Context {
        let config = Config::load("test", None, &[], &NoEnv).expect("no settings to refuse");
        let (build, workers, drain) = (BuildInfo::current(), Workers::default(), shutdown::Drain::default());
        Context { config: Arc::new(config), build, db: None, workers, drain }
    }

    fn grace() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn every_runs_at_once_and_returns_at_the_stop_signal() {
        let (ctx, rounds) = (context(), Arc::new(AtomicUsize::new(0)));
        let counted = rounds.clone();
        ctx.every("test", Duration::from_secs(3600), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        while rounds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        ctx.drain.stop_workers();
        assert!(ctx.workers.join_until(grace()).await, "the worker returned while waiting");
        assert_eq!(rounds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn repeat_pauses_as_told_and_ends_at_break() {
        let (ctx, rounds) = (context(), Arc::new(AtomicUsize::new(0)));
        let counted = rounds.clone();
        ctx.repeat("test", move || {
            let counted = counted.clone();
            async move {
                match counted.fetch_add(1, Ordering::SeqCst) {
                    0..3 => ControlFlow::Continue(Duration::ZERO),
                    _ => ControlFlow::Break(()),
                }
            }
        });
        assert!(ctx.workers.join_until(grace()).await, "the worker ended without a stop signal");
        assert_eq!(rounds.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_wake_ends_an_hour_long_pause_and_one_during_a_round_is_not_lost() {
        let (ctx, rounds) = (context(), Arc::new(AtomicUsize::new(0)));
        let (wake, woken) = tokio::sync::watch::channel(0u64);
        let counted = rounds.clone();
        let during = wake.clone();
        ctx.repeat_or_woken("test", woken, move || {
            let (counted, during) = (counted.clone(), during.clone());
            async move {
                // The second round is woken from inside the first: that change must not be lost.
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    during.send_modify(|n| *n += 1);
                }
                ControlFlow::Continue(Duration::from_secs(3600))
            }
        });
        let second = async {
            while rounds.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        };
        assert!(tokio::time::timeout(Duration::from_secs(10), second).await.is_ok(), "a wake during a round was lost");
        wake.send_modify(|n| *n += 1);
        let third = async {
            while rounds.load(Ordering::SeqCst) < 3 {
                tokio::task::yield_now().await;
            }
        };
        assert!(tokio::time::timeout(Duration::from_secs(10), third).await.is_ok(), "the wake did not end the pause");
        ctx.drain.stop_workers();
        assert!(ctx.workers.join_until(grace()).await, "the worker returned at the stop signal");
        assert_eq!(rounds.load(Ordering::SeqCst), 3);
    }
}
