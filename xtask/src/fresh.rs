//! The no-op rebuild: `cargo xtask images` with nothing changed answers from a stamp instead of
//! planning, hashing, compiling and assembling again.
//!
//! After a build of a clean checkout, `<out>.stamp.json` records what that build read and wrote
//! by file metadata, the way make, ninja and git's index decide freshness: for every input file
//! of the plan (and every directory holding one, whose change time moves when an entry is added,
//! removed or renamed) its size, inode, modification and change times; the same for the signing
//! key, the xtask binary itself, and the layout's `index.json`, `images.json`, `blobs/sha256` and
//! `bin/`; the commit at HEAD (read from `.git`, nothing spawned), since the revision baked into
//! the images follows history, not only files; the request; and the environment the build reads.
//! A rerun whose stamp matches in every field prints the recorded build and stops.
//!
//! What it does not see, by design: bytes changed in place with both times restored (a tool
//! that forges `ctime` needs root and intent; `cargo xtask verify` checks every blob), and a
//! toolchain reinstalled under the same pinned version (same compiler, same output). A dirty
//! checkout never gets a stamp: its revision does not describe it, and every build says so.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::plan::{Plan, Request};

/// Metadata of one path; `None` in a stamp when the path did not exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    len: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    mode: u32,
}

impl Meta {
    fn of(path: &Path) -> Option<Meta> {
        let m = std::fs::symlink_metadata(path).ok()?;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Some(Meta {
            len: m.len(),
            ino: m.ino(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            mode: m.mode(),
        })
    }
}

/// What a build read and wrote, as [`crate::fresh`] compares it.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    request: String,
    env: BTreeMap<String, String>,
    head: String,
    paths: BTreeMap<PathBuf, Option<Meta>>,
}

/// Where the stamp of the layout `out` lives: beside it, outside the layout proper (tools and
/// the bundle read only the layout's own files).
pub fn path(out: &Path) -> PathBuf {
    let name = out.file_name().map_or_else(|| "oci".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!("{name}.stamp.json"))
}

/// The environment a build reads: its own variables, the date and revision overrides, which
/// toolchain and target directory cargo uses and with which flags, and where tools and caches
/// are found. Not what rustup and cargo set for each process they start (`RUST_RECURSION_COUNT`
/// counts how deep a `cargo` runs, `CARGO_PKG_*` names the package run): they say how xtask
/// was started, which changes nothing it builds.
fn env() -> BTreeMap<String, String> {
    const READ: &[&str] = &[
        "SOURCE_DATE_EPOCH",
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "PATH",
        "HOME",
        "XDG_CACHE_HOME",
    ];
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .filter(|(k, _)| {
            k.starts_with("STELLA_")
                || k.starts_with("CARGO_BUILD_")
                || k.starts_with("CARGO_PROFILE_")
                || k.starts_with("CARGO_TARGET_")
                || READ.contains(&k.as_str())
        })
        // `cargo test` sets `CARGO_TARGET_TMPDIR` for the test it runs.
        .filter(|(k, _)| !crate::shell::is_per_package_cargo_var(k))
        .collect()
}

/// The commit HEAD names, read from the repository's files (a worktree's `.git` file, loose and
/// packed refs); `None` when it cannot be read, which disables the stamp.
pub fn head(root: &Path) -> Option<String> {
    let dot_git = root.join(".git");
    let git_dir = if dot_git.is_file() {
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let dir = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
        if dir.is_absolute() { dir } else { root.join(dir) }
    } else {
        dot_git
    };
    // A worktree keeps HEAD in its own directory and the refs in the common one.
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(c) => git_dir.join(c.trim()),
        Err(_) => git_dir.clone(),
    };
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let Some(name) = head.trim().strip_prefix("ref:").map(str::trim) else {
        return Some(head.trim().to_string());
    };
    for dir in [&git_dir, &common] {
        if let Ok(id) = std::fs::read_to_string(dir.join(name)) {
            return Some(id.trim().to_string());
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|l| l.strip_suffix(name).and_then(|id| id.strip_suffix(' ')).map(str::to_string))
}

