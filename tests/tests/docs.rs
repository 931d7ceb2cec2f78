//! The install pages' commands, run as written. Every `sh` block of the quickstart page, of the
//! console onboarding page (its `stella` CLI walk) and of the air-gap page is taken from the
//! Markdown and run in order, in bash with `set -euo
//! pipefail`, on this machine. A reader's own edits are spelled out as substitutions (their key
//! and registry instead of the page's example paths, what they type at the reset and restore
//! prompts), each
//! of which must still match the page; commands that cannot run here are skipped by name with
//! the reason. A page that changes so that a substitution no longer applies fails this test.

use std::path::{Path, PathBuf};
use std::process::Command;

use stella_e2e::output;
use stella_e2e::registry::LocalRegistry;

/// The `sh` blocks of a Markdown page, in order.
fn blocks(page: &str) -> Vec<String> {
    let text = std::fs::read_to_string(stella_e2e::root().join(page)).unwrap();
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// How a reader adapts a block: replacements that must each apply, and command lines (by their
/// start) that cannot run here, with why.
struct Edits<'a> {
    replace: &'a [(&'a str, String)],
    skip: &'a [(&'a str, &'a str)],
}

fn adapt(page: &str, block: &str, edits: &Edits) -> (String, Vec<String>) {
    let mut text = block.to_string();
    for (from, to) in edits.replace {
        if text.contains(from) {
            text = text.replace(from, to);
        }
    }
    let mut skipped = Vec::new();
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| match edits.skip.iter().find(|(start, _)| line.trim_start().starts_with(start)) {
            Some((start, why)) => {
                skipped.push(format!("{page}: skipped `{start}`: {why}"));
                false
            }
            None => true,
        })
        .collect();
    (kept.join("\n") + "\n", skipped)
}

/// Runs the page's blocks `range` as one bash script in `dir`; panics with everything printed.
fn run_script(what: &str, script: &str, dir: &Path, env: &[(&str, String)]) -> String {
    let full = format!("set -euo pipefail\n{script}");
    // Without the test's per-package cargo variables: the pages run `cargo xtask` as a user does.
    let out = output(
        xtask::shell::without_package_vars(&mut Command::new("bash"))
            .arg("-c")
            .arg(&full)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (*k, v))),
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed ({}):\n--- script ---\n{full}\n--- output ---\n{text}", out.status);
    text
}

/// Every replacement of `edits` applies somewhere in `blocks` (the page still says it).
fn all_apply(page: &str, blocks: &[String], edits: &Edits) {
    for (from, _) in edits.replace {
        assert!(blocks.iter().any(|b| b.contains(from)), "{page} no longer says `{from}`: update this test with it");
    }
    for (start, _) in edits.skip {
        assert!(
            blocks.iter().any(|b| b.lines().any(|l| l.trim_start().starts_with(start))),
            "{page} no longer has `{start}`: update this test with it"
        );
    }
}

/// Stops a Compose stack (and the local registry quickstart.sh started) when dropped.
struct Down {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Drop for Down {
    fn drop(&mut self) {
        if self.dir.join("docker-compose.yml").exists() {
            let _ = Command::new("docker-compose")
                .args(["down", "-v", "--timeout", "5"])
                .current_dir(&self.dir)
                .envs(self.env.iter().map(|(k, v)| (*k, v)))
                .output();
        }
        if let Ok(pid) = std::fs::read_to_string(self.dir.join(".registry/pid")) {
            let _ = Command::new("kill").arg(pid.trim()).output();
        }
    }
}

fn assert_ports_free() {
    for port in 8080..=8090 {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is in use: the pages' commands use the quickstart's default ports; stop what holds it"
        );
    }
}

