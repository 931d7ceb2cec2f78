//! Where a build's source identity comes from: the revision and source epoch that every label,
//! `/version` and provenance carries, and the digest of every input file.
//!
//! A wrong revision or epoch silently changes every image digest, so this module refuses
//! rather than guesses: a shallow clone that cannot see the last commit that changed an input,
//! a tree without git and without pins, and a pinned commit whose inputs are not the checkout's
//! all stop with the cause and the ways out. A tree with uncommitted input changes is built as
//! `<commit>-dirty`, so its digests can never pass for the commit's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::shell;

/// The revision and epoch of a build, and how they were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// A commit, `<commit>-dirty`, or a pinned value.
    pub revision: String,
    pub epoch: u64,
    /// Inputs have uncommitted changes.
    pub dirty: bool,
}

/// The ways out of a refusal, shared by every message.
const WAYS_OUT: &str = "ways out:\n  \
     - fetch the history: `git fetch --unshallow` (or clone without --depth)\n  \
     - pin both values from the published images.json: SOURCE_DATE_EPOCH=<epoch> STELLA_GIT_COMMIT=<revision>\n  \
     - or let the rebuild pin them and check every input: `cargo xtask rebuild --compare images.json`";

/// Pins from the environment: `STELLA_GIT_COMMIT` and `SOURCE_DATE_EPOCH`.
fn pins() -> anyhow::Result<(Option<String>, Option<u64>)> {
    let commit = std::env::var("STELLA_GIT_COMMIT").ok().map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Some(v.trim().parse().with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?),
        Err(_) => None,
    };
    Ok((commit, epoch))
}

/// Finds the source identity of the workspace at `root` (see the module header).
pub fn find(root: &Path) -> anyhow::Result<Source> {
    let (pinned_commit, pinned_epoch) = pins()?;
    let Some(git) = Git::open(root) else {
        return match (pinned_commit, pinned_epoch) {
            (Some(revision), Some(epoch)) => Ok(Source { revision, epoch, dirty: false }),
            (commit, epoch) => {
                let missing = [("STELLA_GIT_COMMIT", commit.is_none()), ("SOURCE_DATE_EPOCH", epoch.is_none())]
                    .iter()
                    .filter(|(_, m)| *m)
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(" and ");
                bail!(
                    "{} is not a git checkout, so its revision and source epoch are unknown (no {missing}): \
                     a build would give other digests than the release's\n{WAYS_OUT}",
                    root.display()
                )
            }
        };
    };
    if let Some(commit) = pinned_commit {
        // A pin names the commit the digests will claim: where git holds it, the inputs of this
        // checkout must be that commit's, or the build would claim a revision it is not.
        let known = git.commit_time(&commit);
        let epoch = match (pinned_epoch, known) {
            (Some(e), _) | (None, Some(e)) => e,
            (None, None) => bail!(
                "STELLA_GIT_COMMIT={commit} is not in this checkout's history, so its date is unknown: \
                 set SOURCE_DATE_EPOCH too (both are in the published images.json)"
            ),
        };
        if known.is_some() {
            let changed = git.changed_inputs_since(&commit)?;
            if !changed.is_empty() {
                bail!(
                    "STELLA_GIT_COMMIT={commit}, but the inputs of {} differ from that commit's: {}\n  \
                     help: `git checkout {commit}` (and stash local changes), or unset STELLA_GIT_COMMIT",
                    root.display(),
                    list(&changed)
                );
            }
        }
        return Ok(Source { revision: commit, epoch, dirty: false });
    }
    let Some((commit, time)) = git.last_input_commit()? else {
        bail!("{}: no commit changes an input of the images yet; commit first", root.display());
    };
    if git.is_shallow_boundary(&commit)? {
        bail!(
            "{} is a shallow clone, and the last commit that changed an image input is not visible in it: \
             {commit} is the oldest commit fetched, and whether it changed an input cannot be told without its \
             parent. The revision and epoch (and so every digest) would differ from a full clone's.\n{WAYS_OUT}",
            root.display()
        );
    }
    let dirty = git.dirty()?;
    let revision = if dirty { format!("{commit}-dirty") } else { commit };
    Ok(Source { revision, epoch: pinned_epoch.unwrap_or(time), dirty })
}

