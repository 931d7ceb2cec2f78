//! `cargo xtask bench services`: for every long-running service (release build), the time from spawn to the first
//! 200 of `/health/readiness`, and resident memory after a second of idleness. The baseline is
//! python3's `http.server`, a familiar minimal HTTP server, measured the same way.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use super::Options;
use crate::shell::{self, cargo};
use crate::workspace;

#[derive(Serialize)]
struct Row {
    name: String,
    ready_ms: f64,
    rss_kib: u64,
    ready_ratio: f64,
    rss_ratio: f64,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    shell::run(cargo().args(["build", "--release", "--workspace", "--bins", "--locked"]))?;
    let bin_dir = workspace::target_dir().join("release");
    let runs = options.runs.max(1);
    let base = measure_n(
        runs,
        |port| {
            Command::new("python3").args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"]).spawn_quiet()
        },
        "/",
    )
    .context("measuring the python3 http.server baseline")?;
    let mut rows = vec![Row {
        name: "baseline: python3 -m http.server".into(),
        ready_ms: base.0,
        rss_kib: base.1,
        ready_ratio: 1.0,
        rss_ratio: 1.0,
    }];
    for service in workspace::services(&bin_dir)?.into_iter().filter(|s| s.is_server()) {
        let path = bin_dir.join(&service.binary);
        let (ms, kib) = measure_n(
            runs,
            |port| {
                Command::new(&path)
                    .env_clear()
                    .env("STELLA_PORT", port.to_string())
                    .env("STELLA_LISTEN_ADDR", "127.0.0.1")
                    .spawn_quiet()
            },
            "/health/readiness",
        )
        .with_context(|| format!("measuring {}", service.binary))?;
        rows.push(Row {
            name: service.binary,
            ready_ms: ms,
            rss_kib: kib,
            ready_ratio: ms / base.0,
            rss_ratio: kib as f64 / base.1 as f64,
        });
    }
    if options.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<36} {:>10} {:>8} {:>10} {:>8}",
            "service (median of runs)", "ready ms", "ratio", "RSS KiB", "ratio"
        );
        for r in &rows {
            println!(
                "{:<36} {:>10.1} {:>8.2} {:>10} {:>8.2}",
                r.name, r.ready_ms, r.ready_ratio, r.rss_kib, r.rss_ratio
            );
        }
    }
    let slow: Vec<_> =
        rows.iter().skip(1).filter(|r| r.ready_ms > 200.0 || r.rss_kib > 15 * 1024).map(|r| r.name.as_str()).collect();
    if !slow.is_empty() {
        bail!("over the goal (ready under 200 ms, idle RSS under 15 MiB): {}", slow.join(", "));
    }
    Ok(())
}

trait SpawnQuiet {
    fn spawn_quiet(&mut self) -> std::io::Result<Child>;
}

impl SpawnQuiet for Command {
    fn spawn_quiet(&mut self) -> std::io::Result<Child> {
        self.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
    }
}

/// Medians over `runs` of (ms from spawn to the first 200 of `path`, idle RSS in KiB).
fn measure_n(runs: usize, spawn: impl Fn(u16) -> std::io::Result<Child>, path: &str) -> anyhow::Result<(f64, u64)> {
    let mut times = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let start = Instant::now();
        let mut child = spawn(port)?;
        let ready = wait_ready(port, path, Duration::from_secs(10));
        let elapsed = start.elapsed();
        std::thread::sleep(Duration::from_secs(1));
        let kib = rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        if !ready {
            bail!("not ready within 10 s on port {port}");
        }
        times.push(elapsed.as_secs_f64() * 1000.0);
        rss.push(kib?);
    }
    times.sort_by(f64::total_cmp);
    rss.sort_unstable();
    Ok((times[times.len() / 2], rss[rss.len() / 2]))
}

fn wait_ready(port: u16, path: &str, limit: Duration) -> bool {
    let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().new_agent();
    let url = format!("http://127.0.0.1:{port}{path}");
    let start = Instant::now();
    while start.elapsed() < limit {
        if agent.get(&url).call().is_ok_and(|r| r.status() == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Resident set size from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}
