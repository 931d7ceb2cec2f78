//! The registry client (the OCI distribution API) that pushes image layouts ([`crate::push`]):
//! every image index with its platform manifests, configs and layers, every signature, SBOM and
//! provenance artifact, and every tag the layout names, digests unchanged. `cargo xtask
//! publish`, the quickstart and the air-gap loader use it. Registries that ask for credentials
//! get them through [`crate::auth`] (Basic, or Bearer tokens from their token service).
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

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::{Error, Result, invalid, io};

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
    /// For registries that ask for them (Basic, or Bearer tokens from their token service).
    pub credentials: Option<crate::auth::Credentials>,
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
            credentials: None,
        }
    }
}

/// A registry reached over HTTP (loopback or `insecure`) or HTTPS.
pub struct Registry {
    /// `http://127.0.0.1:5000` or `https://registry.example.org`.
    base: String,
    agent: ureq::Agent,
    pub(crate) options: Options,
    /// `Authorization` values by repository ("" for the registry itself), once a challenge was met.
    authorization: Mutex<BTreeMap<String, String>>,
}

/// What a push did.
#[derive(Debug, Default, Serialize)]
pub struct Pushed {
    /// `<registry>/<repository>:<tag>` → the digest it names.
    pub tags: BTreeMap<String, String>,
    /// Manifests put (by digest and by tag).
    pub manifests: usize,
    /// Manifests and tags the registry already held with the same digest: not put again.
    pub manifests_present: usize,
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
        // The host without its port, compared exactly: `localhost.corp.example` is not loopback.
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default(),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        let loopback = name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
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
        Ok(Registry {
            base: format!("{}://{host}", if tls { "https" } else { "http" }),
            agent,
            options,
            authorization: Mutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn error(&self, what: &str, message: impl Into<String>) -> Error {
        Error::Registry { url: format!("{}{what}", self.base), message: message.into() }
    }

    /// The `Authorization` value known for the repository of `path` (`/v2/<repo>/...`).
    fn authorization_for(&self, path: &str) -> Option<String> {
        self.authorization.lock().expect("not poisoned").get(&repository_of(path)).cloned()
    }

    /// Answers the challenge of a 401 for `path`: Basic with the credentials, Bearer with a
    /// token from the realm for the challenge's service and scope.
    fn authenticate(&self, path: &str, r: &Response) -> Result<()> {
        let header = r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let challenge = crate::auth::parse_challenge(header)
            .ok_or_else(|| self.error(path, "answered 401 without a WWW-Authenticate challenge"))?;
        let needs = || {
            self.error(
                path,
                "the registry asks for credentials: set STELLA_REGISTRY_USERNAME and STELLA_REGISTRY_PASSWORD (or _FILE)",
            )
        };
        let value = match challenge.scheme.as_str() {
            "basic" => self.options.credentials.as_ref().ok_or_else(needs)?.basic(),
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .ok_or_else(|| self.error(path, "a Bearer challenge without realm"))?;
                let mut url = realm.clone();
                let mut sep = if url.contains('?') { '&' } else { '?' };
                for key in ["service", "scope"] {
                    if let Some(v) = challenge.params.get(key) {
                        url.push_str(&format!("{sep}{key}={}", crate::auth::escape(v)));
                        sep = '&';
                    }
                }
                let mut request = self.agent.get(&url);
                if let Some(c) = &self.options.credentials {
                    request = request.header("authorization", &c.basic());
                }
                let mut answer = request.call().map_err(|e| self.error(path, format!("token service {realm}: {e}")))?;
                if answer.status().as_u16() == 401 {
                    return Err(needs());
                }
                if !answer.status().is_success() {
                    return Err(self.error(path, format!("token service {realm} answered {}", answer.status())));
                }
                let text = answer
                    .body_mut()
                    .read_to_string()
                    .map_err(|e| self.error(path, format!("token service {realm}: {e}")))?;
                let body: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| self.error(path, format!("token service {realm}: not JSON: {e}")))?;
                let token = body["token"]
                    .as_str()
                    .or(body["access_token"].as_str())
                    .ok_or_else(|| self.error(path, format!("token service {realm} gave no token")))?;
                format!("Bearer {token}")
            }
            other => return Err(self.error(path, format!("answered 401 with an unsupported scheme {other:?}"))),
        };
        self.authorization.lock().expect("not poisoned").insert(repository_of(path), value);
        Ok(())
    }

    /// Sends a request, retrying transient failures with backoff (counted in `retries`), and
    /// answering one authentication challenge. `request` gets the `Authorization` value to send.
    fn send(
        &self,
        what: &str,
        retries: &Mutex<usize>,
        request: impl Fn(Option<&str>) -> std::result::Result<Response, ureq::Error>,
    ) -> Result<Response> {
        let mut delay = self.options.backoff;
        let mut attempt = 1;
        let mut challenged = false;
        loop {
            let outcome = request(self.authorization_for(what).as_deref());
            if let Ok(r) = &outcome
                && r.status().as_u16() == 401
                && !challenged
            {
                challenged = true;
                self.authenticate(what, r)?;
                continue;
            }
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
                    Ok(r) if r.status().as_u16() == 401 => {
                        Err(self.error(what, "answered 401 Unauthorized with the credentials given"))
                    }
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
        let r = self.send("/v2/", &Mutex::new(0), |a| with(self.agent.get(&self.url("/v2/")), a).call())?;
        match r.status().as_u16() {
            200 | 401 => Ok(()),
            s => Err(self.error("/v2/", format!("answered {s}: is it an OCI registry?"))),
        }
    }

    pub(crate) fn blob_exists(&self, repo: &str, digest: &str, retries: &Mutex<usize>) -> Result<bool> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let r = self.send(&path, retries, |a| with(self.agent.head(&self.url(&path)), a).call())?;
        Ok(r.status().is_success())
    }

