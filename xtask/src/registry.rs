//! Pushing an OCI image layout to a registry (the OCI distribution API): every image index with
//! its platform manifests, configs and layers, every signature, SBOM and provenance artifact,
//! and every tag the layout names. `cargo xtask publish` and the quickstart use it.
//!
//! Hand-written over `ureq` (blocking, no async runtime): the push needs five requests
//! (`HEAD` and upload of a blob, cross-repository mount, `PUT` of a manifest) and `oci-client`
//! brings tokio and a TLS stack for them. Blobs already present are skipped (`HEAD` first), so
//! a push that was interrupted resumes where it stopped, and pushing twice changes nothing.
//!
//! Registries without the referrers API (Debian's `docker-registry` 2.8, measured) still find
//! the artifacts: signatures and provenance by their cosign tags (`sha256-<hex>.sig`/`.att`),
//! SBOMs through the referrers tag schema (`sha256-<hex>`, an index of the subject's referrers).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::oci::{INDEX, MANIFEST};

/// A registry reached over HTTP (loopback) or HTTPS.
pub struct Registry {
    /// `http://127.0.0.1:5000` or `https://registry.example.org`.
    base: String,
    agent: ureq::Agent,
}

/// What a push did.
#[derive(Debug, Default, Serialize)]
pub struct Pushed {
    /// `<registry>/<repository>:<tag>` → the digest it names.
    pub tags: BTreeMap<String, String>,
    pub manifests: usize,
    pub blobs_uploaded: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
    pub bytes_uploaded: u64,
}

impl Registry {
    /// `host` is `host[:port]`; loopback hosts are spoken to over plain HTTP (as Docker does),
    /// others over HTTPS unless `insecure`.
    pub fn new(host: &str, insecure: bool) -> Registry {
        let loopback = host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
        let scheme = if loopback || insecure { "http" } else { "https" };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(600)))
            .http_status_as_error(false)
            .build()
            .into();
        Registry { base: format!("{scheme}://{host}"), agent }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the registry answers the API version check.
    pub fn ping(&self) -> anyhow::Result<()> {
        let r = self.agent.get(&self.url("/v2/")).call().with_context(|| format!("{} does not answer", self.base))?;
        match r.status().as_u16() {
            200 | 401 => Ok(()),
            s => bail!("{}/v2/ answered {s}: is it an OCI registry?", self.base),
        }
    }

    fn blob_exists(&self, repo: &str, digest: &str) -> anyhow::Result<bool> {
        let r = self.agent.head(&self.url(&format!("/v2/{repo}/blobs/{digest}"))).call()?;
        Ok(r.status().is_success())
    }

    /// Asks the registry to link a blob it holds in `from` into `repo`; false if it would not.
    fn mount(&self, repo: &str, digest: &str, from: &str) -> anyhow::Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"));
        let r = self.agent.post(&url).send_empty()?;
        Ok(r.status().as_u16() == 201)
    }

    fn upload(&self, repo: &str, digest: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let r = self.agent.post(&self.url(&format!("/v2/{repo}/blobs/uploads/"))).send_empty()?;
        if r.status().as_u16() != 202 {
            bail!("{}: starting an upload to {repo} answered {}", self.base, r.status());
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("the registry gave no upload location")?
            .to_string();
        let location = if location.starts_with('/') { self.url(&location) } else { location };
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .agent
            .put(&format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .send(bytes)?;
        if r.status().as_u16() != 201 {
            bail!("{}: uploading blob {digest} to {repo} answered {}: {}", self.base, r.status(), body(r));
        }
        Ok(())
    }

    fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = self.agent.put(&url).header("content-type", media_type).send(bytes)?;
        if r.status().as_u16() != 201 {
            bail!("{}: putting manifest {repo}:{reference} answered {}: {}", self.base, r.status(), body(r));
        }
        Ok(())
    }

    /// The manifest bytes `repo:reference` names, and its media type.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = self.agent.get(&url).header("accept", &format!("{INDEX}, {MANIFEST}")).call()?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        if !r.status().is_success() {
            bail!("{}: getting {repo}:{reference} answered {}", self.base, r.status());
        }
        let media = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let mut bytes = Vec::new();
        r.into_body().into_reader().read_to_end(&mut bytes)?;
        Ok(Some((media, bytes)))
    }
}

fn body(r: ureq::http::Response<ureq::Body>) -> String {
    let mut text = String::new();
    let _ = r.into_body().into_reader().take(2000).read_to_string(&mut text);
    text
}

/// One push: which blobs are already in which repository, to mount rather than upload.
struct Push<'a> {
    registry: &'a Registry,
    layout: &'a Path,
    /// digest → a repository that has it.
    have: BTreeMap<String, String>,
    done_manifests: BTreeSet<(String, String)>,
    report: Pushed,
}

