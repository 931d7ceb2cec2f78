//! Pushing a whole OCI image layout: the plan (which blobs each repository needs, manifests
//! children first, tags, referrers) and its execution (blobs in parallel, then manifests in
//! waves, then tags), over the client of [`crate::registry`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::bundle;
use crate::registry::{INDEX, MANIFEST, Options, Pushed, Registry};
use crate::{Error, Result, invalid, io, sha256, sha256_file};

/// The layout as a push plan: manifests by repository (children before parents), the blobs
/// each repository needs, the tags, and the referrers of each subject.
pub(crate) struct Plan {
    /// (repository, manifest digest, media type, bytes), in push order.
    pub(crate) manifests: Vec<(String, String, String, Vec<u8>)>,
    /// blob digest → the repositories that need it (in first-use order).
    pub(crate) blobs: BTreeMap<String, Vec<String>>,
    /// (repository, tag, manifest digest)
    pub(crate) tags: Vec<(String, String, String)>,
    pub(crate) referrers: BTreeMap<(String, String), Vec<serde_json::Value>>,
}

pub(crate) fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    let hex = hex.ok_or_else(|| invalid(layout.display(), format!("{digest} is not a sha256 digest")))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// A manifest's bytes, checked against their digest.
fn read_checked(layout: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = blob_path(layout, digest)?;
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    if sha256(&bytes) != digest {
        return Err(invalid(path.display(), "the blob does not match its digest; the layout is damaged"));
    }
    Ok(bytes)
}

fn json(bytes: &[u8], origin: &str) -> Result<serde_json::Value> {
    serde_json::from_slice(bytes).map_err(|e| invalid(origin, format!("not JSON: {e}")))
}