#[test]
fn the_quickstart_and_air_gap_pages_run_as_written() {
    assert!(Command::new("jq").arg("--version").output().is_ok(), "the quickstart page uses jq: apt-get install jq");
    let root = stella_e2e::root();
    let layout = xtask::images::default_out();
    let key = root.join("target/test-signing-key/cosign.key");
    let public = root.join("target/test-signing-key/cosign.pub");
    assert!(key.exists(), "the images must be built and signed first (cargo xtask test does both)");

    // --- docs/install/compose-quickstart.md, in a copy of the checkout's deploy/compose -------
    assert_ports_free();
    let page = "docs/install/compose-quickstart.md";
    let quickstart = blocks(page);
    let edits = Edits {
        replace: &[
            ("./reset.sh ", "echo delete | ./reset.sh ".to_string()),
            ("./restore.sh ", "echo restore | ./restore.sh ".to_string()),
            ("backups/stella-backup-<time>.tar.gz", "backups/stella-backup-*.tar.gz".to_string()),
        ],
        skip: &[("cargo xtask images", "the harness built and signed target/oci before the tests")],
    };
    all_apply(page, &quickstart, &edits);
    let work = tempfile::Builder::new().prefix("stella-docs-").tempdir().unwrap();
    let compose = work.path().join("deploy/compose");
    stella_e2e::copy_dir(&root.join("deploy/compose"), &compose);
    std::fs::create_dir_all(work.path().join("target")).unwrap();
    std::os::unix::fs::symlink(&layout, work.path().join("target/oci")).unwrap();
    let env = vec![
        ("COMPOSE_PROJECT_NAME", format!("stelladocs{}", std::process::id())),
        ("STELLA_WORKSPACE", root.display().to_string()),
        ("STELLA_LOCAL_REGISTRY_PORT", stella_e2e::free_port().to_string()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", std::env::var("HOME").unwrap_or_default()),
    ];
    let _down = Down { dir: compose.clone(), env: env.clone() };
    let mut skipped = Vec::new();
    let mut script = String::new();
    for block in &quickstart {
        let (text, s) = adapt(page, block, &edits);
        script.push_str(&text);
        skipped.extend(s);
    }
    let printed = run_script(page, &script, work.path(), &env);
    // What the reader sees: the seeded scans with their verdicts, the critical findings, both
    // sources' advisories for the linkset, and the stack back after the restore.
    for expected in ["demo-payments", "demo-web", "\"fail\"", "log4j-core", "seed-osv-a", "seed-osv-b"] {
        assert!(printed.contains(expected), "the page's commands did not show `{expected}`:\n{printed}");
    }
    assert_eq!(printed.matches("StellaOps is running").count(), 2, "started, then restored:\n{printed}");
    // The CLI lines, through `./stella` (the pinned stella-cli image, run as the caller): the
    // token from the admin's password file, and an export downloaded into the directory.
    assert!(printed.contains("critical"), "`./stella findings --severity critical` listed nothing:\n{printed}");
    let csv = std::fs::read_to_string(compose.join("exports/findings.csv")).expect("./stella export --download");
    assert!(csv.lines().count() > 1, "exports/findings.csv holds no finding: {csv}");

    // --- docs/console/onboarding.md: its CLI walk, in the same Compose directory -------------
    let page = "docs/console/onboarding.md";
    let walk = blocks(page);
    let edits = Edits { replace: &[], skip: &[] };
    all_apply(page, &walk, &edits);
    // The reader's own files: an SBOM, and the pack the console offers for download.
    let seed = root.join("services/core/seed");
    std::fs::copy(seed.join("sboms/sample-checkout.cdx.json"), compose.join("sbom.cdx.json")).unwrap();
    std::fs::copy(seed.join("packs/export-to-production.json"), compose.join("export-to-production.json")).unwrap();
    let mut script = String::new();
    for block in &walk {
        script.push_str(&adapt(page, block, &edits).0);
    }
    let printed = run_script(page, &script, &compose, &env);
    for expected in ["admin", "succeeded"] {
        assert!(printed.contains(expected), "{page}'s CLI walk did not show `{expected}`:\n{printed}");
    }
    drop(_down);

    // --- docs/install/airgap.md: the connected side at the checkout, the rest at a "site" -----
    assert_ports_free();
    let page = "docs/install/airgap.md";
    let airgap = blocks(page);
    let registry = LocalRegistry::new();
    let site = tempfile::Builder::new().prefix("stella-site-").tempdir().unwrap();
    let trusted = site.path().join("trusted-cosign.pub");
    std::fs::copy(&public, &trusted).unwrap();
    let edits = Edits {
        replace: &[
            ("release/cosign.key", key.display().to_string()),
            ("release/cosign.pub", public.display().to_string()),
            ("/path/to/trusted/cosign.pub", trusted.display().to_string()),
            ("registry.site.internal:5000", registry.host.clone()),
            (" [--prefix stella] [--insecure] [--ca-file site-ca.pem]", String::new()),
        ],
        skip: &[
            ("cargo xtask images", "the harness built and signed target/oci with this key before the tests"),
            ("helm install", "no Kubernetes cluster here; helm.rs renders and validates the same values files"),
            (
                "./load.sh --to docker",
                "bundle.rs (load_to_docker_needs_no_registry_and_leaves_images_pinned_by_digest) runs it on a free port",
            ),
        ],
    };
    all_apply(page, &airgap, &edits);
    let (connected, s) = adapt(page, &airgap[0], &edits);
    skipped.extend(s);
    run_script(&format!("{page} (connected side)"), &connected, &root, &env);
    // What `cargo xtask bundle` writes beside the archive travels with it.
    let out = root.join("target/bundle");
    for name in
        ["stella-bundle-v0.1.0.tar.zst", "stella-load-amd64", "stella-load-arm64", "SHA256SUMS", "SHA256SUMS.sig"]
    {
        std::fs::copy(out.join(name), site.path().join(name)).unwrap();
    }
    let mut script = String::new();
    for block in &airgap[1..] {
        let (text, s) = adapt(page, block, &edits);
        script.push_str(&text);
        skipped.extend(s);
    }
    let site_compose = site.path().join("bundle/stella-bundle-v0.1.0/compose");
    let _down = Down { dir: site_compose, env: env.clone() };
    let printed = run_script(&format!("{page} (disconnected side)"), &script, site.path(), &env);
    assert!(printed.contains(&registry.host), "load.sh did not name the site's registry:\n{printed}");
    assert!(printed.contains("StellaOps is running"), "the bundle's quickstart did not start:\n{printed}");
    for line in &skipped {
        eprintln!("{line}");
    }
}

/// The troubleshooting matrix quotes messages our tools print: the first code span of each
/// row's "What you see" cell is searched, verbatim, in the sources that print messages (the
/// services, the CLI, xtask, the distribution crate, the Compose and bundle scripts), comments
/// left out. A reworded message fails here until the page says what the tool now prints.
#[test]
fn the_troubleshooting_matrix_quotes_real_messages() {
    let root = stella_e2e::root();
    let page = std::fs::read_to_string(root.join("docs/operations/troubleshooting.md")).unwrap();
    let mut sources = String::new();
    for dir in ["services", "cli", "xtask/src", "crates", "deploy/compose", "support"] {
        collect(&root.join(dir), &mut sources);
    }
    let mut checked = 0;
    for row in page.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| Symptom")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let seen = cells.get(1).copied().unwrap_or_default();
        let Some(quoted) = seen.split('`').nth(1) else { panic!("row without a quoted message: {row}") };
        assert!(sources.contains(quoted), "the troubleshooting page quotes `{quoted}`, which no tool prints any more");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} rows");
}