/// The paths a build of `plan` depends on or wrote, besides the request and environment.
fn watched(plan: &Plan, request: &Request, root: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for file in plan.sources.keys().chain(plan.inputs.keys()) {
        let file = root.join(file);
        if let Some(dir) = file.parent() {
            paths.push(dir.to_path_buf());
        }
        paths.push(file);
    }
    paths.extend([request.catalog.clone(), request.layers_dir.clone(), root.to_path_buf()]);
    paths.extend(request.key.clone());
    paths.extend(std::env::current_exe().ok());
    for written in ["index.json", "images.json", "oci-layout", "blobs/sha256", "bin"] {
        paths.push(plan.out.join(written));
    }
    if let Ok(entries) = std::fs::read_dir(plan.out.join("bin")) {
        paths.extend(entries.flatten().map(|e| e.path()));
    }
    paths.sort();
    paths.dedup();
    paths
}

fn current(request: &Request, paths: impl IntoIterator<Item = PathBuf>, root: &Path) -> Option<Stamp> {
    Some(Stamp {
        request: format!("{request:?}"),
        env: env(),
        head: head(root)?,
        paths: paths.into_iter().map(|p| (Meta::of(&p), p)).map(|(m, p)| (p, m)).collect(),
    })
}

/// Records the build of `plan` as the layout's stamp, or removes a stale one when the build
/// cannot be stamped (a dirty checkout, no readable HEAD).
///
/// The metadata is taken first and the inputs are hashed again after it: a file edited while
/// the build ran (after the plan hashed it) either differs from the plan's digest now, and
/// nothing is stamped, or was edited after the metadata was taken, and the next run sees it.
pub fn record(plan: &Plan, request: &Request, root: &Path) -> anyhow::Result<()> {
    let file = path(&plan.out);
    let stamp = current(request, watched(plan, request, root), root).filter(|_| !plan.dirty);
    let unchanged = crate::plan::source::input_digests(root)? == plan.sources;
    match stamp.filter(|_| unchanged) {
        Some(stamp) => crate::oci::write_atomic(&file, &serde_json::to_vec_pretty(&stamp)?),
        None => forget(&plan.out),
    }
}

/// Removes the stamp of `out`: called before a build starts, so a build that fails or is
/// killed half-way never leaves a layout that looks finished.
pub fn forget(out: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path(out)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path(out).display()))
        }
        _ => Ok(()),
    }
}

