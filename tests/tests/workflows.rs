//! The CI and release workflows, checked by tools someone else wrote: zizmor (security audit,
//! offline) and check-jsonschema with its vendored GitHub workflow schema. actionlint runs in
//! the workflows themselves (its PyPI package downloads its binary from GitHub at install
//! time, which this machine cannot reach). Then what zizmor does not enforce: every action
//! pinned by a full commit SHA with its version beside it, and read-only default permissions.

use std::path::PathBuf;
use std::process::Command;

use stella_e2e::{root, run};

fn workflows() -> Vec<PathBuf> {
    let dir = root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 2, "ci.yml and release.yml: {files:?}");
    files
}

#[test]
fn zizmor_finds_nothing_and_the_schema_accepts_every_workflow() {
    let out = run(Command::new("zizmor")
        .args(["--offline", "--min-severity", "low", "--format", "plain"])
        .arg(root().join(".github/workflows")));
    assert!(out.contains("No findings"), "{out}");
    run(Command::new("check-jsonschema").args(["--builtin-schema", "vendor.github-workflows"]).args(workflows()));
}

#[test]
fn every_action_is_pinned_by_commit_and_permissions_default_to_read() {
    for file in workflows() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix("uses: ")) {
            let (action, rest) =
                line.split_once('@').unwrap_or_else(|| panic!("{}: {line} has no ref", file.display()));
            let (sha, comment) = rest.split_once(" # ").unwrap_or((rest, ""));
            assert!(
                sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{}: {action} is not pinned by a commit SHA ({rest})",
                file.display()
            );
            assert!(comment.starts_with('v'), "{}: {action}@{sha} has no version comment", file.display());
        }
        assert!(
            text.contains("\npermissions:\n  contents: read\n"),
            "{}: default permissions must be read-only",
            file.display()
        );
        assert!(
            text.matches("actions/checkout@").count() == text.matches("persist-credentials: false").count(),
            "{}: every checkout drops its credentials",
            file.display()
        );
    }
}
