//! `stella`: the StellaOps command-line client. It does what the console's Welcome wizard does,
//! over the public HTTP API: sign in or use a token, import an SBOM, list findings, start an
//! export, register and run task packs. Every command prints a readable summary, or with
//! `--json` the API's own JSON for scripts.

mod api;

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use api::Api;

#[derive(Parser)]
#[command(name = "stella", version, about = "The StellaOps command-line client")]
struct Cli {
    /// The API (stella-api).
    #[arg(long, env = "STELLA_URL", default_value = "http://localhost:8081", global = true)]
    url: String,
    /// An API or session token; `stella login` prints one.
    #[arg(long, env = "STELLA_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// stella-export; default: the API's host on port 8088.
    #[arg(long, env = "STELLA_EXPORT_URL", global = true)]
    export_url: Option<String>,
    /// stella-task-runner; default: the API's host on port 8083.
    #[arg(long, env = "STELLA_TASK_RUNNER_URL", global = true)]
    task_runner_url: Option<String>,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in with a password (read from stdin) and print a session token (12 h).
    Login {
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long, default_value = "admin")]
        username: String,
        /// Read the password from this file instead of stdin.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Who the token belongs to.
    Whoami,
    /// Import an SBOM (SPDX 2.3 or CycloneDX JSON) as a scan.
    Import {
        file: PathBuf,
        /// The scan's name; default: the file name.
        #[arg(long)]
        name: Option<String>,
        /// Wait until the policy verdict exists (at most this many seconds).
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "60")]
        wait: Option<u64>,
        /// With --wait: exit 3 unless the verdict is `pass` (for CI gates; 2 is a usage error).
        #[arg(long, requires = "wait")]
        require_pass: bool,
    },
    /// List findings, worst first.
    Findings {
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        package: Option<String>,
        #[arg(long)]
        advisory: Option<String>,
        #[arg(long)]
        scan: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, default_value_t = 0)]
        offset: i64,
    },
    /// Export the tenant's data (or one scan's) through stella-export.
    Export {
        /// Formats: json, csv, spdx, cyclonedx, openvex; default: every enabled one.
        #[arg(long = "format")]
        formats: Vec<String>,
        #[arg(long)]
        scan: Option<i64>,
        /// Wait for the files (at most this many seconds).
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "120")]
        wait: Option<u64>,
        /// With --wait: download every file into this directory.
        #[arg(long, requires = "wait")]
        download: Option<PathBuf>,
    },
    /// Task packs.
    #[command(subcommand)]
    Pack(Pack),
}

#[derive(Subcommand)]
enum Pack {
    /// Register a task pack (JSON) with the tenant.
    Push { file: PathBuf },
    /// Run the newest version of a registered pack.
    Run {
        name: String,
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "120")]
        wait: Option<u64>,
    },
}

