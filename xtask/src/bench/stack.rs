//! `cargo xtask bench stack`: what the whole Compose quickstart costs while nobody uses it. The
//! stack of `deploy/compose` runs from the built layout (`quickstart.sh --layout`, its own
//! project, ports and local registry, so a stack of your own is left alone); after it is healthy
//! and has settled, every container's CPU time and memory are read from its cgroup over a window
//! (`--seconds`, 60 by default), and so is the Docker engine's own CPU (dockerd, containerd and
//! the shims: that is where the healthchecks' `exec`s cost). The baseline, in the same run: the
//! same stack with the workers polling as they did before they were woken by notifications
//! (jobs and scheduler every 1 s, policy every 2 s), set by a Compose override file; and, to show
//! what Docker's healthchecks cost (each is an `exec` into the container), the stack with them off.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::shell;

pub struct Options {
    pub json: bool,
    pub seconds: u64,
}

/// One container's figures over the window.
#[derive(Serialize)]
struct Container {
    service: String,
    cpu_percent: f64,
    memory_mib: f64,
}

#[derive(Serialize)]
struct Measured {
    label: &'static str,
    containers: Vec<Container>,
    /// Sum over the containers, in percent of one core.
    cpu_percent: f64,
    memory_mib: f64,
    /// dockerd, containerd and the shims over the same window, in percent of one core.
    engine_cpu_percent: f64,
}

#[derive(Serialize)]
struct Report {
    seconds: u64,
    woken: Measured,
    polling: Measured,
    /// As `woken`, with Docker's healthchecks off: the stack's own idle cost.
    unchecked: Measured,
    /// woken / polling, containers only.
    cpu_ratio: f64,
    goal_cpu_percent: f64,
    goal_memory_mib: f64,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let root = shell::root();
    let layout = crate::images::default_out();
    if !layout.join("index.json").exists() {
        bail!("{}: no build; run `cargo xtask images` first", layout.display());
    }
    let work = tempfile::Builder::new().prefix("stella-bench-stack-").tempdir()?;
    copy_dir(&root.join("deploy/compose"), work.path())?;
    let stack = Stack::new(work.path())?;
    let _down = Down(&stack);
    stack.quickstart(&layout, &[])?;
    let woken = stack.measure("woken by notifications", options.seconds)?;
    // The baseline: the polling intervals of the previous release, for every service.
    let services = stack.services()?;
    let ours: Vec<&String> =
        services.iter().filter(|s| !matches!(s.as_str(), "stella-postgres" | "stella-redis" | "stella-nats")).collect();
    let mut polling = String::from("version: \"2.4\"\nservices:\n");
    for s in &ours {
        polling.push_str(&format!(
            "  {s}:\n    environment:\n      STELLA_JOBS_POLL: \"1s\"\n      STELLA_SCHEDULER_TICK: \"1s\"\n      STELLA_POLICY_INTERVAL: \"2s\"\n"
        ));
    }
    std::fs::write(work.path().join("polling.yml"), polling)?;
    stack.compose(&["-f", "docker-compose.yml", "-f", "polling.yml", "up", "-d", "--no-deps"])?;
    stack.wait_healthy(Duration::from_secs(180))?;
    let polling = stack.measure("polling (previous release)", options.seconds)?;
    // What the healthchecks cost: the same compose file with every healthcheck off but
    // PostgreSQL's (the services wait for it to be healthy before they start).
    std::fs::write(
        work.path().join("no-healthchecks.yml"),
        without_healthchecks(&std::fs::read_to_string(work.path().join("docker-compose.yml"))?),
    )?;
    stack.compose(&["-f", "no-healthchecks.yml", "up", "-d", "--no-deps"])?;
    stack.wait_healthy(Duration::from_secs(180))?;
    let unchecked = stack.measure("woken, no healthchecks", options.seconds)?;
    let report = Report {
        seconds: options.seconds,
        cpu_ratio: woken.cpu_percent / polling.cpu_percent.max(f64::EPSILON),
        woken,
        polling,
        unchecked,
        goal_cpu_percent: 1.0,
        goal_memory_mib: 150.0,
    };
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("idle stack over {} s (CPU in % of one core, memory from each container's cgroup)", report.seconds);
    println!("{:<22} {:>10} {:>10} {:>12} {:>8}", "container", "CPU woken", "CPU poll", "no checks", "MiB");
    let rows = report.woken.containers.iter().zip(&report.polling.containers).zip(&report.unchecked.containers);
    for ((w, p), u) in rows {
        println!(
            "{:<22} {:>9.2}% {:>9.2}% {:>11.2}% {:>8.1}",
            w.service, w.cpu_percent, p.cpu_percent, u.cpu_percent, w.memory_mib
        );
    }
    let (w, p, u) = (&report.woken, &report.polling, &report.unchecked);
    println!(
        "{:<22} {:>9.2}% {:>9.2}% {:>11.2}% {:>8.1}",
        "all containers", w.cpu_percent, p.cpu_percent, u.cpu_percent, w.memory_mib
    );
    println!(
        "{:<22} {:>9.2}% {:>9.2}% {:>11.2}%",
        "docker engine", w.engine_cpu_percent, p.engine_cpu_percent, u.engine_cpu_percent
    );
    println!(
        "ratio woken/polling: {:.2}; goal: under {:.0}% of a core and {:.0} MiB",
        report.cpu_ratio, report.goal_cpu_percent, report.goal_memory_mib
    );
    Ok(())
}