/// Whether the layout `request` writes is already what a build would write: its stamp exists
/// and every recorded path, the request, the environment and HEAD are as recorded.
pub fn is_fresh(request: &Request, root: &Path) -> bool {
    let Ok(text) = std::fs::read(path(&request.out)) else { return false };
    let Ok(recorded) = serde_json::from_slice::<Stamp>(&text) else { return false };
    current(request, recorded.paths.keys().cloned(), root).is_some_and(|now| now == recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A committed checkout with one input and a layout, stamped; returns the request, the plan
    /// (whose digests are the checkout's) and the input.
    fn stamped(dir: &Path) -> (Request, Plan, PathBuf) {
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let input = dir.join("src/main.rs");
        std::fs::write(&input, "fn main() {}\n").unwrap();
        std::fs::write(dir.join(".gitignore"), "/target\n").unwrap();
        git(dir, &["init", "-q", "-b", "main"]);
        git(dir, &["add", "."]);
        git(dir, &["commit", "-q", "-m", "one"]);
        let out = dir.join("target/oci");
        std::fs::create_dir_all(out.join("blobs/sha256")).unwrap();
        std::fs::write(out.join("index.json"), "{}").unwrap();
        let request = Request::new(dir.join("images.toml"), out.clone());
        let plan = Plan::for_stamp_tests(out, crate::plan::source::input_digests(dir).unwrap());
        assert_eq!(plan.sources.len(), 2, "{:?}", plan.sources);
        record(&plan, &request, dir).unwrap();
        (request, plan, input)
    }

    #[test]
    fn an_unchanged_build_is_fresh_and_each_change_makes_it_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (request, plan, input) = stamped(dir.path());
        assert!(is_fresh(&request, dir.path()), "nothing changed");

        type Change<'a> = Box<dyn Fn() + 'a>;
        let changes: Vec<(&str, Change)> = vec![
            ("an input rewritten with the same bytes", Box::new(|| std::fs::write(&input, "fn main() {}\n").unwrap())),
            ("a file added beside an input", Box::new(|| std::fs::write(dir.path().join("src/new.rs"), "").unwrap())),
            ("a blob removed", Box::new(|| std::fs::write(plan.out.join("blobs/sha256/x"), "").unwrap())),
            ("index.json replaced", Box::new(|| std::fs::write(plan.out.join("index.json"), "{ }").unwrap())),
            ("another commit", Box::new(|| git(dir.path(), &["commit", "-q", "--allow-empty", "-m", "two"]))),
            ("another request", Box::new(|| {})),
        ];
        for (what, change) in changes {
            record(&plan, &request, dir.path()).unwrap();
            assert!(is_fresh(&request, dir.path()), "{what}: fresh before the change");
            change();
            let asked = if what == "another request" {
                Request { platforms: vec!["linux/arm64".into()], ..request.clone() }
            } else {
                request.clone()
            };
            assert!(!is_fresh(&asked, dir.path()), "{what}: still fresh");
        }
    }

    #[test]
    fn an_input_edited_while_the_build_ran_leaves_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let (request, plan, input) = stamped(dir.path());
        // The plan hashed the old content; the edit lands before the build ends.
        std::fs::write(&input, "fn main() { edited() }\n").unwrap();
        record(&plan, &request, dir.path()).unwrap();
        assert!(!path(&plan.out).exists() && !is_fresh(&request, dir.path()));
    }

    #[test]
    fn a_dirty_or_failed_build_leaves_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let (request, mut plan, _) = stamped(dir.path());
        plan.dirty = true;
        record(&plan, &request, dir.path()).unwrap();
        assert!(!path(&plan.out).exists() && !is_fresh(&request, dir.path()));
        plan.dirty = false;
        record(&plan, &request, dir.path()).unwrap();
        forget(&plan.out).unwrap();
        assert!(!is_fresh(&request, dir.path()));
        forget(&plan.out).unwrap();
    }

    #[test]
    fn head_reads_loose_packed_and_worktree_refs() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join("main/.git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(git.join("packed-refs"), "# pack-refs\naaaa refs/heads/main\nbbbb refs/heads/other\n").unwrap();
        assert_eq!(head(&dir.path().join("main")).as_deref(), Some("aaaa"));
        std::fs::write(git.join("refs/heads/main"), "cccc\n").unwrap();
        assert_eq!(head(&dir.path().join("main")).as_deref(), Some("cccc"));
        // A worktree: `.git` is a file naming its directory, whose `commondir` leads back.
        let wt = git.join("worktrees/wt");
        std::fs::create_dir_all(&wt).unwrap();
        std::fs::write(wt.join("HEAD"), "ref: refs/heads/other\n").unwrap();
        std::fs::write(wt.join("commondir"), "../..\n").unwrap();
        std::fs::create_dir_all(dir.path().join("wt")).unwrap();
        std::fs::write(dir.path().join("wt/.git"), format!("gitdir: {}\n", wt.display())).unwrap();
        assert_eq!(head(&dir.path().join("wt")).as_deref(), Some("bbbb"));
        std::fs::write(wt.join("HEAD"), "dddd\n").unwrap();
        assert_eq!(head(&dir.path().join("wt")).as_deref(), Some("dddd"));
    }
}
