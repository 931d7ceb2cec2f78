//! `cargo xtask bundle`: the air-gap bundle `stella-bundle-vX.Y.Z.tar.zst`, one file for both
//! architectures, signed and reproducible.
//!
//! Plan, then execute: every entry is collected first (the OCI layout of the last build, the
//! committed deployment files, the install docs, the static loader for amd64 and arm64, the
//! generated `load.sh` and README), then `checksums.txt` over all of them, its signature, and
//! the archive. Nothing is copied into a staging directory: entries stream from their sources.
//!
//! Refused: a layout built from other inputs than HEAD's (rebuild), unsigned images or images
//! signed by another key than the bundle's, deployment files that are not what `cargo xtask
//! deploy` writes for this build.

pub mod archive;
pub mod delta;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
pub use stella_distribution::bundle::{Trust, Verified};
use stella_distribution::{checksums, signature, unpack};

use crate::assemble::Built;
use crate::bundle::archive::{Entry, Source};
use crate::{compile, plan, shell, sign, workspace};

pub struct Options {
    /// The build to bundle (default target/oci).
    pub layout: PathBuf,
    /// Where the archive is written (default target/bundle).
    pub out: PathBuf,
    /// The signing key (the one that signed the images).
    pub key: Option<PathBuf>,
    /// A previous bundle: write a delta with only the blobs it lacks.
    pub since: Option<PathBuf>,
}

/// The written bundle.
#[derive(Debug, serde::Serialize)]
pub struct Bundle {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub files: usize,
    pub fingerprint: String,
    /// For a delta: the base bundle, and how many blobs are taken from it.
    pub base: Option<String>,
    pub blobs_from_base: usize,
    /// Written beside the archive: the loader per architecture, SHA256SUMS and its signature.
    pub beside: Vec<PathBuf>,
}

/// The list of what `cargo xtask bundle` writes beside the archive (the archive and the
/// loaders, `sha256sum` format), signed in `SHA256SUMS.sig` as `bundle.sig` is.
pub const SUMS: &str = "SHA256SUMS";

/// `cosign sign-blob`'s format: base64 of the DER ECDSA signature, one line; checked with the
/// loader's own verifier before it is written.
fn sign_blob(key: &p256::ecdsa::SigningKey, message: &[u8]) -> anyhow::Result<String> {
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD.encode(sign::sign_bytes(key, message));
    signature::verify(key.verifying_key(), message, &sig, "a new signature")?;
    Ok(format!("{sig}\n"))
}

pub fn default_out() -> PathBuf {
    workspace::target_dir().join("bundle")
}