fn collect(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if let Some(comment) = path.extension().and_then(|e| match e.to_str() {
            Some("rs") => Some("//"),
            Some("sh") => Some("#"),
            _ => None,
        }) {
            // Code only: a message that survives only in a comment is printed by nothing.
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if !line.trim_start().starts_with(comment) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
}

/// ARCHITECTURE.md names only files that exist: every code span that looks like a file (`.rs`,
/// `.sh`, `.sql`, `.toml`, `.json`, `.py`, `.yaml`, `.md`) is a tracked file of the repository,
/// by its path or, for the short names a section uses, by the end of one.
#[test]
fn architecture_names_only_files_that_exist() {
    let root = stella_e2e::root();
    let page = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let tracked = stella_e2e::run(std::process::Command::new("git").args(["ls-files"]).current_dir(&root));
    let files: Vec<&str> = tracked.lines().collect();
    let mut checked = 0;
    let mut missing = Vec::new();
    for span in page.split('`').skip(1).step_by(2) {
        let name = span.trim_end_matches(['/', ',', ':']);
        let is_file = [".rs", ".sh", ".sql", ".toml", ".json", ".py", ".yaml", ".md"].iter().any(|e| name.ends_with(e))
            && !name.contains(['<', '*', ' ', '{']);
        // What the pipeline writes, not a source of the repository.
        let output = ["index.json", "images.json", "base.json", "loaded/values-registry.yaml", "loaded/compose.env"]
            .contains(&name);
        if !is_file || output {
            continue;
        }
        checked += 1;
        let found = files.iter().any(|f| *f == name || f.ends_with(&format!("/{name}")));
        if !found {
            missing.push(name.to_string());
        }
    }
    assert!(checked >= 40, "only {checked} file names checked");
    assert!(missing.is_empty(), "ARCHITECTURE.md names files that do not exist: {missing:?}");
}