impl Push<'_> {
    fn read(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        if crate::layer::sha256(&bytes) != digest {
            bail!("{}: the blob does not match its digest; the layout is damaged", path.display());
        }
        Ok(bytes)
    }

    fn blob(&mut self, repo: &str, digest: &str) -> anyhow::Result<()> {
        if self.have.get(digest).is_some_and(|r| r == repo) || self.registry.blob_exists(repo, digest)? {
            self.report.blobs_present += 1;
        } else if let Some(from) = self.have.get(digest).cloned()
            && self.registry.mount(repo, digest, &from)?
        {
            self.report.blobs_mounted += 1;
        } else {
            let bytes = self.read(digest)?;
            self.registry.upload(repo, digest, &bytes)?;
            self.report.blobs_uploaded += 1;
            self.report.bytes_uploaded += bytes.len() as u64;
        }
        self.have.insert(digest.to_string(), repo.to_string());
        Ok(())
    }

    /// Pushes the manifest or index `digest` (children first) into `repo`, by digest.
    fn manifest(&mut self, repo: &str, digest: &str) -> anyhow::Result<(String, Vec<u8>)> {
        let bytes = self.read(digest)?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("parsing {digest}"))?;
        let media = doc["mediaType"].as_str().unwrap_or(MANIFEST).to_string();
        if self.done_manifests.contains(&(repo.to_string(), digest.to_string())) {
            return Ok((media, bytes));
        }
        if media == INDEX {
            for m in doc["manifests"].as_array().into_iter().flatten() {
                let child = m["digest"].as_str().context("an index entry without digest")?;
                self.manifest(repo, child)?;
            }
        } else {
            let config = doc["config"]["digest"].as_str().context("a manifest without config")?.to_string();
            self.blob(repo, &config)?;
            for l in doc["layers"].as_array().into_iter().flatten() {
                self.blob(repo, l["digest"].as_str().context("a layer without digest")?)?;
            }
        }
        self.registry.put_manifest(repo, digest, &media, &bytes)?;
        self.report.manifests += 1;
        self.done_manifests.insert((repo.to_string(), digest.to_string()));
        Ok((media, bytes))
    }
}

/// Pushes every image of the layout at `layout` to `host`, under `prefix` (`stella` gives
/// `<host>/stella/<image>`), with its tags and every attached artifact.
pub fn push_layout(layout: &Path, host: &str, prefix: &str, insecure: bool) -> anyhow::Result<Pushed> {
    let registry = Registry::new(host, insecure);
    registry.ping()?;
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("index.json"))
            .with_context(|| format!("reading {}/index.json", layout.display()))?,
    )?;
    let entries = index["manifests"].as_array().context("index.json has no manifests")?;
    let repo_of = |image: &str| if prefix.is_empty() { image.to_string() } else { format!("{prefix}/{image}") };
    let mut push = Push {
        registry: &registry,
        layout,
        have: BTreeMap::new(),
        done_manifests: BTreeSet::new(),
        report: Pushed::default(),
    };
    // Subjects (image indexes and their platform manifests) by digest → repository, to place
    // the unnamed artifacts (SBOMs) beside what they describe.
    let mut subject_repo: BTreeMap<String, String> = BTreeMap::new();
    let named =
        |e: &serde_json::Value| e["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_string);
    // Images first, then tagged artifacts (signatures, provenance), then the rest.
    let mut ordered: Vec<&serde_json::Value> =
        entries.iter().filter(|e| e["mediaType"] == INDEX && named(e).is_some()).collect();
    ordered.extend(entries.iter().filter(|e| e["mediaType"] != INDEX && named(e).is_some()));
    ordered.extend(entries.iter().filter(|e| named(e).is_none()));
    let mut referrers: BTreeMap<(String, String), Vec<serde_json::Value>> = BTreeMap::new();
    for entry in ordered {
        let digest = entry["digest"].as_str().context("an index.json entry without digest")?;
        let repo = match named(entry) {
            Some(name) => {
                let (image, _) = name.split_once(':').with_context(|| format!("ref name {name} has no tag"))?;
                repo_of(image)
            }
            None => {
                let doc: serde_json::Value = serde_json::from_slice(&push.read(digest)?)?;
                let subject =
                    doc["subject"]["digest"].as_str().context("an unnamed entry that is not an attachment")?;
                subject_repo
                    .get(subject)
                    .cloned()
                    .with_context(|| format!("{digest}: its subject {subject} is not an image of the layout"))?
            }
        };
        let (media, bytes) = push.manifest(&repo, digest)?;
        if let Some(name) = named(entry) {
            let tag = name.split_once(':').map(|(_, t)| t).unwrap_or_default();
            registry.put_manifest(&repo, tag, &media, &bytes)?;
            push.report.tags.insert(format!("{host}/{repo}:{tag}"), digest.to_string());
        }
        let doc: serde_json::Value = serde_json::from_slice(&bytes)?;
        if media == INDEX && named(entry).is_some() {
            subject_repo.insert(digest.to_string(), repo.clone());
            for m in doc["manifests"].as_array().into_iter().flatten() {
                if let Some(d) = m["digest"].as_str() {
                    subject_repo.insert(d.to_string(), repo.clone());
                }
            }
        }
        if let Some(subject) = doc["subject"]["digest"].as_str() {
            let mut descriptor = serde_json::json!({ "mediaType": media, "digest": digest, "size": bytes.len() });
            if let Some(t) = doc["artifactType"].as_str().or(doc["config"]["mediaType"].as_str()) {
                descriptor["artifactType"] = t.into();
            }
            referrers.entry((repo.clone(), subject.to_string())).or_default().push(descriptor);
        }
    }
    // The referrers tag schema: `<repo>:sha256-<hex>` is an index of the subject's referrers.
    for ((repo, subject), mut list) in referrers {
        list.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        let tag = subject.replace(':', "-");
        let fallback = serde_json::json!({ "schemaVersion": 2, "mediaType": INDEX, "manifests": list });
        let bytes = crate::oci::canonical(&fallback);
        registry.put_manifest(&repo, &tag, INDEX, &bytes)?;
        push.report.tags.insert(format!("{host}/{repo}:{tag}"), crate::layer::sha256(&bytes));
    }
    Ok(push.report)
}
