//! A read-only registry over an OCI image layout, on loopback: the pull side of the OCI
//! distribution spec (`/v2/`, manifests and blobs by digest or tag, tag lists), so that a host
//! with Docker and no registry can pull the images of a bundle by digest (`stella-load docker`),
//! as Zarf and Hauler do with their embedded registries. It serves only what the layout's
//! `index.json` reaches, under the repositories the push would use; every manifest is checked
//! against its digest when the catalog is read, blobs are streamed from their files.
//!
//! HTTP comes from `tiny_http` (synchronous, no TLS: the server listens on loopback only, and
//! Docker talks plain HTTP to a registry on 127.0.0.0/8 without any daemon setting).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::push::{Plan, blob_path};
use crate::registry::INDEX;
use crate::{Error, Result, io};

/// A manifest as served: its media type and bytes.
type Stored = (String, Arc<[u8]>);

/// What the server answers for: manifests and tags by repository, blobs by digest.
pub struct Catalog {
    layout: PathBuf,
    /// (repository, digest) → (media type, bytes)
    manifests: BTreeMap<(String, String), Stored>,
    /// (repository, tag) → digest
    tags: BTreeMap<(String, String), String>,
    /// digest → repositories
    blobs: BTreeMap<String, BTreeSet<String>>,
}

/// An image (a tagged index) of the catalog.
#[derive(Clone, Debug)]
pub struct Image {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl Catalog {
    /// Reads the layout at `layout`, with repositories under `prefix` as `push` names them.
    pub fn read(layout: &Path, prefix: &str) -> Result<Catalog> {
        let plan = Plan::read(layout, prefix)?;
        let mut catalog = Catalog {
            layout: layout.to_path_buf(),
            manifests: BTreeMap::new(),
            tags: BTreeMap::new(),
            blobs: BTreeMap::new(),
        };
        for (repo, digest, media, bytes) in plan.manifests {
            catalog.manifests.insert((repo, digest), (media, bytes.into()));
        }
        for (repo, tag, digest) in plan.tags {
            catalog.tags.insert((repo, tag), digest);
        }
        for (digest, repos) in plan.blobs {
            catalog.blobs.insert(digest, repos.into_iter().collect());
        }
        Ok(catalog)
    }

    /// The images: tags that name an image index (not a signature or attestation tag).
    pub fn images(&self) -> Vec<Image> {
        self.tags
            .iter()
            .filter(|((repo, _), digest)| {
                self.manifests.get(&(repo.clone(), (*digest).clone())).is_some_and(|(m, _)| m == INDEX)
            })
            .map(|((repo, tag), digest)| Image { repository: repo.clone(), tag: tag.clone(), digest: digest.clone() })
            .collect()
    }
}

/// A running server; stopped when dropped.
pub struct Running {
    pub addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for _ in &self.workers {
            self.server.unblock();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Starts serving `catalog` on `listen` (a loopback address; port 0 picks one) with `threads`
/// workers (Docker fetches three layers at once).
pub fn start(catalog: Catalog, listen: SocketAddr, threads: usize) -> Result<Running> {
    if !listen.ip().is_loopback() {
        return Err(Error::Invalid {
            path: listen.to_string(),
            message: "the bundle's registry listens on loopback only (127.0.0.1 or ::1)".into(),
        });
    }
    let server = tiny_http::Server::http(listen).map_err(|e| Error::Invalid {
        path: listen.to_string(),
        message: format!("cannot listen there: {e} (another registry on this port? pass another --port)"),
    })?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::Invalid { path: listen.to_string(), message: "not an IP listener".into() })?;
    let server = Arc::new(server);
    let catalog = Arc::new(catalog);
    let workers = (0..threads.max(1))
        .map(|_| {
            let (server, catalog) = (server.clone(), catalog.clone());
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    let _ = answer(&catalog, request);
                }
            })
        })
        .collect();
    Ok(Running { addr, server, workers })
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

/// An error in the distribution spec's format.
fn error(status: u16, code: &str, message: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    tiny_http::Response::from_data(body.into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "application/json"))
}