struct Stack {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Stack {
    fn new(dir: &Path) -> anyhow::Result<Stack> {
        let mut env = vec![("COMPOSE_PROJECT_NAME".to_string(), format!("stellabench{}", std::process::id()))];
        let example = std::fs::read_to_string(dir.join(".env.example")).context("reading .env.example")?;
        for line in example.lines().filter(|l| l.starts_with("STELLA_") && l.contains("_PORT=")) {
            let name = line.split('=').next().unwrap_or_default();
            env.push((name.to_string(), free_port()?.to_string()));
        }
        env.push(("STELLA_LOCAL_REGISTRY_PORT".to_string(), free_port()?.to_string()));
        Ok(Stack { dir: dir.to_path_buf(), env })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.dir).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        shell::output(self.command("docker-compose").args(args))
    }

    fn quickstart(&self, layout: &Path, args: &[&str]) -> anyhow::Result<()> {
        let port = self.env.iter().find(|(k, _)| k == "STELLA_LOCAL_REGISTRY_PORT").map(|(_, v)| v.clone());
        let mut cmd = self.command("bash");
        cmd.arg("quickstart.sh").args(["--layout", &layout.display().to_string()]);
        cmd.args(["--registry-port", &port.unwrap_or_default()]).args(args);
        eprintln!("starting the quickstart stack in {}", self.dir.display());
        shell::output(&mut cmd).context("quickstart.sh")?;
        Ok(())
    }

