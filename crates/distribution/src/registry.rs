//! Pushing an OCI image layout to a registry (the OCI distribution API): every image index with
//! its platform manifests, configs and layers, every signature, SBOM and provenance artifact,
//! and every tag the layout names, digests unchanged. `cargo xtask publish`, the quickstart and
//! the air-gap loader use it.
//!
//! Hand-written over `ureq` (blocking, no async runtime): a push needs six requests (`HEAD`,
//! upload start, `PATCH` of a chunk, `PUT` to finish, cross-repository mount, `PUT` of a
//! manifest), and `oci-client` brings tokio and a TLS stack for them.
//!
//! Order and resumption: first every blob (in parallel, `jobs` at a time; each one `HEAD`ed
//! first, mounted from a repository that has it, or uploaded in chunks), then the manifests,
//! children before parents, then the tags. So no manifest is ever pushed before its blobs, a
//! run that was interrupted resumes where it stopped, and a second run uploads nothing.
//! Requests that fail for transient reasons (connection refused or reset, 5xx, 429) are retried
//! with exponential backoff.
//!
//! Registries without the referrers API (Debian's `docker-registry` 2.8, measured) still find
//! the artifacts: signatures and provenance by their cosign tags (`sha256-<hex>.sig`/`.att`),
//! SBOMs through the referrers tag schema (`sha256-<hex>`, an index of the subject's referrers).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::{Error, Result, invalid, io, sha256, sha256_file};

pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Options of a push.
#[derive(Clone, Debug)]
pub struct Options {
    /// Speak HTTP to a registry that is not on loopback.
    pub insecure: bool,
    /// Blobs uploaded at once.
    pub jobs: usize,
    /// Blobs larger than this go up in `PATCH` chunks of this size.
    pub chunk: u64,
    /// Attempts of a request that fails for a transient reason.
    pub attempts: u32,
    /// The first retry's delay; doubled each time (at most 8 s).
    pub backoff: Duration,
    /// The caller has checked every blob of the layout against its digest (the loader does,
    /// through checksums.txt), so blobs are not hashed again before upload.
    pub blobs_checked: bool,
    /// PEM file of the CA certificates the registry's TLS certificate is checked against (a
    /// site's own CA); implies HTTPS, even on loopback. None: Mozilla's roots (webpki-roots).
    pub ca_file: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: false,
            jobs: 4,
            chunk: 16 << 20,
            attempts: 6,
            backoff: Duration::from_millis(250),
            blobs_checked: false,
            ca_file: None,
        }
    }
}

/// A registry reached over HTTP (loopback or `insecure`) or HTTPS.
pub struct Registry {
    /// `http://127.0.0.1:5000` or `https://registry.example.org`.
    base: String,
    agent: ureq::Agent,
    options: Options,
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
    /// Requests that were retried after a transient failure.
    pub retries: usize,
}

type Response = ureq::http::Response<ureq::Body>;

