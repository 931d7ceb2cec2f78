//! A real registry for the tests (Debian's `docker-registry` on loopback) and the check that a
//! registry holds a build exactly: every image and tag at the build's digests (read back with
//! skopeo), every platform manifest byte for byte, SBOMs through the referrers tag, the cosign
//! signatures verifying with openssl, and Docker pulling by digest.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use xtask::assemble::Built;

/// A registry serving a temporary directory, stopped when dropped; `stop` and `start` keep the
/// port and the data, as a registry that went away and came back.
pub struct LocalRegistry {
    child: Option<Child>,
    pub host: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    pub fn new() -> LocalRegistry {
        LocalRegistry::with_tls(None)
    }

    /// Serving HTTPS with this certificate and key (PEM files) when given.
    pub fn with_tls(tls: Option<(&Path, &Path)>) -> LocalRegistry {
        LocalRegistry::with(tls, None)
    }

    /// With TLS, and with Basic authentication against this htpasswd file (bcrypt), when given.
    pub fn with(tls: Option<(&Path, &Path)>, htpasswd: Option<&Path>) -> LocalRegistry {
        let auth =
            htpasswd.map(|file| format!("auth:\n  htpasswd:\n    realm: stella-test\n    path: {}\n", file.display()));
        LocalRegistry::configured(tls, auth)
    }

    /// With Bearer token authentication: tokens from `realm`, for `service`, issued by
    /// `issuer` and signed by a key whose certificate is in `rootcertbundle`.
    pub fn with_token_auth(realm: &str, service: &str, issuer: &str, rootcertbundle: &Path) -> LocalRegistry {
        let auth = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            rootcertbundle.display()
        );
        LocalRegistry::configured(None, Some(auth))
    }

    fn configured(tls: Option<(&Path, &Path)>, auth: Option<String>) -> LocalRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::free_port();
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = tls {
            text.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
        }
        if let Some(auth) = auth {
            text.push_str(&auth);
        }
        std::fs::write(&config, text).unwrap();
        let mut r = LocalRegistry { child: None, host: format!("127.0.0.1:{port}"), config, _dir: dir };
        r.start();
        r
    }

    pub fn start(&mut self) {
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&self.host).is_err() {
            assert!(std::time::Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The repositories the registry holds.
    pub fn catalog(&self) -> Vec<String> {
        let (_, body) = crate::get(&format!("http://{}/v2/_catalog?n=1000", self.host)).expect("the registry answers");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect()
    }
}

impl Default for LocalRegistry {
    fn default() -> LocalRegistry {
        LocalRegistry::new()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn skopeo(args: &[&str]) -> String {
    crate::run(Command::new("skopeo").args(args))
}

/// Whether openssl verifies `sig` (DER) over `payload` with the PEM public key.
pub fn openssl_verifies(public: &Path, payload: &[u8], sig: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload"), payload).unwrap();
    std::fs::write(dir.path().join("sig"), sig).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(dir.path().join("sig"))
        .arg(dir.path().join("payload"))
        .output()
        .expect("openssl");
    out.status.success()
}

/// Asserts that `host/prefix` holds every image of `built` exactly (see the module header);
/// signatures are checked when `public` (the signing key's PEM) is given.
pub fn assert_holds(built: &Built, host: &str, prefix: &str, public: Option<&Path>) {
    for image in &built.images {
        let repo = format!("docker://{host}/{prefix}/{}", image.name);
        for tag in &built.tags {
            let inspect: serde_json::Value =
                serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("{repo}:{tag}")])).unwrap();
            assert_eq!(inspect["Digest"], image.digest.as_str(), "{} {tag}", image.name);
        }
        // Every platform manifest is there by digest, byte for byte what the build wrote.
        for (platform, p) in &image.platforms {
            let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &format!("{repo}@{}", p.manifest)]);
            assert_eq!(xtask::layer::sha256(raw.as_bytes()), p.manifest, "{} {platform}", image.name);
            // SBOMs: the referrers tag of the platform manifest lists an SPDX artifact.
            let tag = p.manifest.replace(':', "-");
            let referrers: serde_json::Value =
                serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", "--raw", &format!("{repo}:{tag}")]))
                    .unwrap();
            let types: Vec<&str> =
                referrers["manifests"].as_array().unwrap().iter().filter_map(|m| m["artifactType"].as_str()).collect();
            assert!(types.contains(&xtask::sbom::MEDIA_TYPE), "{} {platform}: referrers {types:?}", image.name);
            // Signed builds: cosign v3's bundles (signature, SBOM attestation) arrive as referrers.
            // Each listed with the predicate type it announces (the referrers list carries the
            // manifests' annotations), which is how cosign v3 picks one without fetching it.
            if public.is_some() {
                let mut predicates: Vec<&str> = referrers["manifests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["artifactType"] == xtask::sigstore::BUNDLE)
                    .map(|m| m["annotations"][xtask::sigstore::PREDICATE_ANNOTATION].as_str().unwrap_or("none"))
                    .collect();
                predicates.sort();
                let wanted = [xtask::sigstore::SIGN_PREDICATE, xtask::sigstore::SPDX_PREDICATE];
                assert_eq!(predicates, wanted, "{} {platform}: referrers {types:?}", image.name);
            }
        }
        // The cosign signature tag of every index, fetched with skopeo, verifies with openssl.
        if let Some(public) = public {
            assert_signed(&format!("{host}/{prefix}/{}", image.name), &image.digest, public);
        }
    }
    // Docker pulls an image by digest from the registry.
    let api = built.images.iter().find(|i| i.name == "stella-api").unwrap();
    let reference = format!("{host}/{prefix}/stella-api@{}", api.digest);
    let pull = Command::new("docker").args(["pull", "-q", &reference]).output().unwrap();
    assert!(pull.status.success(), "docker pull {reference}: {}", String::from_utf8_lossy(&pull.stderr));
    let _ = Command::new("docker").args(["rmi", &reference]).output();
}

/// Asserts that cosign's signature tag of `digest` in `repository` (`host/path`), copied out with
/// skopeo, verifies with openssl and names `digest`.
pub fn assert_signed(repository: &str, digest: &str, public: &Path) {
    let sig_ref = format!("docker://{repository}:{}", xtask::sign::tag_for(digest, "sig"));
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:sig", out.path().display());
    skopeo(&["copy", "--quiet", "--src-tls-verify=false", &sig_ref, &dest]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| std::fs::read(out.path().join("blobs/sha256").join(&d[7..])).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let layer = &manifest["layers"][0];
    let payload = blob(layer["digest"].as_str().unwrap());
    let sig = base64::engine::general_purpose::STANDARD
        .decode(layer["annotations"][xtask::sign::SIG_ANNOTATION].as_str().unwrap())
        .unwrap();
    assert!(openssl_verifies(public, &payload, &sig), "{repository}: the pulled signature does not verify");
    let claimed: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claimed["critical"]["image"]["docker-manifest-digest"], digest);
}

/// `sha256:<hex>` of a file.
pub fn sha256_file(path: &Path) -> String {
    stella_distribution::sha256_file(path).expect("reading the file")
}
