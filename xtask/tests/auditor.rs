//! An auditor's rebuild from the checkouts auditors really have: each gives the full clone's
//! digests or a refusal that says why and what to do, never other digests silently.
//!
//! Every test makes its own origin repository from this workspace's files: commit A holds them
//! all, commit B on top changes only `docs/`, as a release whose last commit is a docs fix. A
//! full clone of it builds A's revision and epoch. Builds use fake binaries: the whole pipeline
//! (plan, layers, labels, SBOM, provenance, digests) in seconds, without compiling; the real
//! rebuild with compiled binaries is `tests/tests/reproducible.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xtask::assemble::Built;

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
const A_TIME: u64 = 1_700_000_000;
const B_TIME: u64 = 1_700_086_400;

struct Origin {
    dir: tempfile::TempDir,
    /// Commit A: the last one that changed an input.
    a: String,
}

impl Origin {
    fn path(&self) -> PathBuf {
        self.dir.path().join("origin")
    }

    /// A new directory beside the origin.
    fn beside(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").args(args).current_dir(dir).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(dir: &Path, time: u64, message: &str) -> String {
    let date = format!("{time} +0000");
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Auditor Test",
            "-c",
            "user.email=auditor@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(["commit", "--quiet", "--no-verify", "-m", message])
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    git(dir, &["rev-parse", "HEAD"])
}

/// The origin: A = this workspace's files, B = A plus a documentation change.
fn origin() -> Origin {
    let dir = tempfile::Builder::new().prefix("stella-auditor-").tempdir().unwrap();
    let origin = dir.path().join("origin");
    xtask::reproduce::copy_files(&xtask::shell::root(), &origin).unwrap();
    git(&origin, &["init", "--quiet", "--initial-branch=main"]);
    git(&origin, &["add", "--all"]);
    let a = commit(&origin, A_TIME, "A: the inputs");
    let doc = origin.join("docs/auditor-note.md");
    std::fs::write(&doc, "A documentation change, no input of any image.\n").unwrap();
    git(&origin, &["add", "docs/auditor-note.md"]);
    commit(&origin, B_TIME, "B: docs only");
    Origin { dir, a }
}

/// `xtask ARGS` in `checkout`, with only the pins given (none from this test's environment).
fn xtask(checkout: &Path, args: &[&str], pins: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(XTASK);
    cmd.args(args)
        .current_dir(checkout)
        .env_remove("STELLA_GIT_COMMIT")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove(xtask::sign::KEY_ENV)
        // The layer cache of this workspace: the Debian and base layers are not encoded again.
        .env("CARGO_TARGET_DIR", xtask::workspace::target_dir());
    for (k, v) in pins {
        cmd.env(k, v);
    }
    cmd.output().expect("xtask runs")
}

/// One image, one platform, fake binaries: the digests that depend on revision and epoch.
fn build(checkout: &Path, out: &Path, pins: &[(&str, String)]) -> Result<Built, String> {
    let out = out.to_str().unwrap();
    let args =
        ["images", "--fake-binaries", "--image", "stella-api", "--platform", "linux/amd64", "--json", "--out", out];
    let run = xtask(checkout, &args, pins);
    if !run.status.success() {
        return Err(String::from_utf8_lossy(&run.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&run.stdout).expect("images --json prints the record"))
}

fn pins_of(record: &Built) -> Vec<(&'static str, String)> {
    vec![("STELLA_GIT_COMMIT", record.revision.clone()), ("SOURCE_DATE_EPOCH", record.epoch.to_string())]
}

/// The full clone's record: revision A, A's date, every input digest.
fn full_clone_record(origin: &Origin) -> Built {
    let full = origin.beside("full");
    git(origin.dir.path(), &["clone", "--quiet", "--no-local", "origin", "full"]);
    let record = build(&full, &origin.beside("full-oci"), &[]).expect("a full clone builds");
    assert_eq!(record.revision, origin.a, "the revision is not the last commit that changed an input");
    assert_eq!(record.epoch, A_TIME, "the epoch is not that commit's time");
    record
}

fn digest(record: &Built) -> &str {
    &record.images[0].digest
}

#[test]
fn a_full_clone_builds_the_last_input_commit_and_records_every_input() {
    let origin = origin();
    let record = full_clone_record(&origin);
    let tracked = git(&origin.path(), &["ls-files"]);
    let inputs = tracked.lines().filter(|p| xtask::plan::source::is_input(p)).count();
    assert!(inputs > 100, "only {inputs} input files");
    assert_eq!(record.sources.len(), inputs, "the record does not hold every input file's digest");
    assert!(!record.sources.contains_key("docs/auditor-note.md"), "documentation was recorded as an input");
    // The same clone builds the same digest again.
    let again = build(&origin.beside("full"), &origin.beside("full-oci-2"), &[]).unwrap();
    assert_eq!(digest(&again), digest(&record));
}

#[test]
fn a_shallow_clone_whose_head_changed_only_docs_refuses_then_rebuilds_by_the_record() {
    let origin = origin();
    let record = full_clone_record(&origin);
    let url = format!("file://{}", origin.path().display());
    git(origin.dir.path(), &["clone", "--quiet", "--depth", "1", &url, "shallow"]);
    let shallow = origin.beside("shallow");

    let refused = build(&shallow, &origin.beside("shallow-oci"), &[]).expect_err("a shallow clone built");
    for part in
        ["shallow clone", "git fetch --unshallow", "SOURCE_DATE_EPOCH", "STELLA_GIT_COMMIT", "rebuild --compare"]
    {
        assert!(refused.contains(part), "the refusal does not mention {part:?}:\n{refused}");
    }
    let plan = xtask(&shallow, &["plan", "--json"], &[]);
    assert!(!plan.status.success(), "`plan` in a shallow clone gave a revision");

    // The rebuild's way: the record's values, after every input file is checked.
    let pinned = prepare(&origin, &record, &shallow);
    assert_eq!(pinned.source, "copy", "git of a depth-1 clone does not hold A");
    assert_eq!(pinned.inputs_checked, record.sources.len());
    let rebuilt = build(&origin.beside("src"), &origin.beside("rebuilt-oci"), &pins_of(&record)).unwrap();
    assert_eq!(digest(&rebuilt), digest(&record), "the shallow clone's rebuild gives other digests");
    // So does pinning by hand, as the refusal says.
    let by_hand = build(&shallow, &origin.beside("pinned-oci"), &pins_of(&record)).unwrap();
    assert_eq!(digest(&by_hand), digest(&record));
}

#[test]
fn a_source_archive_refuses_then_rebuilds_by_the_record_and_a_changed_file_is_named() {
    let origin = origin();
    let record = full_clone_record(&origin);
    let archive = origin.beside("archive");
    std::fs::create_dir_all(&archive).unwrap();
    let tar = Command::new("sh")
        .args(["-c", "git -C \"$1\" archive HEAD | tar -x -C \"$2\"", "sh"])
        .arg(origin.path())
        .arg(&archive)
        .status()
        .unwrap();
    assert!(tar.success());

    let refused = build(&archive, &origin.beside("archive-oci"), &[]).expect_err("an archive built without pins");
    for part in ["not a git checkout", "STELLA_GIT_COMMIT and SOURCE_DATE_EPOCH", "rebuild --compare"] {
        assert!(refused.contains(part), "the refusal does not mention {part:?}:\n{refused}");
    }
    let pinned = prepare(&origin, &record, &archive);
    assert_eq!((pinned.source, pinned.inputs_checked), ("copy", record.sources.len()));
    let rebuilt = build(&origin.beside("src"), &origin.beside("rebuilt-oci"), &pins_of(&record)).unwrap();
    assert_eq!(digest(&rebuilt), digest(&record), "the archive's rebuild gives other digests");

    // An archive that is not the release's: the rebuild names the file and builds nothing.
    std::fs::write(archive.join("services/api/src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(archive.join("layers/extra.toml"), "# not in the release\n").unwrap();
    let src = origin.beside("src-2");
    let err = xtask::reproduce::prepare(&record, Path::new("images.json"), &archive, &src, false).unwrap_err();
    let err = format!("{err:#}");
    for part in
        ["changed: services/api/src/main.rs", "not in the record: layers/extra.toml", "2 files differ", &origin.a]
    {
        assert!(err.contains(part), "the refusal does not say {part:?}:\n{err}");
    }
}

#[test]
fn a_dirty_tree_builds_a_dirty_revision_and_refuses_to_claim_the_commit() {
    let origin = origin();
    let record = full_clone_record(&origin);
    let full = origin.beside("full");
    let main = full.join("services/api/src/main.rs");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str("// a local change\n");
    std::fs::write(&main, text).unwrap();

    let dirty = build(&full, &origin.beside("dirty-oci"), &[]).unwrap();
    assert_eq!(dirty.revision, format!("{}-dirty", origin.a), "a dirty tree claimed the commit");
    assert_ne!(digest(&dirty), digest(&record));
    // Pinning the commit by hand does not let a changed input pass as it.
    let refused = build(&full, &origin.beside("claimed-oci"), &pins_of(&record)).expect_err("a dirty tree claimed A");
    for part in ["inputs of", "differ from that commit", "services/api/src/main.rs", "git checkout"] {
        assert!(refused.contains(part), "the refusal does not say {part:?}:\n{refused}");
    }
    // The rebuild takes the commit from git, not the local change, and checks it.
    let pinned = prepare(&origin, &record, &full);
    assert_eq!((pinned.source, pinned.inputs_checked), ("clone", record.sources.len()));
    let rebuilt = build(&origin.beside("src"), &origin.beside("rebuilt-oci"), &pins_of(&record)).unwrap();
    assert_eq!(digest(&rebuilt), digest(&record));
}

fn prepare(origin: &Origin, record: &Built, checkout: &Path) -> xtask::reproduce::Pinned {
    let pinned = xtask::reproduce::prepare(record, Path::new("images.json"), checkout, &origin.beside("src"), false)
        .unwrap_or_else(|e| panic!("the rebuild refused {}: {e:#}", checkout.display()));
    assert_eq!((pinned.revision.as_str(), pinned.epoch), (origin.a.as_str(), A_TIME), "other values were pinned");
    pinned
}

/// Two checkouts sharing one target directory: the xtask built from one must not act on the
/// other with its own code. A copy with the same xtask code works (the tests above); a copy
/// whose xtask differs is refused, naming both trees.
#[test]
fn an_xtask_built_from_another_tree_refuses_to_act_on_this_one() {
    let dir = tempfile::Builder::new().prefix("stella-other-tree-").tempdir().unwrap();
    let other = dir.path().join("other");
    xtask::reproduce::copy_files(&xtask::shell::root(), &other).unwrap();
    let main = other.join("xtask/src/main.rs");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str("// another checkout's change\n");
    std::fs::write(&main, text).unwrap();
    let run = xtask(&other, &["plan", "--json"], &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    let built_from = xtask::shell::root().display().to_string();
    for part in ["this xtask binary was built from", built_from.as_str(), "holds other code", "CARGO_TARGET_DIR"] {
        assert!(stderr.contains(part), "the refusal does not say {part:?}: {stderr}");
    }
    assert!(stderr.contains(&other.display().to_string()), "{stderr}");
}