/// Exit status of `import --require-pass` when the verdict is not `pass`: not 2, which is
/// clap's for a usage error, so a CI gate can tell "the policy said no" from a mistyped flag.
const VERDICT_NOT_PASS: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("stella: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let api = Api::new(&cli.url, cli.token.clone());
    let export = Api::new(&cli.export_url.clone().unwrap_or_else(|| api::with_port(&cli.url, 8088)), cli.token.clone());
    let runner =
        Api::new(&cli.task_runner_url.clone().unwrap_or_else(|| api::with_port(&cli.url, 8083)), cli.token.clone());
    let out = |v: &Value, summary: String| {
        if cli.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{summary}");
        }
    };
    match cli.command {
        Command::Login { tenant, username, password_file } => {
            let password = match password_file {
                Some(p) => std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
                None if std::io::stdin().is_terminal() => {
                    bail!("give the password with --password-file FILE, or on standard input (echo ... | stella login)")
                }
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("reading the password from stdin")?;
                    s
                }
            };
            let body =
                json!({"tenant": tenant, "username": username, "password": password.trim_end_matches(['\n', '\r'])});
            let issued = api.post_json(api::LOGIN, &body)?;
            out(&issued, issued["token"].as_str().unwrap_or_default().to_string());
        }
        Command::Whoami => {
            let me = api.get("/api/v1/whoami")?;
            out(
                &me,
                format!("{} @ {} ({}), token {}", me["username"], me["tenant"], me["role"], me["tokenName"])
                    .replace('"', ""),
            );
        }
        Command::Import { file, name, wait, require_pass } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = name.unwrap_or_else(|| {
                let f = file.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
                f.split('.').next().unwrap_or(&f).to_string()
            });
            let mut scan = api.post_bytes(&format!("/api/v1/scans?name={}", api::encode(&name)), bytes)?;
            if let Some(seconds) = wait {
                let id = scan["id"].as_i64().context("the API answered a scan without an id")?;
                let timeout = format!("scan {id} has no policy verdict after {seconds} s (is stella-policy running?)");
                scan = poll(seconds, &timeout, || {
                    let s = api.get(&format!("/api/v1/scans/{id}"))?;
                    Ok((!s["verdict"].is_null()).then_some(s))
                })?;
            }
            let verdict = scan["verdict"]["outcome"].as_str().unwrap_or("pending").to_string();
            out(
                &scan,
                format!(
                    "scan {} {}: {} findings, verdict {verdict}",
                    scan["id"],
                    scan["name"].as_str().unwrap_or_default(),
                    scan["findings"]["total"]
                ),
            );
            if require_pass && verdict != "pass" {
                eprintln!("stella: scan {}: the policy verdict is {verdict}, not pass", scan["id"]);
                return Ok(VERDICT_NOT_PASS);
            }
        }
        Command::Findings { severity, status, package, advisory, scan, limit, offset } => {
            let mut q = vec![format!("limit={limit}"), format!("offset={offset}")];
            for (k, v) in [("severity", severity), ("status", status), ("package", package), ("advisory", advisory)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", api::encode(&v)));
                }
            }
            if let Some(s) = scan {
                q.push(format!("scan={s}"));
            }
            let list = api.get(&format!("/api/v1/findings?{}", q.join("&")))?;
            let mut lines = vec![format!(
                "{:<8} {:<6} {:<10} {:<20} {:<45} {}",
                "ID", "SCAN", "SEVERITY", "STATUS", "PACKAGE", "ADVISORY"
            )];
            for f in list["items"].as_array().into_iter().flatten() {
                lines.push(format!(
                    "{:<8} {:<6} {:<10} {:<20} {:<45} {}",
                    f["id"].to_string(),
                    f["scan"].to_string(),
                    f["severity"].as_str().unwrap_or_default(),
                    f["status"].as_str().unwrap_or_default(),
                    format!(
                        "{}@{}",
                        f["package"].as_str().unwrap_or_default(),
                        f["version"].as_str().unwrap_or_default()
                    ),
                    f["linkset"]["key"].as_str().unwrap_or_default()
                ));
            }
            lines.push(format!("{} findings", list["total"]));
            out(&list, lines.join("\n"));
        }
        Command::Export { formats, scan, wait, download } => {
            let formats = if formats.is_empty() {
                export.get("/api/v1/exports/formats")?["formats"].clone()
            } else {
                json!(formats)
            };
            let mut body = json!({"formats": formats});
            if let Some(s) = scan {
                body["scan"] = json!(s);
            }
            let mut e = export.post_json("/api/v1/exports", &body)?;
            let id = e["id"].as_i64().context("the export service answered without an id")?;
            if let Some(seconds) = wait {
                let timeout = format!("export {id} is not finished after {seconds} s (is stella-export running?)");
                e = poll(seconds, &timeout, || {
                    let e = export.get(&format!("/api/v1/exports/{id}"))?;
                    Ok(matches!(e["status"].as_str(), Some("succeeded" | "failed")).then_some(e))
                })?;
                // A failure is printed like a success (--json gets the record), then exits 1.
                if e["status"] == "failed" {
                    out(&e, format!("export {id}: failed"));
                    eprintln!(
                        "stella: export {id} failed: {}",
                        e["error"].as_str().unwrap_or("see stella-export's log")
                    );
                    return Ok(1);
                }
                if let Some(dir) = &download {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                    for f in e["files"].as_array().into_iter().flatten() {
                        let name = f["name"].as_str().context("a file without a name")?;
                        if name.contains('/') || name.starts_with('.') {
                            bail!("export {id}: refusing the file name {name:?}");
                        }
                        let bytes = export.get_bytes(&format!("/api/v1/exports/{id}/files/{}", api::encode(name)))?;
                        std::fs::write(dir.join(name), bytes)
                            .with_context(|| format!("writing {}", dir.join(name).display()))?;
                    }
                }
            }
            let files = e["files"].as_array().map_or(0, Vec::len);
            out(&e, format!("export {id}: {}, {files} files", e["status"].as_str().unwrap_or("queued")));
        }
        Command::Pack(Pack::Push { file }) => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let pack = runner.post_bytes("/api/v1/packs", bytes)?;
            out(
                &pack,
                format!(
                    "pack {} {} registered ({} steps)",
                    pack["name"].as_str().unwrap_or_default(),
                    pack["version"].as_str().unwrap_or_default(),
                    pack["steps"]
                ),
            );
        }
        Command::Pack(Pack::Run { name, wait }) => {
            let mut r = runner.post_bytes(&format!("/api/v1/packs/{}/runs", api::encode(&name)), Vec::new())?;
            let id = r["id"].as_i64().context("the task runner answered without a run id")?;
            if let Some(seconds) = wait {
                let timeout = format!("run {id} is not finished after {seconds} s (is stella-task-runner running?)");
                r = poll(seconds, &timeout, || {
                    let r = runner.get(&format!("/api/v1/runs/{id}"))?;
                    Ok(matches!(r["status"].as_str(), Some("succeeded" | "failed")).then_some(r))
                })?;
                if r["status"] == "failed" {
                    out(&r, format!("run {id} of {name}: failed"));
                    eprintln!("stella: run {id} of {name} failed: {}", r["reason"].as_str().unwrap_or_default());
                    return Ok(1);
                }
            }
            out(&r, format!("run {id} of {name}: {}", r["status"].as_str().unwrap_or_default()));
        }
    }
    Ok(0)
}

/// Calls `check` every half second until it gives a value or `seconds` pass; then the error is
/// `timeout`. An error of `check` itself (a refused token, a failed job) ends the wait as it is.
fn poll(
    seconds: u64,
    timeout: &str,
    mut check: impl FnMut() -> anyhow::Result<Option<Value>>,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("gave up: {timeout}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
