//! The optional Compose files beside the quickstart: `observability.yml` (an OpenTelemetry
//! collector) and `s3.yml` (an external S3 store). Docker Compose itself reads them: off unless
//! named, the collector's upstream image accepted only when given and pinned by digest, and the
//! S3 settings given to every service that writes the object store. And every shell script
//! the project ships (the quickstart's and the bundle's loader) passes `shellcheck` and uses no
//! GNU-only flag, so it runs on macOS's Docker Desktop as on Linux.

use std::path::Path;
use std::process::Command;

use stella_e2e::output;

/// `docker-compose config` of the given files in a copy of deploy/compose, as JSON.
fn config(dir: &Path, files: &[&str], env: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new("docker-compose");
    for f in files {
        cmd.args(["-f", f]);
    }
    cmd.arg("config").current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.envs(env.iter().copied());
    let out = output(&mut cmd);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let json = output(
        Command::new("python3")
            .args(["-c", "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"])
            .stdin(std::fs::File::open(write(dir, "config.out", &out.stdout)).unwrap()),
    );
    Ok(serde_json::from_slice(&json.stdout).expect("docker-compose config is YAML"))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn compose_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    stella_e2e::copy_dir(&stella_e2e::root().join("deploy/compose"), dir.path());
    std::fs::create_dir_all(dir.path().join(".secrets")).unwrap();
    for (s, _) in xtask::deploy::compose::SECRETS {
        std::fs::write(dir.path().join(".secrets").join(s), "x").unwrap();
    }
    dir
}

#[test]
fn the_collector_is_optional_and_pinned_by_digest() {
    let dir = compose_dir();
    let default = config(dir.path(), &["docker-compose.yml"], &[]).unwrap();
    assert!(default["services"].get("otel-collector").is_none(), "the collector runs by default");

    let files = ["docker-compose.yml", "observability.yml"];
    let refused = config(dir.path(), &files, &[]).unwrap_err();
    assert!(refused.contains("STELLA_OTEL_COLLECTOR_IMAGE"), "{refused}");

    let pinned = format!("otel/opentelemetry-collector-contrib:0.119.0@sha256:{}", "a".repeat(64));
    let with = config(dir.path(), &files, &[("STELLA_OTEL_COLLECTOR_IMAGE", &pinned)]).unwrap();
    let collector = &with["services"]["otel-collector"];
    assert_eq!(collector["image"], pinned.as_str());
    // Hardened like every container of the stack, on its network.
    assert_eq!(collector["user"], "65532:65532");
    assert_eq!(collector["read_only"], true);
    assert_eq!(collector["cap_drop"], serde_json::json!(["ALL"]));
    assert!(collector["networks"].get("stella-net").is_some(), "{collector}");
    // Its configuration is the committed file, and receives OTLP over HTTP where .env points.
    let volume = collector["volumes"][0].to_string();
    assert!(volume.contains("otel-collector.yaml"), "{volume}");
    let yaml = std::fs::read_to_string(dir.path().join("otel-collector.yaml")).unwrap();
    assert!(yaml.contains("0.0.0.0:4318"), "{yaml}");
    let example = std::fs::read_to_string(dir.path().join(".env.example")).unwrap();
    assert!(example.contains("OTEL_EXPORTER_OTLP_ENDPOINT="), "every service reads the endpoint from .env");
}

#[test]
fn the_s3_file_reaches_every_service_that_writes_the_object_store() {
    let dir = compose_dir();
    let default = config(dir.path(), &["docker-compose.yml"], &[]).unwrap();
    let services = default["services"].as_object().unwrap();
    let writers: Vec<&String> = services
        .iter()
        .filter(|(_, s)| s["volumes"].as_array().into_iter().flatten().any(|v| v.to_string().contains("stella-state")))
        .map(|(name, _)| name)
        .collect();
    assert!(writers.len() >= 2, "{writers:?}");

    let files = ["docker-compose.yml", "s3.yml"];
    let refused = config(dir.path(), &files, &[]).unwrap_err();
    assert!(refused.contains("STELLA_S3_URL"), "{refused}");

    let env = [
        ("STELLA_S3_URL", "s3://stella-exports/prod"),
        ("STELLA_S3_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "example-secret"),
    ];
    let with = config(dir.path(), &files, &env).unwrap();
    for (name, service) in with["services"].as_object().unwrap() {
        let url = &service["environment"]["STELLA_OBJECT_STORE_URL"];
        if writers.contains(&name) {
            assert_eq!(url, "s3://stella-exports/prod", "{name}");
            assert_eq!(service["environment"]["STELLA_OBJECT_STORE_REGION"], "eu-west-1", "{name}");
            assert_eq!(service["environment"]["AWS_ACCESS_KEY_ID"], "AKIAEXAMPLE", "{name}");
        } else {
            assert_eq!(url, &default["services"][name]["environment"]["STELLA_OBJECT_STORE_URL"], "{name} changed");
        }
    }
}

/// Every tracked shell script, by its `#!` line: the scripts of deploy/compose (the `stella`
/// wrapper has no `.sh`), the bundle's `load.sh`, `.ci/run`, any added later.
fn shell_scripts() -> Vec<std::path::PathBuf> {
    let root = stella_e2e::root();
    let listed = stella_e2e::run(Command::new("git").args(["ls-files"]).current_dir(&root));
    listed
        .lines()
        .map(|l| root.join(l))
        .filter(|path| {
            let mut head = [0u8; 32];
            let n = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut head)).unwrap_or(0);
            let first = String::from_utf8_lossy(&head[..n]);
            first.starts_with("#!") && (first.contains("bash") || first.contains("/sh"))
        })
        .collect()
}

#[test]
fn every_shipped_shell_script_passes_shellcheck() {
    let scripts = shell_scripts();
    assert!(scripts.len() >= 5, "found only {scripts:?}");
    // Every severity, info included: the scripts are short enough to keep clean.
    let out = output(Command::new("shellcheck").args(["--severity=style", "--format=gcc"]).args(&scripts));
    assert!(
        out.status.success(),
        "shellcheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Flags that GNU tools take and macOS's BSD tools do not (or take differently).
const GNU_ONLY: &[(&str, &str)] = &[
    ("sed -i", "write to a temporary file and rename it"),
    ("readlink -f", "use `cd \"$(dirname …)\" && pwd`"),
    ("date -d", "BSD date has -j -f"),
    ("stat -c", "BSD stat has -f"),
    ("grep -P", "BSD grep has no PCRE"),
    ("base64 -w", "BSD base64 has -b"),
    ("find -printf", "use find … | sed"),
    ("sort -V", "compare versions with awk"),
    ("xargs -r", "BSD xargs has no -r"),
    ("mktemp --", "BSD mktemp takes no long options"),
    ("tar --zstd", "BSD tar reads zstd by itself; pipe through zstd -dc"),
];

#[test]
fn no_shipped_shell_script_uses_a_gnu_only_flag() {
    for script in shell_scripts() {
        let text = std::fs::read_to_string(&script).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split(" #").next().unwrap_or(line);
            if code.trim_start().starts_with('#') {
                continue;
            }
            for (flag, instead) in GNU_ONLY {
                assert!(
                    !code.contains(flag),
                    "{}:{}: `{flag}` is GNU-only ({instead}): {line}",
                    script.display(),
                    n + 1
                );
            }
        }
    }
}