impl Registry {
    /// `host` is `host[:port]`; loopback hosts are spoken to over plain HTTP (as Docker does),
    /// others over HTTPS (rustls) unless `options.insecure`; a CA file means HTTPS everywhere.
    pub fn new(host: &str, options: Options) -> Result<Registry> {
        let loopback = host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
        let tls = options.ca_file.is_some() || !(loopback || options.insecure);
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(600)))
            .timeout_connect(Some(Duration::from_secs(10)))
            .http_status_as_error(false);
        if let Some(ca) = &options.ca_file {
            let pem = std::fs::read(ca).map_err(io(ca))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c.to_owned()),
                    Ok(_) => {}
                    Err(e) => return Err(invalid(ca.display(), format!("not a PEM certificate file: {e}"))),
                }
            }
            if certs.is_empty() {
                return Err(invalid(ca.display(), "holds no PEM certificate"));
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build(),
            );
        }
        let agent: ureq::Agent = config.build().into();
        Ok(Registry { base: format!("{}://{host}", if tls { "https" } else { "http" }), agent, options })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn error(&self, what: &str, message: impl Into<String>) -> Error {
        Error::Registry { url: format!("{}{what}", self.base), message: message.into() }
    }

    /// Sends a request, retrying transient failures with backoff; counts the retries.
    fn send(
        &self,
        what: &str,
        retries: &Mutex<usize>,
        request: impl Fn() -> std::result::Result<Response, ureq::Error>,
    ) -> Result<Response> {
        let mut delay = self.options.backoff;
        let mut attempt = 1;
        loop {
            let outcome = request();
            let transient = match &outcome {
                Ok(r) => r.status().is_server_error() || r.status().as_u16() == 429,
                Err(
                    ureq::Error::Io(_)
                    | ureq::Error::Timeout(_)
                    | ureq::Error::ConnectionFailed
                    | ureq::Error::HostNotFound,
                ) => true,
                Err(_) => false,
            };
            if !transient || attempt >= self.options.attempts {
                return match outcome {
                    Ok(r) => Ok(r),
                    Err(e) => Err(self.error(what, format!("{e} (after {attempt} attempt(s))"))),
                };
            }
            *retries.lock().expect("the retry counter is never poisoned") += 1;
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(8));
            attempt += 1;
        }
    }

    /// Whether the registry answers the API version check.
    pub fn ping(&self) -> Result<()> {
        let r = self.send("/v2/", &Mutex::new(0), || self.agent.get(&self.url("/v2/")).call())?;
        match r.status().as_u16() {
            200 | 401 => Ok(()),
            s => Err(self.error("/v2/", format!("answered {s}: is it an OCI registry?"))),
        }
    }

    fn blob_exists(&self, repo: &str, digest: &str, retries: &Mutex<usize>) -> Result<bool> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let r = self.send(&path, retries, || self.agent.head(&self.url(&path)).call())?;
        Ok(r.status().is_success())
    }

    /// Asks the registry to link a blob it holds in `from` into `repo`; false if it would not.
    fn mount(&self, repo: &str, digest: &str, from: &str, retries: &Mutex<usize>) -> Result<bool> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let r = self.send(&path, retries, || self.agent.post(&self.url(&path)).send_empty())?;
        Ok(r.status().as_u16() == 201)
    }

    fn location(&self, r: &Response, what: &str) -> Result<String> {
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.error(what, "the registry gave no upload location"))?
            .to_string();
        Ok(if location.starts_with('/') { self.url(&location) } else { location })
    }

    /// Uploads the blob in `file` (whose digest was checked): in one `PUT` when it is small, in
    /// `PATCH` chunks otherwise. A failed upload session is started again from the beginning.
    fn upload(&self, repo: &str, digest: &str, file: &Path, size: u64, retries: &Mutex<usize>) -> Result<()> {
        let start = format!("/v2/{repo}/blobs/uploads/");
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload_once(repo, digest, file, size, &start, retries) {
                Err(e) if attempt < self.options.attempts => {
                    let _ = e;
                    *retries.lock().expect("the retry counter is never poisoned") += 1;
                    std::thread::sleep(self.options.backoff * attempt);
                }
                other => return other,
            }
        }
    }

    fn upload_once(
        &self,
        repo: &str,
        digest: &str,
        file: &Path,
        size: u64,
        start: &str,
        retries: &Mutex<usize>,
    ) -> Result<()> {
        let r = self.send(start, retries, || self.agent.post(&self.url(start)).send_empty())?;
        if r.status().as_u16() != 202 {
            return Err(self.error(start, format!("starting an upload answered {}", r.status())));
        }
        let mut location = self.location(&r, start)?;
        let mut f = std::fs::File::open(file).map_err(io(file))?;
        let chunk = self.options.chunk.max(1);
        if size > chunk {
            let mut offset = 0u64;
            let mut buf = vec![0u8; chunk as usize];
            while offset < size {
                let n = ((size - offset).min(chunk)) as usize;
                f.read_exact(&mut buf[..n]).map_err(io(file))?;
                let range = format!("{}-{}", offset, offset + n as u64 - 1);
                let r = self
                    .agent
                    .patch(&location)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", &range)
                    .send(&buf[..n])
                    .map_err(|e| {
                        self.error(&format!("/v2/{repo}/blobs/{digest}"), format!("uploading bytes {range}: {e}"))
                    })?;
                if r.status().as_u16() != 202 {
                    return Err(self.error(
                        &format!("/v2/{repo}/blobs/{digest}"),
                        format!("uploading bytes {range} answered {}", r.status()),
                    ));
                }
                location = self.location(&r, start)?;
                offset += n as u64;
            }
            let sep = if location.contains('?') { '&' } else { '?' };
            let r = self
                .agent
                .put(&format!("{location}{sep}digest={digest}"))
                .send_empty()
                .map_err(|e| self.error(&format!("/v2/{repo}/blobs/{digest}"), e.to_string()))?;
            return self.created(r, repo, digest);
        }
        let mut bytes = Vec::with_capacity(size as usize);
        f.read_to_end(&mut bytes).map_err(io(file))?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .agent
            .put(&format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .send(&bytes[..])
            .map_err(|e| self.error(&format!("/v2/{repo}/blobs/{digest}"), e.to_string()))?;
        self.created(r, repo, digest)
    }

    fn created(&self, r: Response, repo: &str, digest: &str) -> Result<()> {
        if r.status().as_u16() != 201 {
            let status = r.status();
            return Err(self.error(
                &format!("/v2/{repo}/blobs/{digest}"),
                format!("finishing the upload answered {status}: {}", body(r)),
            ));
        }
        Ok(())
    }

    fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        retries: &Mutex<usize>,
    ) -> Result<()> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let r = self
            .send(&path, retries, || self.agent.put(&self.url(&path)).header("content-type", media_type).send(bytes))?;
        if r.status().as_u16() != 201 {
            let status = r.status();
            return Err(self.error(&path, format!("putting the manifest answered {status}: {}", body(r))));
        }
        Ok(())
    }

    /// The manifest bytes `repo:reference` names, and its media type.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<Option<(String, Vec<u8>)>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let accept = format!("{INDEX}, {MANIFEST}");
        let r =
            self.send(&path, &Mutex::new(0), || self.agent.get(&self.url(&path)).header("accept", &accept).call())?;
        if r.status().as_u16() == 404 {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(self.error(&path, format!("answered {}", r.status())));
        }
        let media = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let mut bytes = Vec::new();
        r.into_body().into_reader().read_to_end(&mut bytes).map_err(|e| self.error(&path, e.to_string()))?;
        Ok(Some((media, bytes)))
    }
}

