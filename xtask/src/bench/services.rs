//! `cargo xtask bench services`: for every long-running service, as shipped in the images (the
//! static musl build for this machine's platform), the time from spawn to the first 200 of
//! `/health/readiness` and the resident memory after a second of idleness. The baseline is
//! python3's `http.server`, a familiar minimal HTTP server, measured the same way.
//!
//! Then the libc choice, measured: `stella-api` built for musl (shipped) and for glibc (the
//! host target): binary size, start-up, memory and, where `wrk` is installed, requests per
//! second on `/version`.

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
    let work = tempfile::tempdir()?;
    let request = crate::plan::Request {
        platforms: vec![crate::load::host_platform().into()],
        ..crate::plan::Request::new(crate::catalog::default_path(), work.path().join("oci"))
    };
    let (plan, _) = crate::images::build(&request, true)?;
    let triple = plan.targets[0].triple.clone();
    let bin_dir = workspace::target_dir().join(&triple).join("release");
    shell::run(cargo().args(["build", "--release", "--locked", "--package", "stella-api"]))?;
    let glibc = workspace::target_dir().join("release/stella-api");
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
    let libc = [("musl (shipped)", bin_dir.join("stella-api")), ("glibc (host)", glibc)]
        .into_iter()
        .map(|(name, path)| libc_row(name, &path, runs))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "services": rows, "libc": libc }))?);
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
    if !options.json {
        println!(
            "\nstella-api by libc      size KiB  ready ms   RSS KiB   req/s (wrk, /version, 2 threads, 32 connections, 5 s)"
        );
        for l in &libc {
            println!(
                "{:<22} {:>9} {:>9.1} {:>9} {:>9}",
                l.name,
                l.size_kib,
                l.ready_ms,
                l.rss_kib,
                l.requests_per_sec.map(|r| format!("{r:.0}")).unwrap_or_else(|| "no wrk".into())
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

#[derive(Serialize)]
struct LibcRow {
    name: &'static str,
    size_kib: u64,
    ready_ms: f64,
    rss_kib: u64,
    requests_per_sec: Option<f64>,
}

fn spawn_service(path: &Path, port: u16) -> std::io::Result<Child> {
    Command::new(path)
        .env_clear()
        .env("STELLA_PORT", port.to_string())
        .env("STELLA_LISTEN_ADDR", "127.0.0.1")
        .env("STELLA_LOG_LEVEL", "warn")
        .spawn_quiet()
}

fn libc_row(name: &'static str, path: &Path, runs: usize) -> anyhow::Result<LibcRow> {
    let size_kib = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?.len() / 1024;
    let (ready_ms, rss_kib) = measure_n(runs, |port| spawn_service(path, port), "/health/readiness")?;
    let requests_per_sec = if shell::have("wrk") {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut child = spawn_service(path, port)?;
        wait_ready(port, "/health/readiness", Duration::from_secs(10));
        let out = shell::output(Command::new("wrk").args([
            "-t2",
            "-c32",
            "-d5s",
            &format!("http://127.0.0.1:{port}/version"),
        ]));
        let _ = child.kill();
        let _ = child.wait();
        out?.lines().find_map(|l| l.strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok())
    } else {
        None
    };
    Ok(LibcRow { name, size_kib, ready_ms, rss_kib, requests_per_sec })
}