/// The first few entries of a list of paths, for a message.
fn list(paths: &[String]) -> String {
    let mut shown = paths.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if paths.len() > 10 {
        shown.push_str(&format!(" and {} more", paths.len() - 10));
    }
    shown
}

/// Git, asked only about the checkout at `root` (never about a repository above it: a source
/// archive unpacked inside another checkout has no git of its own).
struct Git {
    root: PathBuf,
}

impl Git {
    fn open(root: &Path) -> Option<Git> {
        let out = Command::new("git").args(["rev-parse", "--show-toplevel"]).current_dir(root).output().ok()?;
        let top = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let same = out.status.success() && top.canonicalize().ok()? == root.canonicalize().ok()?;
        same.then(|| Git { root: root.to_path_buf() })
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        shell::output(Command::new("git").args(args).current_dir(&self.root))
    }

    fn with_inputs(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = args.to_vec();
        all.extend(super::input_pathspec());
        self.run(&all)
    }

    /// The last commit that changed an input, and its commit time.
    fn last_input_commit(&self) -> anyhow::Result<Option<(String, u64)>> {
        let out = self.with_inputs(&["log", "-1", "--format=%H %ct"])?;
        let Some((commit, time)) = out.trim().split_once(' ') else { return Ok(None) };
        Ok(Some((commit.to_string(), time.parse().context("git log gave a commit time that is not a number")?)))
    }

    fn commit_time(&self, commit: &str) -> Option<u64> {
        let spec = format!("{commit}^{{commit}}");
        self.run(&["rev-parse", "--verify", "--quiet", &spec]).ok()?;
        self.run(&["log", "-1", "--format=%ct", commit]).ok()?.trim().parse().ok()
    }

    /// Whether `commit` is one a shallow clone cut the parents of (listed in `.git/shallow`).
    fn is_shallow_boundary(&self, commit: &str) -> anyhow::Result<bool> {
        if self.run(&["rev-parse", "--is-shallow-repository"])?.trim() != "true" {
            return Ok(false);
        }
        let path = self.run(&["rev-parse", "--git-path", "shallow"])?;
        let path = self.root.join(path.trim());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text.lines().any(|l| l.trim() == commit))
    }

    /// Whether a tracked input has uncommitted changes.
    fn dirty(&self) -> anyhow::Result<bool> {
        Ok(!self.with_inputs(&["status", "--porcelain", "--untracked-files=no"])?.trim().is_empty())
    }

    /// Inputs whose working-tree content differs from `commit`'s.
    fn changed_inputs_since(&self, commit: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.with_inputs(&["diff", "--name-only", commit])?.lines().map(str::to_string).collect())
    }

    fn tracked(&self, inputs_only: bool) -> anyhow::Result<Vec<String>> {
        let out = if inputs_only { self.with_inputs(&["ls-files", "-z"])? } else { self.run(&["ls-files", "-z"])? };
        Ok(out.split('\0').filter(|p| !p.is_empty()).map(str::to_string).collect())
    }
}

/// Whether the git checkout at `root` (not one above it) holds `commit`.
pub fn holds_commit(root: &Path, commit: &str) -> bool {
    Git::open(root).is_some_and(|git| git.commit_time(commit).is_some())
}

/// Whether a workspace-relative path (with `/`) is an input of the images, by the same rules
/// as [`super::NOT_INPUTS`] gives git.
pub fn is_input(path: &str) -> bool {
    !super::NOT_INPUTS.iter().map(|spec| spec.trim_start_matches(":(exclude)")).any(|spec| {
        match spec.strip_prefix('*') {
            Some(suffix) => path.ends_with(suffix),
            None => path == spec || path.starts_with(&format!("{spec}/")),
        }
    })
}