/// Files of the repository under `dir` that git tracks (never a user's `.env` or `.secrets/`).
fn tracked(root: &Path, dir: &str) -> anyhow::Result<Vec<String>> {
    let text = shell::output(std::process::Command::new("git").args(["ls-files", "-z", "--", dir]).current_dir(root))?;
    let mut files: Vec<String> = text.split('\0').filter(|s| !s.is_empty()).map(str::to_string).collect();
    files.sort();
    Ok(files)
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

pub fn build(options: &Options) -> anyhow::Result<Bundle> {
    let root = shell::root();
    let built = Built::read(&options.layout)?;
    let request = plan::Request::new(crate::catalog::default_path(), options.layout.clone());
    let key_path = options.key.clone().or(request.key.clone()).with_context(|| {
        format!("a bundle is always signed: give --key FILE or ${} (the key that signed the images)", sign::KEY_ENV)
    })?;
    let plan = plan::plan(&request)?;
    if built.revision != plan.revision {
        bail!(
            "{} was built from revision {}, but the image inputs are at {}: run `cargo xtask images` first",
            options.layout.display(),
            built.revision,
            plan.revision
        );
    }
    // A release an auditor cannot rebuild is not one: its revision names no commit.
    if plan.dirty {
        bail!(
            "the image inputs have uncommitted changes (revision {}): a bundle ships only what a commit \
             describes, so an auditor can rebuild it; commit or stash them, then `cargo xtask images`",
            plan.revision
        );
    }
    let key = sign::read_key(&key_path)?;
    let fingerprint = sign::fingerprint(&key);
    if built.signed_by.as_deref() != Some(fingerprint.as_str()) {
        bail!(
            "the images of {} are {}; the bundle's key is {fingerprint}: build them with `cargo xtask images --key {}`",
            options.layout.display(),
            built.signed_by.as_deref().map(|f| format!("signed by {f}")).unwrap_or_else(|| "unsigned".into()),
            key_path.display()
        );
    }
    // The bundle ships deploy/ and docs/ as committed: refuse uncommitted changes there.
    let dirty = shell::output(
        std::process::Command::new("git").args(["status", "--porcelain", "--", "deploy", "docs"]).current_dir(&root),
    )?;
    if !dirty.trim().is_empty() {
        bail!(
            "deploy/ or docs/ has uncommitted changes, which the bundle would ship unsigned by any commit:\n{dirty}  help: commit or stash them first"
        );
    }
    // The deployment files must be the ones this build gives.
    crate::deploy::run(&crate::deploy::Options {
        layout: options.layout.clone(),
        out: root.join("deploy"),
        docs: None,
        check: true,
    })
    .context("the bundle ships the committed deployment files")?;

    let version = format!("v{}", plan.version);
    let top = format!("stella-bundle-{version}");
    let mut entries = Vec::new();
    // The OCI layout.
    for name in ["oci-layout", "index.json", "images.json"] {
        entries.push(Entry {
            path: format!("oci/{name}"),
            source: Source::File(options.layout.join(name)),
            executable: false,
        });
    }
    let base = match &options.since {
        Some(since) => Some(delta::read_base(since, key.verifying_key())?),
        None => None,
    };
    let omitted = match &base {
        Some(b) => b.omitted(&options.layout)?,
        None => Default::default(),
    };
    if let Some(b) = &base {
        entries.push(Entry {
            path: stella_distribution::bundle::BASE.into(),
            source: Source::Bytes(b.record(&omitted)),
            executable: false,
        });
    }
    let blobs = options.layout.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).with_context(|| format!("reading {}", blobs.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if omitted.contains(&format!("sha256:{name}")) {
            continue;
        }
        entries.push(Entry {
            path: format!("oci/blobs/sha256/{name}"),
            source: Source::File(blobs.join(&name)),
            executable: false,
        });
    }
    // Deployment files and docs, as committed.
    for (dir, prefix) in [("deploy/compose", "compose/"), ("deploy/helm", "helm/"), ("docs", "docs/")] {
        for f in tracked(&root, dir)? {
            let rel = f.trim_start_matches(dir).trim_start_matches('/');
            let path = root.join(&f);
            entries.push(Entry {
                path: format!("{prefix}{rel}"),
                executable: executable(&path),
                source: Source::File(path),
            });
        }
    }
    // The loader, static, for each platform of the build.
    let mut loaders = Vec::new();
    for target in &plan.targets {
        let bin = compile::loader(&plan, target)?;
        let bytes = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
        let arch = compile::arch(&target.platform).to_string();
        entries.push(Entry {
            path: format!("bin/stella-load-{arch}"),
            source: Source::Bytes(bytes.clone()),
            executable: true,
        });
        loaders.push((arch, bytes));
    }
    let public = {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        key.verifying_key().to_public_key_pem(LineEnding::LF).context("encoding the public key")?
    };
    entries.push(Entry { path: "cosign.pub".into(), source: Source::Bytes(public.into_bytes()), executable: false });
    entries.push(Entry {
        path: "load.sh".into(),
        source: Source::Bytes(include_str!("load.sh").as_bytes().to_vec()),
        executable: true,
    });
    entries.push(Entry {
        path: "README.md".into(),
        source: Source::Bytes(readme(&version, &built, &fingerprint).into_bytes()),
        executable: false,
    });

    // sizes.txt (what bounds an unpack), then checksums.txt over every entry, in path order,
    // then its signature.
    let mut sizes = Vec::new();
    for e in entries.iter().filter(|e| !stella_distribution::bundle::HEAD.contains(&e.path.as_str())) {
        let n = match &e.source {
            Source::File(p) => std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?.len(),
            Source::Bytes(b) => b.len() as u64,
        };
        sizes.push((e.path.clone(), n));
    }
    let sizes = checksums::write_sizes(sizes.iter().map(|(p, n)| (p.as_str(), *n)));
    entries.push(Entry { path: checksums::SIZES.into(), source: Source::Bytes(sizes.into_bytes()), executable: false });
    let mut sums: Vec<(String, String)> = Vec::new();
    for e in &entries {
        let digest = match &e.source {
            Source::File(p) => stella_distribution::sha256_file(p)?,
            Source::Bytes(b) => stella_distribution::sha256(b),
        };
        sums.push((e.path.clone(), digest));
    }
    sums.sort();
    let text: String = sums.iter().map(|(p, d)| format!("{}  {p}\n", d.trim_start_matches("sha256:"))).collect();
    // Self-check with the loader's parser: what we write is what it reads.
    checksums::parse(&text, "checksums.txt")?;
    let sig = sign_blob(&key, text.as_bytes())?;
    let files = entries.len() + 2;
    entries.push(Entry { path: checksums::FILE.into(), source: Source::Bytes(text.into_bytes()), executable: false });
    entries.push(Entry {
        path: checksums::SIGNATURE.into(),
        source: Source::Bytes(sig.into_bytes()),
        executable: false,
    });

    std::fs::create_dir_all(&options.out).with_context(|| format!("creating {}", options.out.display()))?;
    let suffix = if base.is_some() { "-delta" } else { "" };
    let path = options.out.join(format!("{top}{suffix}.tar.zst"));
    archive::write(&path, &top, entries, plan.epoch)?;
    let sha256 = stella_distribution::sha256_file(&path)?;
    let size = std::fs::metadata(&path)?.len();
    // Beside the archive: the loaders, so the first step on the disconnected side needs neither
    // root nor tar (`stella-load-<arch> unpack`), and SHA256SUMS over all three, signed.
    let mut listed = vec![(path.clone(), sha256.clone())];
    for (arch, bin) in &loaders {
        let beside = options.out.join(format!("stella-load-{arch}"));
        crate::oci::write_atomic(&beside, bin)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&beside, std::fs::Permissions::from_mode(0o755))?;
        }
        listed.push((beside, stella_distribution::sha256(bin)));
    }
    let sums: String = listed
        .iter()
        .map(|(p, d)| {
            format!("{}  {}\n", d.trim_start_matches("sha256:"), p.file_name().unwrap_or_default().to_string_lossy())
        })
        .collect();
    crate::oci::write_atomic(&options.out.join(SUMS), sums.as_bytes())?;
    crate::oci::write_atomic(&options.out.join(format!("{SUMS}.sig")), sign_blob(&key, sums.as_bytes())?.as_bytes())?;
    let mut beside: Vec<PathBuf> = listed.into_iter().skip(1).map(|(p, _)| p).collect();
    beside.extend([options.out.join(SUMS), options.out.join(format!("{SUMS}.sig"))]);
    Ok(Bundle {
        path,
        sha256,
        size,
        files,
        fingerprint,
        base: base.map(|b| b.name),
        blobs_from_base: omitted.len(),
        beside,
    })
}