fn body(r: Response) -> String {
    let mut text = String::new();
    let _ = r.into_body().into_reader().take(2000).read_to_string(&mut text);
    text
}

/// The layout as a push plan: manifests by repository (children before parents), the blobs
/// each repository needs, the tags, and the referrers of each subject.
struct Plan {
    /// (repository, manifest digest, media type, bytes), in push order.
    manifests: Vec<(String, String, String, Vec<u8>)>,
    /// blob digest → the repositories that need it (in first-use order).
    blobs: BTreeMap<String, Vec<String>>,
    /// (repository, tag, manifest digest)
    tags: Vec<(String, String, String)>,
    referrers: BTreeMap<(String, String), Vec<serde_json::Value>>,
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
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
    fn read(layout: &Path, prefix: &str) -> Result<Plan> {
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
            if doc["mediaType"] == INDEX && named(entry).is_some() {
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
            self.referrers.entry((repo.to_string(), subject.to_string())).or_default().push(descriptor);
        }
        self.manifests.push((repo.to_string(), digest.to_string(), media, bytes));
        Ok(doc)
    }
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
        parallel(jobs, &wave, |(repo, digest, media, bytes)| {
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
        registry.put_manifest(repo, tag, media, bytes, &retries)?;
        report.lock().expect("not poisoned").tags.insert(format!("{host}/{repo}:{tag}"), sha256(bytes));
        Ok(())
    })?;
    let mut report = report.into_inner().expect("not poisoned");
    report.retries = retries.into_inner().expect("not poisoned");
    Ok(report)
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