    /// Compose service name and container id of every container.
    fn containers(&self) -> anyhow::Result<Vec<(String, String)>> {
        let ids = self.compose(&["ps", "-q"])?;
        let mut out = Vec::new();
        for id in ids.lines().filter(|l| !l.trim().is_empty()) {
            let name = shell::output(Command::new("docker").args([
                "inspect",
                "-f",
                "{{index .Config.Labels \"com.docker.compose.service\"}} {{.Id}} {{.State.Running}}",
                id,
            ]))?;
            let mut parts = name.split_whitespace();
            if let (Some(service), Some(full), Some("true")) = (parts.next(), parts.next(), parts.next()) {
                out.push((service.to_string(), full.to_string()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn services(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.containers()?.into_iter().map(|(s, _)| s).collect())
    }

    fn wait_healthy(&self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let mut waiting = Vec::new();
            for (service, id) in self.containers()? {
                let health = shell::output(Command::new("docker").args([
                    "inspect",
                    "-f",
                    "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                    &id,
                ]))?;
                if !matches!(health.trim(), "" | "healthy") {
                    waiting.push(service);
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("not healthy after {limit:?}: {}", waiting.join(", "));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Settles (the start-up's own work: seed, first feed polls), then measures `seconds`.
    fn measure(&self, label: &'static str, seconds: u64) -> anyhow::Result<Measured> {
        eprintln!("{label}: settling 20 s, then measuring {seconds} s");
        std::thread::sleep(Duration::from_secs(20));
        let containers = self.containers()?;
        let before: Vec<u64> = containers.iter().map(|(_, id)| cgroup_cpu_usec(id)).collect::<anyhow::Result<_>>()?;
        let engine_before = engine_cpu_ticks()?;
        let start = Instant::now();
        std::thread::sleep(Duration::from_secs(seconds));
        let elapsed = start.elapsed().as_secs_f64();
        let engine_after = engine_cpu_ticks()?;
        let mut rows = Vec::new();
        for ((service, id), before) in containers.iter().zip(before) {
            let used = cgroup_cpu_usec(id)?.saturating_sub(before) as f64 / 1e6;
            rows.push(Container {
                service: service.clone(),
                cpu_percent: 100.0 * used / elapsed,
                memory_mib: cgroup_memory_bytes(id)? as f64 / f64::from(1 << 20),
            });
        }
        let ticks = f64::from(u32::try_from(clock_ticks()).unwrap_or(100));
        Ok(Measured {
            label,
            cpu_percent: rows.iter().map(|r| r.cpu_percent).sum(),
            memory_mib: rows.iter().map(|r| r.memory_mib).sum(),
            engine_cpu_percent: 100.0 * (engine_after.saturating_sub(engine_before) as f64 / ticks) / elapsed,
            containers: rows,
        })
    }
}

/// `docker-compose.yml` with the healthcheck of every service but stella-postgres replaced by
/// `disable: true` (an override file cannot remove the inherited `test`).
fn without_healthchecks(compose: &str) -> String {
    let mut out = Vec::new();
    let mut service = "";
    let mut lines = compose.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')).filter(|l| !l.starts_with(' ')) {
            service = name;
        }
        out.push(line.to_string());
        if line.trim() == "healthcheck:" && service != "stella-postgres" {
            while lines.peek().is_some_and(|l| l.starts_with("      ")) {
                lines.next();
            }
            out.push("      disable: true".to_string());
        }
    }
    out.join("\n") + "\n"
}

/// Stops the stack and its local registry, whatever happened.
struct Down<'a>(&'a Stack);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self.0.command("docker-compose").args(["down", "-v", "--timeout", "5"]).output();
        if let Ok(pid) = std::fs::read_to_string(self.0.dir.join(".registry/pid")) {
            let _ = Command::new("kill").arg(pid.trim()).output();
        }
    }
}

/// The container's cgroup directory: cgroup v2 with the systemd or the cgroupfs driver, or v1.
fn cgroup_dir(id: &str, controller: &str) -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from(format!("/sys/fs/cgroup/system.slice/docker-{id}.scope")),
        PathBuf::from(format!("/sys/fs/cgroup/docker/{id}")),
        PathBuf::from(format!("/sys/fs/cgroup/{controller}/docker/{id}")),
        PathBuf::from(format!("/sys/fs/cgroup/{controller}/system.slice/docker-{id}.scope")),
    ];
    candidates.into_iter().find(|p| p.is_dir()).with_context(|| format!("no cgroup found for container {id}"))
}

fn cgroup_cpu_usec(id: &str) -> anyhow::Result<u64> {
    let dir = cgroup_dir(id, "cpuacct")?;
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
    if let Some(v) = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
        return Ok(v.trim().parse()?);
    }
    let ns: u64 = std::fs::read_to_string(dir.join("cpuacct.usage"))?.trim().parse()?;
    Ok(ns / 1000)
}

/// Memory in use, as `docker stats` counts it: the cgroup's usage less its inactive file cache
/// (pages the kernel reclaims first, such as PostgreSQL's files read once).
fn cgroup_memory_bytes(id: &str) -> anyhow::Result<u64> {
    let dir = cgroup_dir(id, "memory")?;
    let text = std::fs::read_to_string(dir.join("memory.current"))
        .or_else(|_| std::fs::read_to_string(dir.join("memory.usage_in_bytes")))?;
    let usage: u64 = text.trim().parse()?;
    let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let inactive = stat
        .lines()
        .find_map(|l| l.strip_prefix("inactive_file ").or_else(|| l.strip_prefix("total_inactive_file ")))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(usage.saturating_sub(inactive))
}

/// utime + stime, in clock ticks, of every dockerd, containerd and containerd-shim process.
fn engine_cpu_ticks() -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let name = head.split_once(" (").map_or("", |(_, n)| n);
        if !(name == "dockerd" || name.starts_with("containerd")) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state is field 3; utime and stime are fields 14 and 15.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += field(14) + field(15);
    }
    Ok(total)
}

fn clock_ticks() -> i64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}