fn readme(version: &str, built: &Built, fingerprint: &str) -> String {
    format!(
        "# StellaOps {version}: air-gap bundle\n\n\
         Images of revision {revision}, for linux/amd64 and linux/arm64, each pinned by digest, signed, with SBOMs and provenance.\n\n\
         This bundle says it was signed by the key `{fingerprint}`. That line is part of the bundle: trust it only\n\
         once it matches the fingerprint StellaOps published through another channel, and pass that one (or your\n\
         trusted copy of the public key) to load.sh:\n\n\
         ## Verify, then load\n\n\
         ```sh\n\
         ./load.sh --verify-only --fingerprint <the published fingerprint>\n\
         ./load.sh --to registry.example.internal:5000 --key /path/to/trusted/cosign.pub\n\
         ```\n\n\
         `load.sh` runs `bin/stella-load-<arch>`: it checks `bundle.sig` over `checksums.txt` and every file before\n\
         anything else, then pushes every image, signature, SBOM and attestation with digests unchanged, and writes\n\
         `loaded/compose.env` and `loaded/values-registry.yaml` pointing at that registry. A second run uploads nothing.\n\n\
         Without running anything from the bundle, with your trusted copy of the key (unpacked as an ordinary\n\
         user, never as root):\n\n\
         ```sh\n\
         test -z \"$(find . ! -type f ! -type d)\"    # no link, device or FIFO\n\
         base64 -d bundle.sig > /tmp/bundle.sig.der\n\
         openssl dgst -sha256 -verify /path/to/trusted/cosign.pub -signature /tmp/bundle.sig.der checksums.txt\n\
         sha256sum -c checksums.txt\n\
         # and no file that checksums.txt does not list:\n\
         find . -type f ! -name checksums.txt ! -name bundle.sig ! -path './loaded/*' | sed 's|^\\./||' | sort > /tmp/present\n\
         cut -c67- checksums.txt | sort | diff - /tmp/present\n\
         ```\n\n\
         Contents: `oci/` (one OCI layout with every image), `compose/`, `helm/stella/` (with `values-airgap.yaml`),\n\
         `docs/` (the install guides, offline), `bin/`, `load.sh`, `cosign.pub`, `sizes.txt`, `checksums.txt`, `bundle.sig`.\n\
         See `docs/install/airgap.md`.\n",
        revision = built.revision,
    )
}