impl Plan {
    pub(crate) fn read(layout: &Path, prefix: &str) -> Result<Plan> {
        let index_path = layout.join("index.json");
        let index = json(&std::fs::read(&index_path).map_err(io(&index_path))?, &index_path.display().to_string())?;
        let entries = index["manifests"].as_array().ok_or_else(|| invalid(index_path.display(), "has no manifests"))?;
        let repo_of = |image: &str| if prefix.is_empty() { image.to_string() } else { format!("{prefix}/{image}") };
        let named =
            |e: &serde_json::Value| e["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_string);
        // Images first, then tagged artifacts (signatures, provenance), then the rest, so that
        // every unnamed artifact finds its subject's repository.
        let mut ordered: Vec<&serde_json::Value> =
            entries.iter().filter(|e| e["mediaType"] == INDEX && named(e).is_some()).collect();
        ordered.extend(entries.iter().filter(|e| e["mediaType"] != INDEX && named(e).is_some()));
        ordered.extend(entries.iter().filter(|e| named(e).is_none()));
        let mut plan =
            Plan { manifests: Vec::new(), blobs: BTreeMap::new(), tags: Vec::new(), referrers: BTreeMap::new() };
        let mut subject_repo: BTreeMap<String, String> = BTreeMap::new();
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        for entry in ordered {
            let digest =
                entry["digest"].as_str().ok_or_else(|| invalid(index_path.display(), "an entry without digest"))?;
            let repo = match named(entry) {
                Some(name) => {
                    let (image, tag) = name
                        .split_once(':')
                        .ok_or_else(|| invalid(index_path.display(), format!("ref name {name} has no tag")))?;
                    plan.tags.push((repo_of(image), tag.to_string(), digest.to_string()));
                    repo_of(image)
                }
                None => {
                    let doc = json(&read_checked(layout, digest)?, digest)?;
                    let subject = doc["subject"]["digest"]
                        .as_str()
                        .ok_or_else(|| invalid(digest, "an unnamed entry that is not an attachment"))?;
                    subject_repo.get(subject).cloned().ok_or_else(|| {
                        invalid(digest, format!("its subject {subject} is not an image of the layout"))
                    })?
                }
            };
            let doc = plan.walk(layout, &repo, digest, &mut seen)?;
            // A named image index, or a named single manifest such as the Helm chart, is a
            // subject its referrers (signatures, SBOMs) are pushed beside.
            if named(entry).is_some() {
                subject_repo.insert(digest.to_string(), repo.clone());
                for m in doc["manifests"].as_array().into_iter().flatten() {
                    if let Some(d) = m["digest"].as_str() {
                        subject_repo.insert(d.to_string(), repo.clone());
                    }
                }
            }
        }
        Ok(plan)
    }

    /// Adds the manifest `digest` (children first) and its blobs to the plan for `repo`.
    fn walk(
        &mut self,
        layout: &Path,
        repo: &str,
        digest: &str,
        seen: &mut BTreeSet<(String, String)>,
    ) -> Result<serde_json::Value> {
        let bytes = read_checked(layout, digest)?;
        let doc = json(&bytes, digest)?;
        if !seen.insert((repo.to_string(), digest.to_string())) {
            return Ok(doc);
        }
        let media = doc["mediaType"].as_str().unwrap_or(MANIFEST).to_string();
        if media == INDEX {
            for m in doc["manifests"].as_array().into_iter().flatten() {
                let child = m["digest"].as_str().ok_or_else(|| invalid(digest, "an index entry without digest"))?;
                self.walk(layout, repo, child, seen)?;
            }
        } else {
            let config =
                doc["config"]["digest"].as_str().ok_or_else(|| invalid(digest, "a manifest without config"))?;
            let mut blobs = vec![config.to_string()];
            for l in doc["layers"].as_array().into_iter().flatten() {
                blobs.push(l["digest"].as_str().ok_or_else(|| invalid(digest, "a layer without digest"))?.to_string());
            }
            for b in blobs {
                let repos = self.blobs.entry(b).or_default();
                if !repos.iter().any(|r| r == repo) {
                    repos.push(repo.to_string());
                }
            }
        }
        if let Some(subject) = doc["subject"]["digest"].as_str() {
            let mut descriptor = serde_json::json!({ "mediaType": media, "digest": digest, "size": bytes.len() });
            if let Some(t) = doc["artifactType"].as_str().or(doc["config"]["mediaType"].as_str()) {
                descriptor["artifactType"] = t.into();
            }
            // The referrers list carries each manifest's annotations (OCI distribution spec): how a
            // client picks a Sigstore bundle by its predicate type without fetching it.
            if doc["annotations"].is_object() {
                descriptor["annotations"] = doc["annotations"].clone();
            }
            self.referrers.entry((repo.to_string(), subject.to_string())).or_default().push(descriptor);
        }
        self.manifests.push((repo.to_string(), digest.to_string(), media, bytes));
        Ok(doc)
    }
}

/// Every manifest digest the layout's index reaches (images, platforms, attachments).
pub fn manifest_digests(layout: &Path) -> Result<BTreeSet<String>> {
    Ok(Plan::read(layout, "")?.manifests.into_iter().map(|(_, d, _, _)| d).collect())
}

/// Pushes every image of the layout at `layout` to `host`, under `prefix` (`stella` gives
/// `<host>/stella/<image>`), with its tags and every attached artifact. `progress` is called
/// with one line per finished blob and per phase.
pub fn push_layout(
    layout: &Path,
    host: &str,
    prefix: &str,
    options: Options,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Pushed> {
    let registry = Registry::new(host, options.clone())?;
    registry.ping()?;
    let plan = Plan::read(layout, prefix)?;
    let jobs = options.jobs.max(1);
    let retries = Mutex::new(0usize);
    let report = Mutex::new(Pushed::default());
    let total = plan.blobs.len();
    let done = Mutex::new(0usize);
    let blobs: Vec<(&String, &Vec<String>)> = plan.blobs.iter().collect();
    parallel(jobs, &blobs, |(digest, repos)| {
        push_blob(&registry, layout, digest, repos, &report, &retries)?;
        let mut n = done.lock().expect("not poisoned");
        *n += 1;
        progress(&format!("blob {}/{total} {}", *n, &digest[..19]));
        Ok(())
    })?;
    // Manifests in waves: those without child manifests first, then the indexes over them, so
    // that no manifest reaches the registry before what it references; each wave in parallel.
    progress(&format!("manifests: {}", plan.manifests.len()));
    let mut depth: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (repo, digest, media, bytes) in &plan.manifests {
        let d = if media == INDEX {
            let doc = json(bytes, digest)?;
            1 + doc["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["digest"].as_str())
                .map(|c| depth.get(&(repo.as_str(), c)).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        } else {
            0
        };
        depth.insert((repo.as_str(), digest.as_str()), d);
    }
    // Attachments (signatures, SBOMs, provenance: manifests with a subject) after the images,
    // for registries that look their subject up.
    let attached: BTreeSet<(&str, &str)> = plan
        .referrers
        .values()
        .flatten()
        .filter_map(|d| d["digest"].as_str())
        .flat_map(|d| plan.manifests.iter().filter(move |m| m.1 == d).map(|m| (m.0.as_str(), m.1.as_str())))
        .collect();
    let deepest = depth.values().copied().max().unwrap_or(0);
    for (subject, level) in [false, true].into_iter().flat_map(|a| (0..=deepest).map(move |l| (a, l))) {
        let wave: Vec<&(String, String, String, Vec<u8>)> = plan
            .manifests
            .iter()
            .filter(|(r, d, _, _)| {
                let key = (r.as_str(), d.as_str());
                depth[&key] == level && attached.contains(&key) == subject
            })
            .collect();
        // A manifest the registry holds by its digest is the same bytes: a rerun puts none.
        parallel(jobs, &wave, |(repo, digest, media, bytes)| {
            if registry.manifest_digest(repo, digest, &retries)?.as_deref() == Some(digest.as_str()) {
                report.lock().expect("not poisoned").manifests_present += 1;
                return Ok(());
            }
            registry.put_manifest(repo, digest, media, bytes, &retries)?;
            report.lock().expect("not poisoned").manifests += 1;
            Ok(())
        })?;
    }
    let by_digest: BTreeMap<(&str, &str), (&str, &[u8])> =
        plan.manifests.iter().map(|(r, d, m, b)| ((r.as_str(), d.as_str()), (m.as_str(), b.as_slice()))).collect();
    // Tags, then the referrers tag schema: `<repo>:sha256-<hex>` is an index of the subject's
    // referrers, for registries without the referrers API.
    let mut tags: Vec<(String, String, String, Vec<u8>)> = Vec::new();
    for (repo, tag, digest) in &plan.tags {
        let (media, bytes) = by_digest[&(repo.as_str(), digest.as_str())];
        tags.push((repo.clone(), tag.clone(), media.to_string(), bytes.to_vec()));
    }
    for ((repo, subject), list) in &plan.referrers {
        let mut list = list.clone();
        list.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        let fallback = serde_json::json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": list });
        tags.push((
            repo.clone(),
            subject.replace(':', "-"),
            INDEX.to_string(),
            serde_json::to_vec(&fallback).expect("JSON serializes"),
        ));
    }
    parallel(jobs, &tags, |(repo, tag, media, bytes)| {
        // Attachment tags (cosign's `sha256-<hex>.sig`/`.att`, the referrers index `sha256-<hex>`)
        // may hold what others attached since (a site's own co-signature): merge, never drop.
        let mut bytes = std::borrow::Cow::Borrowed(bytes.as_slice());
        if attachment_tag(tag)
            && let Some((_, existing)) = registry.get_manifest(repo, tag)?
        {
            if existing == *bytes {
                let mut report = report.lock().expect("not poisoned");
                report.manifests_present += 1;
                report.tags.insert(format!("{host}/{repo}:{tag}"), sha256(&existing));
                return Ok(());
            }
            if let Some(merged) = merge_attachments(&bytes, &existing) {
                bytes = std::borrow::Cow::Owned(merged);
            }
        }
        let digest = sha256(&bytes);
        if registry.manifest_digest(repo, tag, &retries)?.as_deref() == Some(digest.as_str()) {
            let mut report = report.lock().expect("not poisoned");
            report.manifests_present += 1;
            report.tags.insert(format!("{host}/{repo}:{tag}"), digest);
            return Ok(());
        }
        registry.put_manifest(repo, tag, media, &bytes, &retries)?;
        report.lock().expect("not poisoned").tags.insert(format!("{host}/{repo}:{tag}"), digest);
        Ok(())
    })?;
    let mut report = report.into_inner().expect("not poisoned");
    report.retries = retries.into_inner().expect("not poisoned");
    Ok(report)
}

/// `sha256-<hex>`, `sha256-<hex>.sig`, `sha256-<hex>.att`: tags that name attachments of a
/// subject rather than a release.
fn attachment_tag(tag: &str) -> bool {
    let hex = tag.strip_prefix("sha256-").map(|t| t.trim_end_matches(".sig").trim_end_matches(".att"));
    hex.is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Ours, with the entries of `existing` that ours lacks appended (by digest): the `manifests` of
/// an index, the `layers` of a cosign signature or attestation manifest. None when either is
/// not such a document.
fn merge_attachments(ours: &[u8], existing: &[u8]) -> Option<Vec<u8>> {
    let mut doc: serde_json::Value = serde_json::from_slice(ours).ok()?;
    let theirs: serde_json::Value = serde_json::from_slice(existing).ok()?;
    let list = if doc["mediaType"] == INDEX { "manifests" } else { "layers" };
    let extra: Vec<serde_json::Value> = {
        let have: BTreeSet<&str> = doc[list].as_array()?.iter().filter_map(|d| d["digest"].as_str()).collect();
        theirs[list]
            .as_array()?
            .iter()
            .filter(|d| d["digest"].as_str().is_some_and(|x| !have.contains(x)))
            .cloned()
            .collect()
    };
    if extra.is_empty() {
        return None;
    }
    doc[list].as_array_mut()?.extend(extra);
    serde_json::to_vec(&doc).ok()
}

/// Runs `f` over `items` on `jobs` threads; stops at the first error and returns it.
fn parallel<T: Sync>(jobs: usize, items: &[T], f: impl Fn(&T) -> Result<()> + Sync) -> Result<()> {
    let next = Mutex::new(0usize);
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.min(items.len()).max(1) {
            s.spawn(|| {
                loop {
                    if failure.lock().expect("not poisoned").is_some() {
                        return;
                    }
                    let i = {
                        let mut n = next.lock().expect("not poisoned");
                        *n += 1;
                        *n - 1
                    };
                    let Some(item) = items.get(i) else { return };
                    if let Err(e) = f(item) {
                        failure.lock().expect("not poisoned").get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("not poisoned") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One blob into every repository that needs it: uploaded once (after checking its digest),
/// mounted into the others.
fn push_blob(
    registry: &Registry,
    layout: &Path,
    digest: &str,
    repos: &[String],
    report: &Mutex<Pushed>,
    retries: &Mutex<usize>,
) -> Result<()> {
    let mut holder: Option<&str> = None;
    for repo in repos {
        let outcome = if registry.blob_exists(repo, digest, retries)? {
            0
        } else if let Some(from) = holder
            && registry.mount(repo, digest, from, retries)?
        {
            1
        } else {
            let path = blob_path(layout, digest)?;
            if !path.exists() && layout.parent().is_some_and(|b| b.join(bundle::BASE).exists()) {
                return Err(invalid(
                    registry.url(&format!("/v2/{repo}/blobs/{digest}")),
                    format!(
                        "lacks the blob {digest}, which this delta bundle takes from its base ({}): load that bundle \
                         into this registry first",
                        layout.parent().unwrap_or(layout).join(bundle::BASE).display()
                    ),
                ));
            }
            if !registry.options.blobs_checked && sha256_file(&path)? != digest {
                return Err(invalid(path.display(), "the blob does not match its digest; the layout is damaged"));
            }
            let size = std::fs::metadata(&path).map_err(io(&path))?.len();
            registry.upload(repo, digest, &path, size, retries)?;
            report.lock().expect("not poisoned").bytes_uploaded += size;
            2
        };
        let mut r = report.lock().expect("not poisoned");
        match outcome {
            0 => r.blobs_present += 1,
            1 => r.blobs_mounted += 1,
            _ => r.blobs_uploaded += 1,
        }
        holder = Some(repo);
    }
    Ok(())
}