    /// Asks the registry to link a blob it holds in `from` into `repo`; false if it would not.
    pub(crate) fn mount(&self, repo: &str, digest: &str, from: &str, retries: &Mutex<usize>) -> Result<bool> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let r = self.send(&path, retries, |a| with(self.agent.post(&self.url(&path)), a).send_empty())?;
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
    pub(crate) fn upload(
        &self,
        repo: &str,
        digest: &str,
        file: &Path,
        size: u64,
        retries: &Mutex<usize>,
    ) -> Result<()> {
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
        let r = self.send(start, retries, |a| with(self.agent.post(&self.url(start)), a).send_empty())?;
        if r.status().as_u16() != 202 {
            return Err(self.error(start, format!("starting an upload answered {}", r.status())));
        }
        let mut location = self.location(&r, start)?;
        let sent = self.send_blob(repo, digest, file, size, start, &mut location);
        if sent.is_err() {
            // Cancel the session (the spec's DELETE), so a failed attempt leaves no upload behind
            // in the registry; best effort: the registry may be what failed.
            let _ = with(self.agent.delete(&location), self.authorization_for(start).as_deref()).call();
        }
        sent
    }

    /// Sends the blob's bytes into the upload session at `location` (kept current as the
    /// registry moves it) and finishes it.
    fn send_blob(
        &self,
        repo: &str,
        digest: &str,
        file: &Path,
        size: u64,
        start: &str,
        location: &mut String,
    ) -> Result<()> {
        let mut f = std::fs::File::open(file).map_err(io(file))?;
        let chunk = self.options.chunk.max(1);
        if size > chunk {
            let mut offset = 0u64;
            let mut buf = vec![0u8; chunk as usize];
            while offset < size {
                let n = ((size - offset).min(chunk)) as usize;
                f.read_exact(&mut buf[..n]).map_err(io(file))?;
                let range = format!("{}-{}", offset, offset + n as u64 - 1);
                let r = with(self.agent.patch(location.as_str()), self.authorization_for(start).as_deref())
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
                *location = self.location(&r, start)?;
                offset += n as u64;
            }
            let sep = if location.contains('?') { '&' } else { '?' };
            let r = with(
                self.agent.put(&format!("{location}{sep}digest={digest}")),
                self.authorization_for(start).as_deref(),
            )
            .send_empty()
            .map_err(|e| self.error(&format!("/v2/{repo}/blobs/{digest}"), e.to_string()))?;
            return self.created(r, repo, digest);
        }
        let mut bytes = Vec::with_capacity(size as usize);
        f.read_to_end(&mut bytes).map_err(io(file))?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let r =
            with(self.agent.put(&format!("{location}{sep}digest={digest}")), self.authorization_for(start).as_deref())
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

    pub(crate) fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        retries: &Mutex<usize>,
    ) -> Result<()> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let r = self.send(&path, retries, |a| {
            with(self.agent.put(&self.url(&path)), a).header("content-type", media_type).send(bytes)
        })?;
        if r.status().as_u16() != 201 {
            let status = r.status();
            return Err(self.error(&path, format!("putting the manifest answered {status}: {}", body(r))));
        }
        Ok(())
    }

    /// The digest the registry gives for `repo:reference` (a `HEAD`, so no body moves), or
    /// None when it holds no such manifest.
    pub(crate) fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
        retries: &Mutex<usize>,
    ) -> Result<Option<String>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let accept = format!("{INDEX}, {MANIFEST}");
        let r =
            self.send(&path, retries, |a| with(self.agent.head(&self.url(&path)), a).header("accept", &accept).call())?;
        if !r.status().is_success() {
            return Ok(None);
        }
        Ok(r.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string))
    }

    /// The manifest bytes `repo:reference` names, and its media type.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> Result<Option<(String, Vec<u8>)>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let accept = format!("{INDEX}, {MANIFEST}");
        let r = self.send(&path, &Mutex::new(0), |a| {
            with(self.agent.get(&self.url(&path)), a).header("accept", &accept).call()
        })?;
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

/// Adds the `Authorization` header when there is one.
fn with<B>(request: ureq::RequestBuilder<B>, authorization: Option<&str>) -> ureq::RequestBuilder<B> {
    match authorization {
        Some(a) => request.header("authorization", a),
        None => request,
    }
}

/// `stella/stella-api` of `/v2/stella/stella-api/blobs/...`; "" for other paths.
fn repository_of(path: &str) -> String {
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    for marker in ["/blobs/", "/manifests/", "/tags/"] {
        if let Some(i) = rest.find(marker) {
            return rest[..i].to_string();
        }
    }
    String::new()
}

fn body(r: Response) -> String {
    let mut text = String::new();
    let _ = r.into_body().into_reader().take(2000).read_to_string(&mut text);
    text
}

pub use crate::push::push_layout;