/// The files of the workspace at `root`, relative and sorted: those git tracks, or, without
/// git (a source archive), every file `.gitignore` does not exclude.
pub fn files(root: &Path) -> anyhow::Result<Vec<String>> {
    if let Some(git) = Git::open(root) {
        return git.tracked(false);
    }
    let mut out = Vec::new();
    for entry in walk(root) {
        let entry = entry.with_context(|| format!("listing {}", root.display()))?;
        if entry.file_type().is_some_and(|t| !t.is_dir()) {
            let rel = entry.path().strip_prefix(root).expect("walked under root");
            let rel = rel.to_str().with_context(|| format!("{}: not UTF-8", entry.path().display()))?;
            if !is_git_metadata(rel) {
                out.push(rel.replace('\\', "/"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Git's own files: the `.git` directory, or in a worktree or submodule the `.git` file that
/// points to it.
fn is_git_metadata(rel: &str) -> bool {
    rel == ".git" || rel.starts_with(".git/")
}

/// A walk of `root` that skips what its `.gitignore` files exclude, and nothing else: no
/// global or per-user ignore file, so every machine lists the same files.
fn walk(root: &Path) -> ignore::Walk {
    ignore::WalkBuilder::new(root)
        .hidden(false)
        .require_git(false)
        .parents(false)
        .ignore(false)
        .git_global(false)
        .git_exclude(false)
        .build()
}

/// Every input file of the workspace at `root` and the SHA-256 of its content (of its target,
/// for a symbolic link): what `images.json` records so an auditor can prove a checkout holds
/// the release's inputs without its history.
pub fn input_digests(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for rel in files(root)?.into_iter().filter(|p| is_input(p)) {
        let path = root.join(&rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Tracked but deleted in the working tree: absent here, as `differences` reports it
            // (and as `reproduce::copy_files` leaves it).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let bytes = if meta.file_type().is_symlink() {
            std::fs::read_link(&path)?.to_string_lossy().into_owned().into_bytes()
        } else {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
        };
        out.insert(rel, crate::layer::sha256(&bytes));
    }
    Ok(out)
}

/// How the inputs of a checkout differ from a record's: each line names a file.
pub fn differences(record: &BTreeMap<String, String>, here: &BTreeMap<String, String>) -> Vec<String> {
    let names: BTreeSet<&String> = record.keys().chain(here.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| match (record.get(name), here.get(name)) {
            (Some(a), Some(b)) if a != b => Some(format!("changed: {name}")),
            (Some(_), None) => Some(format!("missing here: {name}")),
            (None, Some(_)) => Some(format!("not in the record: {name}")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_follow_the_pathspec() {
        for input in ["Cargo.lock", "services/api/src/main.rs", "xtask/src/plan/mod.rs", "layers/base.toml"] {
            assert!(is_input(input), "{input}");
        }
        for not in ["README.md", "docs/api.md", "deploy/compose/x.yml", "tests/tests/a.rs", "xtask/src/deploy/mod.rs"] {
            assert!(!is_input(not), "{not}");
        }
        // A prefix of a name is not its directory.
        assert!(is_input("deployment.rs"));
    }

    /// The walk of a source archive and git must agree on this checkout, or the digests an
    /// auditor's archive is checked against would list other files.
    #[test]
    fn git_and_the_walk_list_the_same_inputs() {
        let root = shell::root();
        let Some(git) = Git::open(&root) else { return };
        let tracked: BTreeSet<String> = git.tracked(true).unwrap().into_iter().collect();
        let mut walked = BTreeSet::new();
        for entry in walk(&root) {
            let entry = entry.unwrap();
            let rel = entry.path().strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            if entry.file_type().is_some_and(|t| t.is_file()) && !is_git_metadata(&rel) && is_input(&rel) {
                walked.insert(rel);
            }
        }
        // Files the working tree has but git does not track are the developer's, not the release's.
        let untracked =
            shell::output(Command::new("git").args(["ls-files", "--others", "--exclude-standard"]).current_dir(&root))
                .unwrap();
        for extra in untracked.lines() {
            walked.remove(extra);
        }
        assert_eq!(walked, tracked, "the walk without git and git ls-files disagree on the inputs");
    }

    #[test]
    fn differences_name_each_file() {
        let record = BTreeMap::from([("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())]);
        let here = BTreeMap::from([("a".to_string(), "9".to_string()), ("c".to_string(), "3".to_string())]);
        assert_eq!(differences(&record, &here), ["changed: a", "missing here: b", "not in the record: c"]);
    }
}