/// What a request path asks for.
#[derive(Debug, PartialEq)]
enum Route<'a> {
    Base,
    Manifest { repo: &'a str, reference: &'a str },
    Blob { repo: &'a str, digest: &'a str },
    Tags { repo: &'a str },
}

fn route(path: &str) -> Option<Route<'_>> {
    let path = path.split('?').next().unwrap_or(path);
    let rest = path.strip_prefix("/v2/")?;
    if rest.is_empty() {
        return Some(Route::Base);
    }
    if let Some(repo) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags { repo });
    }
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        return Some(Route::Manifest { repo, reference });
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        return Some(Route::Blob { repo, digest });
    }
    None
}

fn answer(catalog: &Catalog, request: tiny_http::Request) -> std::io::Result<()> {
    use tiny_http::Method;
    if !matches!(request.method(), Method::Get | Method::Head) {
        return request.respond(error(405, "UNSUPPORTED", "this registry serves a bundle and is read-only"));
    }
    let api = header("Docker-Distribution-API-Version", "registry/2.0");
    let url = request.url().to_string();
    match route(&url) {
        Some(Route::Base) => request.respond(
            tiny_http::Response::from_data(b"{}".to_vec())
                .with_header(api)
                .with_header(header("Content-Type", "application/json")),
        ),
        Some(Route::Tags { repo }) => {
            let tags: Vec<&str> = catalog.tags.keys().filter(|(r, _)| r == repo).map(|(_, t)| t.as_str()).collect();
            if tags.is_empty() {
                return request.respond(error(404, "NAME_UNKNOWN", "no such repository in this bundle"));
            }
            let body = serde_json::json!({ "name": repo, "tags": tags }).to_string();
            request.respond(
                tiny_http::Response::from_data(body.into_bytes())
                    .with_header(api)
                    .with_header(header("Content-Type", "application/json")),
            )
        }
        Some(Route::Manifest { repo, reference }) => {
            let digest = if reference.starts_with("sha256:") {
                reference.to_string()
            } else {
                match catalog.tags.get(&(repo.to_string(), reference.to_string())) {
                    Some(d) => d.clone(),
                    None => return request.respond(error(404, "MANIFEST_UNKNOWN", "no such tag in this bundle")),
                }
            };
            let Some((media, bytes)) = catalog.manifests.get(&(repo.to_string(), digest.clone())) else {
                return request.respond(error(404, "MANIFEST_UNKNOWN", "no such manifest in this repository"));
            };
            request.respond(
                tiny_http::Response::from_data(bytes.to_vec())
                    .with_header(api)
                    .with_header(header("Content-Type", media))
                    .with_header(header("Docker-Content-Digest", &digest)),
            )
        }
        Some(Route::Blob { repo, digest }) => {
            if !catalog.blobs.get(digest).is_some_and(|repos| repos.contains(repo)) {
                return request.respond(error(404, "BLOB_UNKNOWN", "no such blob in this repository"));
            }
            let file = blob_path(&catalog.layout, digest).and_then(|p| std::fs::File::open(&p).map_err(io(&p)));
            match file {
                Ok(f) => request.respond(
                    tiny_http::Response::from_file(f)
                        .with_header(api)
                        .with_header(header("Content-Type", "application/octet-stream"))
                        .with_header(header("Docker-Content-Digest", digest)),
                ),
                Err(e) => request.respond(error(500, "BLOB_UNKNOWN", &e.to_string())),
            }
        }
        None => request.respond(error(404, "NOT_FOUND", "not a registry API path")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_as_the_distribution_spec_names_them() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(
            route("/v2/stella/stella-api/manifests/0.1.0"),
            Some(Route::Manifest { repo: "stella/stella-api", reference: "0.1.0" })
        );
        assert_eq!(
            route("/v2/stella/stella-api/blobs/sha256:ab"),
            Some(Route::Blob { repo: "stella/stella-api", digest: "sha256:ab" })
        );
        assert_eq!(route("/v2/stella/stella-api/tags/list?n=10"), Some(Route::Tags { repo: "stella/stella-api" }));
        assert_eq!(route("/etc/passwd"), None);
    }
}