/// Unpacks `file` into a temporary directory with the loader's checks (which verify it on the
/// way), then verifies the unpacked directory as `load.sh` will.
pub fn verify(file: &Path, trust: &Trust) -> anyhow::Result<Verified> {
    let tmp = tempfile::Builder::new().prefix("stella-bundle-verify-").tempdir()?;
    let dir = tmp.path().join("bundle");
    unpack::unpack(file, &dir, trust, unpack::Limits::default())?;
    let top = single_top(&dir)?;
    Ok(stella_distribution::bundle::verify(&top, trust)?)
}

/// The bundle's one top directory (`stella-bundle-vX.Y.Z`).
pub fn single_top(dir: &Path) -> anyhow::Result<PathBuf> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    match entries.as_slice() {
        [one] if one.is_dir() => Ok(one.clone()),
        _ => bail!("{}: a bundle holds one top directory, stella-bundle-vX.Y.Z/", dir.display()),
    }
}

/// `512M`, `2G`, `1048576`.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let (digits, shift) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 10),
        Some('M' | 'm') => (&text[..text.len() - 1], 20),
        Some('G' | 'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let n: u64 =
        digits.parse().with_context(|| format!("--size {text}: expected bytes, or a number with K, M or G"))?;
    if n == 0 {
        bail!("--size {text}: a part must hold at least one byte");
    }
    Ok(n << shift)
}

/// Splits `file` into `file.part-NNN` of at most `size` bytes and writes `file.parts.sha256`
/// (sha256sum format: each part, then the whole file). `cat file.part-* > file` joins them.
pub fn split(file: &Path, size: u64) -> anyhow::Result<Vec<PathBuf>> {
    use std::io::Read;
    let mut input = std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut parts = Vec::new();
    let mut sums = String::new();
    for i in 0.. {
        let mut chunk = Vec::new();
        (&mut input).take(size).read_to_end(&mut chunk)?;
        if chunk.is_empty() && i > 0 {
            break;
        }
        let part = PathBuf::from(format!("{}.part-{i:03}", file.display()));
        crate::oci::write_atomic(&part, &chunk)?;
        sums.push_str(&format!(
            "{}  {name}.part-{i:03}\n",
            stella_distribution::sha256(&chunk).trim_start_matches("sha256:")
        ));
        parts.push(part);
        if (chunk.len() as u64) < size {
            break;
        }
    }
    sums.push_str(&format!("{}  {name}\n", stella_distribution::sha256_file(file)?.trim_start_matches("sha256:")));
    let list = PathBuf::from(format!("{}.parts.sha256", file.display()));
    crate::oci::write_atomic(&list, sums.as_bytes())?;
    parts.push(list);
    Ok(parts)
}
