//! The air-gap bundle, end to end: `cargo xtask bundle` writes it, GNU tar and our own unpacker
//! extract it, openssl and sha256sum check its signature and checksums, and `load.sh` loads it
//! into a real registry (Debian's `docker-registry`), where skopeo, openssl and Docker find
//! every image at the built digests. Then the faults: a registry that goes away mid-push, a
//! byte changed anywhere in a sample of files, crafted archives that try to leave their
//! directory or expand without bound.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use stella_e2e::registry::{LocalRegistry, assert_holds};
use stella_e2e::{output, root, run};
use xtask::assemble::Built;

/// The bundle of the current build, made once for every test of this binary.
struct Made {
    archive: PathBuf,
    sha256: String,
    fingerprint: String,
    public: PathBuf,
    _dir: tempfile::TempDir,
}

fn key() -> PathBuf {
    let key = std::env::var_os(xtask::sign::KEY_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| xtask::workspace::target_dir().join("test-signing-key/cosign.key"));
    assert!(
        key.exists(),
        "{}: the bundle test needs the key that signed the images (cargo xtask test makes it)",
        key.display()
    );
    key
}

fn bundle_into(out: &Path, umask: &str) -> serde_json::Value {
    let text = run(xtask::shell::without_package_vars(&mut Command::new("sh"))
        .arg("-c")
        .arg(format!("umask {umask} && exec cargo xtask bundle --json --out \"$0\" --key \"$1\""))
        .arg(out)
        .arg(key())
        .current_dir(root()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn made() -> &'static Made {
    static MADE: OnceLock<Made> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("stella-bundle-").tempdir().unwrap();
        let report = bundle_into(dir.path(), "022");
        let public = dir.path().join("trusted-cosign.pub");
        std::fs::copy(key().with_file_name("cosign.pub"), &public).unwrap();
        Made {
            archive: PathBuf::from(report["path"].as_str().unwrap()),
            sha256: report["sha256"].as_str().unwrap().to_string(),
            fingerprint: report["fingerprint"].as_str().unwrap().to_string(),
            public,
            _dir: dir,
        }
    })
}

/// Extracts the bundle with GNU tar (an extractor we did not write) into a new directory.
fn extract() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("tar").args(["--zstd", "-xf"]).arg(&made().archive).arg("-C").arg(dir.path()));
    let top = xtask::bundle::single_top(dir.path()).unwrap();
    (dir, top)
}

/// openssl checks `sig` (base64 DER, as `cosign sign-blob` writes) over `message` with the
/// trusted key.
fn openssl_verifies(sig: &Path, message: &Path) {
    use base64::Engine;
    let der = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(sig).unwrap();
    std::fs::write(der.path(), base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap()).unwrap();
    run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&made().public)
        .arg("-signature")
        .arg(der.path())
        .arg(message));
}

fn load(bundle: &Path, args: &[&str]) -> std::process::Output {
    output(Command::new("sh").arg(bundle.join("load.sh")).args(args))
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_bundle_loads_into_a_registry_with_every_digest_and_signature_and_a_second_load_uploads_nothing() {
    let built = Built::read(&xtask::images::default_out()).unwrap();
    let (_dir, bundle) = extract();
    // Independent checks of what the bundle claims: openssl for the signature over
    // checksums.txt (with the trusted key), sha256sum for every file.
    openssl_verifies(&bundle.join("bundle.sig"), &bundle.join("checksums.txt"));
    run(Command::new("sha256sum").args(["-c", "--quiet", "checksums.txt"]).current_dir(&bundle));
    // Both architectures' loaders are static executables of the right machine.
    for (arch, machine) in [("amd64", "x86-64"), ("arm64", "aarch64")] {
        let file = run(Command::new("file").arg(bundle.join(format!("bin/stella-load-{arch}"))));
        assert!(file.contains(machine) && file.contains("static"), "{file}");
    }
    // Beside the archive: the same loaders and SHA256SUMS over the three, signed as bundle.sig
    // is; openssl and sha256sum check them.
    let out = made().archive.parent().unwrap();
    for arch in ["amd64", "arm64"] {
        let name = format!("stella-load-{arch}");
        assert_eq!(std::fs::read(out.join(&name)).unwrap(), std::fs::read(bundle.join("bin").join(&name)).unwrap());
    }
    openssl_verifies(&out.join("SHA256SUMS.sig"), &out.join("SHA256SUMS"));
    let sums = run(Command::new("sha256sum").args(["-c", "SHA256SUMS"]).current_dir(out));
    assert_eq!(sums.lines().filter(|l| l.ends_with(": OK")).count(), 3, "{sums}");
    // The inventory names every image, digest and platform of the build, each with its SBOM.
    let inventory =
        run(Command::new(bundle.join("bin/stella-load-amd64")).args(["inspect", "--json", "--bundle"]).arg(&bundle));
    let inventory: serde_json::Value = serde_json::from_str(&inventory).unwrap();
    assert_eq!(inventory["carried_key"], made().fingerprint.as_str());
    assert_eq!(inventory["images"].as_array().unwrap().len(), built.images.len());
    for image in &built.images {
        let row = inventory["images"].as_array().unwrap().iter().find(|i| i["name"] == image.name.as_str()).unwrap();
        assert_eq!(row["digest"], image.digest.as_str());
        for (platform, p) in &image.platforms {
            let prow =
                row["platforms"].as_array().unwrap().iter().find(|r| r["platform"] == platform.as_str()).unwrap();
            assert_eq!(prow["manifest"], p.manifest.as_str());
            assert!(prow["sbom_packages"].as_u64().is_some_and(|n| n > 0), "{} {platform}: {prow}", image.name);
        }
    }
    let table = run(Command::new(bundle.join("bin/stella-load-amd64")).args(["inspect", "--bundle"]).arg(&bundle));
    assert!(built.images.iter().all(|i| table.contains(&i.name)) && table.contains("not verified here"), "{table}");
    let helm = bundle.join("helm/stella");
    assert!(helm.join("values-airgap.yaml").exists() && helm.join("Chart.yaml").exists());
    assert!(bundle.join("compose/docker-compose.yml").exists() && bundle.join("docs/install/helm-prod.md").exists());
    let readme = std::fs::read_to_string(bundle.join("README.md")).unwrap();
    assert!(readme.contains(&made().fingerprint), "the README names the key's fingerprint");

    let registry = LocalRegistry::new();
    let first = load(&bundle, &["--to", &registry.host, "--key", &made().public.display().to_string()]);
    assert!(first.status.success(), "load.sh:\n{}", text(&first));
    assert!(text(&first).contains("helm install") && text(&first).contains("compose"), "{}", text(&first));
    assert_holds(&built, &registry.host, "stella", Some(&made().public));
    // The settings it wrote point at that registry; the digests stay in the compose file.
    let env = std::fs::read_to_string(bundle.join("loaded/compose.env")).unwrap();
    assert!(env.lines().any(|l| l == format!("STELLA_REGISTRY={}/stella", registry.host)), "{env}");
    let values = std::fs::read_to_string(bundle.join("loaded/values-registry.yaml")).unwrap();
    assert!(values.contains(&format!("imageRegistry: \"{}\"", registry.host)), "{values}");
    // Without a key or fingerprint from elsewhere, load.sh refuses to push...
    let untrusted = load(&bundle, &["--to", &registry.host]);
    assert!(!untrusted.status.success() && text(&untrusted).contains("--trust-embedded"), "{}", text(&untrusted));
    // ...and --verify-only says only "intact, origin unknown", with exit status 3.
    let unknown = load(&bundle, &["--verify-only"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("intact, origin unknown")
            && !text(&unknown).lines().any(|l| l.starts_with("verified:")),
        "{}",
        text(&unknown)
    );
    // ...unless told to accept the bundle's own key; the second run uploads nothing.
    let second = load(&bundle, &["--to", &registry.host, "--trust-embedded"]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("pushed to")
            && text(&second).contains(": 0 blobs uploaded (0 MiB)")
            && text(&second).contains("; 0 manifests put,"),
        "{}",
        text(&second)
    );
    // And the compose file of the bundle, with loaded/compose.env, names those images.
    let config = output(
        Command::new("docker-compose")
            .args(["--env-file", "../loaded/compose.env", "config"])
            .current_dir(bundle.join("compose")),
    );
    let config = text(&config);
    let api = built.images.iter().find(|i| i.name == "stella-api").unwrap();
    assert!(
        config.contains(&format!("{}/stella/stella-api:{}@{}", registry.host, built.tags[0], api.digest)),
        "{config}"
    );
}

#[test]
fn a_load_interrupted_by_the_registry_going_away_completes_on_the_next_run() {
    let built = Built::read(&xtask::images::default_out()).unwrap();
    let (_dir, bundle) = extract();
    let mut registry = LocalRegistry::new();
    let trusted = made().public.display().to_string();
    // One upload at a time, so the registry goes away in the middle of the blobs.
    let mut child = Command::new("sh")
        .arg(bundle.join("load.sh"))
        .args(["--to", &registry.host, "--key", &trusted, "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop the registry once some blobs are in (the loader prints a line per blob).
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok);
    let mut seen: Vec<String> = Vec::new();
    for line in lines.by_ref() {
        let stop = line.starts_with("blob 20/");
        seen.push(line);
        if stop {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.starts_with("blob 20/")), "the load ended before 20 blobs: {seen:?}");
    registry.stop();
    seen.extend(lines);
    let status = child.wait().unwrap();
    assert!(!status.success(), "load.sh went on without its registry:\n{}", seen.join("\n"));
    // The registry comes back with what it had; the next run completes the load.
    registry.start();
    let again = load(&bundle, &["--to", &registry.host, "--key", &trusted]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(!text(&again).contains(": 0 blobs uploaded"), "the second run had blobs left to upload: {}", text(&again));
    assert_holds(&built, &registry.host, "stella", Some(&made().public));
    let third = load(&bundle, &["--to", &registry.host, "--key", &trusted]);
    assert!(text(&third).contains(": 0 blobs uploaded (0 MiB)"), "{}", text(&third));
    let mut repos = registry.catalog();
    repos.sort();
    let mut want: Vec<String> = built.images.iter().map(|i| format!("stella/{}", i.name)).collect();
    want.sort();
    assert_eq!(repos, want, "nothing but the bundle's repositories");
}

#[test]
fn every_changed_byte_in_a_sample_of_files_is_caught_before_anything_is_pushed() {
    let (_dir, bundle) = extract();
    let loader = bundle.join("bin/stella-load-amd64");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("oci/index.json")).unwrap()).unwrap();
    let first_blob = index["manifests"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let biggest = std::fs::read_dir(bundle.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let sample: Vec<PathBuf> = [
        "checksums.txt",
        "bundle.sig",
        "cosign.pub",
        "oci/index.json",
        "oci/images.json",
        &format!("oci/blobs/sha256/{first_blob}"),
        "bin/stella-load-arm64",
        "compose/docker-compose.yml",
        "helm/stella/values.yaml",
        "docs/install/helm-prod.md",
        "README.md",
    ]
    .iter()
    .map(|f| bundle.join(f))
    .chain([biggest])
    .collect();
    let registry = LocalRegistry::new();
    let fp = made().fingerprint.clone();
    for file in &sample {
        let original = std::fs::read(file).unwrap();
        for at in [0, original.len() / 2, original.len() - 1] {
            let mut changed = original.clone();
            changed[at] ^= 0x01;
            std::fs::write(file, &changed).unwrap();
            let out = output(
                Command::new(&loader)
                    .args(["push", "--to", &registry.host, "--fingerprint", &fp, "--bundle"])
                    .arg(&bundle),
            );
            std::fs::write(file, &original).unwrap();
            let message = text(&out);
            assert!(!out.status.success(), "{} changed at byte {at} was not caught", file.display());
            let name = file.file_name().unwrap().to_string_lossy();
            let caught = message.contains(&*name) || message.contains("bundle.sig") || message.contains("cosign.pub");
            assert!(caught, "{} changed at byte {at}: the message names another file: {message}", file.display());
        }
    }
    assert!(registry.catalog().is_empty(), "nothing was pushed: {:?}", registry.catalog());
    // Untouched, it verifies.
    let ok = load(&bundle, &["--verify-only", "--fingerprint", &fp]);
    assert!(ok.status.success(), "{}", text(&ok));
    // loaded/ is not signed: anything there but the loader's own files is refused (a link
    // there would make the loader write wherever it points).
    std::fs::create_dir_all(bundle.join("loaded")).unwrap();
    std::os::unix::fs::symlink("/tmp/stella-loaded-escape", bundle.join("loaded/compose.env")).unwrap();
    let linked = load(&bundle, &["--verify-only", "--fingerprint", &fp]);
    assert!(!linked.status.success() && text(&linked).contains("loaded/compose.env"), "{}", text(&linked));
    std::fs::remove_dir_all(bundle.join("loaded")).unwrap();
    // A key that did not sign it is refused.
    let other = tempfile::tempdir().unwrap();
    xtask::sign::keygen(other.path()).unwrap();
    let refused = load(&bundle, &["--verify-only", "--key", &other.path().join("cosign.pub").display().to_string()]);
    assert!(!refused.status.success() && text(&refused).contains("does not match"), "{}", text(&refused));
}

/// The tar of a crafted archive, written through zstd (with its content checksum) to a file.
type Crafting = tar::Builder<zstd::Encoder<'static, std::fs::File>>;

fn finish(builder: Crafting) {
    builder.into_inner().unwrap().finish().unwrap();
}

/// A tar.zst of the top directory, then what `build` appends.
fn crafted(dir: &Path, name: &str, build: impl FnOnce(&mut Crafting)) -> PathBuf {
    let path = dir.join(format!("{name}.tar.zst"));
    let mut tar = crafting(&path);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    tar.append_data(&mut h, "stella-bundle-v0.1.0/", std::io::empty()).unwrap();
    build(&mut tar);
    finish(tar);
    path
}

fn crafting(path: &Path) -> Crafting {
    let mut enc = zstd::Encoder::new(std::fs::File::create(path).unwrap(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    tar::Builder::new(enc)
}

/// The genuine bundle's tar, with `extra` entries appended after its last file (before the
/// end-of-archive blocks): a signed bundle with something more in it. Streamed, so a bomb
/// never sits in memory.
fn genuine_plus(dir: &Path, name: &str, extra: impl FnOnce(&mut Crafting)) -> PathBuf {
    let mut tar = zstd::decode_all(std::fs::File::open(&made().archive).unwrap()).unwrap();
    // The tar crate ends an archive with two zero blocks; drop them, append, end it again.
    while tar.len() >= 512 && tar[tar.len() - 512..].iter().all(|b| *b == 0) {
        tar.truncate(tar.len() - 512);
    }
    let path = dir.join(format!("{name}.tar.zst"));
    let mut builder = crafting(&path);
    std::io::Write::write_all(builder.get_mut(), &tar).unwrap();
    extra(&mut builder);
    finish(builder);
    path
}

fn raw_entry(tar: &mut Crafting, name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    // Written into the header directly: the tar crate's setters refuse `..` and absolute paths,
    // which is the point of the test.
    let bytes = name.as_bytes();
    h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    tar.append(&h, data).unwrap();
}

/// Each attack on the unpack, through the shipped loader and through `cargo xtask bundle
/// verify`, both given the genuine fingerprint: refused with the reason, nothing left behind.
/// The unpacker's own tests (crates/distribution) add single-byte corruptions, a substituted
/// bomb, a re-signed bundle, trailing bytes and a frame without checksum.
#[test]
fn crafted_archives_that_leave_their_directory_or_expand_without_bound_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let loader = made().archive.parent().unwrap().join("stella-load-amd64");
    let fp = made().fingerprint.clone();
    let top = "stella-bundle-v0.1.0";
    let entry = |name: &str, kind, link: Option<&'static str>| {
        let name = name.to_string();
        move |t: &mut Crafting| raw_entry(t, &name, kind, link, b"")
    };
    let cases: Vec<(&str, PathBuf, &str)> = vec![
        (
            "traversal",
            crafted(dir.path(), "traversal", |t| {
                raw_entry(t, &format!("{top}/../../escaped"), tar::EntryType::Regular, None, b"x")
            }),
            "..",
        ),
        (
            "absolute",
            crafted(dir.path(), "absolute", |t| {
                raw_entry(t, "/tmp/stella-absolute-escape", tar::EntryType::Regular, None, b"x")
            }),
            "absolute",
        ),
        (
            "symlink",
            genuine_plus(
                dir.path(),
                "symlink",
                entry(&format!("{top}/link"), tar::EntryType::Symlink, Some("/etc/passwd")),
            ),
            "Symlink",
        ),
        (
            "hardlink",
            genuine_plus(
                dir.path(),
                "hardlink",
                entry(&format!("{top}/hard"), tar::EntryType::Link, Some("/etc/passwd")),
            ),
            "Link",
        ),
        (
            "device",
            genuine_plus(dir.path(), "device", entry(&format!("{top}/dev"), tar::EntryType::Block, None)),
            "Block",
        ),
        ("fifo", genuine_plus(dir.path(), "fifo", entry(&format!("{top}/fifo"), tar::EntryType::Fifo, None)), "Fifo"),
        (
            "unsigned file",
            genuine_plus(dir.path(), "unsigned", |t| {
                raw_entry(
                    t,
                    &format!("{top}/helm/stella/templates/extra.yaml"),
                    tar::EntryType::Regular,
                    None,
                    b"x: 1\n",
                )
            }),
            "not listed in checksums.txt",
        ),
        (
            // 4 GiB of zeros after a genuine 200 MB bundle: refused from its header, before a
            // byte of it is written, whatever the archive's own size.
            "bomb",
            genuine_plus(dir.path(), "bomb", |t| {
                let size = 4u64 << 30;
                let mut h = tar::Header::new_gnu();
                h.set_size(size);
                h.set_mode(0o644);
                t.append_data(&mut h, format!("{top}/zeros"), std::io::Read::take(std::io::repeat(0), size)).unwrap();
            }),
            "not listed in checksums.txt",
        ),
    ];
    for (what, archive, wanted) in cases {
        let into = dir.path().join(format!("out-{what}"));
        let out = output(Command::new(&loader).arg("unpack").arg(&archive).arg(&into).args(["--fingerprint", &fp]));
        let message = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {message}");
        assert!(message.contains(wanted), "{what}: the message should say {wanted:?}: {message}");
        assert!(
            !into.exists() && !Path::new(&format!("{}.partial", into.display())).exists(),
            "{what}: left files behind"
        );
        // The same refusal through `cargo xtask bundle verify`.
        let xtask = output(
            xtask::shell::cargo()
                .args(["xtask", "bundle", "verify"])
                .arg(&archive)
                .args(["--fingerprint", &fp])
                .current_dir(root()),
        );
        assert!(!xtask.status.success() && text(&xtask).contains(wanted), "{what} via xtask: {}", text(&xtask));
    }
    assert!(
        !dir.path().join("escaped").exists() && !Path::new("/tmp/stella-absolute-escape").exists(),
        "nothing written outside"
    );
    // The genuine archive unpacks as any user would run it: verified with the fingerprint,
    // only "intact, origin unknown" (exit 3) without it.
    let unknown = output(Command::new(&loader).arg("unpack").arg(&made().archive).arg(dir.path().join("plain")));
    assert_eq!(unknown.status.code(), Some(3), "{}", text(&unknown));
    assert!(text(&unknown).contains("intact, origin unknown"), "{}", text(&unknown));
    let ok = output(
        Command::new(&loader)
            .arg("unpack")
            .arg(&made().archive)
            .arg(dir.path().join("trusted"))
            .args(["--fingerprint", &fp]),
    );
    assert!(ok.status.success() && text(&ok).starts_with("verified: "), "{}", text(&ok));
}

#[test]
fn the_bundle_is_the_same_file_whoever_builds_it_and_verifies_through_xtask() {
    // A second bundle of the same build, with another umask and output directory, is the same
    // file byte for byte (two clones build the same layout: see the reproducibility test).
    let other = tempfile::tempdir().unwrap();
    let report = bundle_into(other.path(), "077");
    assert_eq!(report["sha256"].as_str().unwrap(), made().sha256, "the bundle is reproducible");
    let verified = run(xtask::shell::cargo()
        .args(["xtask", "bundle", "verify"])
        .arg(&made().archive)
        .args(["--fingerprint", &made().fingerprint])
        .current_dir(root()));
    assert!(verified.contains("verified"), "{verified}");
    // Split into parts and joined by `cat`, it is the same file.
    let parts = run(xtask::shell::cargo()
        .args(["xtask", "bundle", "split"])
        .arg(PathBuf::from(report["path"].as_str().unwrap()))
        .args(["--size", "50M"])
        .current_dir(root()));
    assert!(parts.lines().count() >= 4, "{parts}");
    let joined = other.path().join("joined.tar.zst");
    run(Command::new("sh").arg("-c").arg(format!(
        "cat {0}.part-* > {1}",
        report["path"].as_str().unwrap(),
        joined.display()
    )));
    assert_eq!(stella_e2e::registry::sha256_file(&joined), made().sha256);
    run(Command::new("sha256sum")
        .args(["-c", "--quiet"])
        .arg(format!("{}.parts.sha256", report["path"].as_str().unwrap()))
        .current_dir(other.path()));
}

#[test]
fn the_loader_pushes_over_tls_to_a_registry_with_the_sites_own_ca() {
    let built = Built::read(&xtask::images::default_out()).unwrap();
    let (_dir, bundle) = extract();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = stella_e2e::site_ca(certs.path());
    let registry = LocalRegistry::with_tls(Some((&cert, &key)));
    let loader = bundle.join("bin/stella-load-amd64");
    let push = |ca: &Path| {
        output(
            Command::new(&loader)
                .args(["push", "--to", &registry.host, "--fingerprint", &made().fingerprint, "--ca-file"])
                .arg(ca)
                .arg("--bundle")
                .arg(&bundle),
        )
    };
    // Another CA: the certificate is refused, nothing is pushed.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = stella_e2e::site_ca(other.path());
    let refused = push(&other_ca);
    assert!(!refused.status.success(), "a certificate of another CA was accepted: {}", text(&refused));
    // The site's CA: the load completes over HTTPS.
    let loaded = push(&ca);
    assert!(loaded.status.success(), "{}", text(&loaded));
    let api = built.images.iter().find(|i| i.name == "stella-api").unwrap();
    // skopeo checks the registry's certificate against the same CA.
    let trust = certs.path().join("trust");
    std::fs::create_dir(&trust).unwrap();
    std::fs::copy(&ca, trust.join("ca.crt")).unwrap();
    let inspect = stella_e2e::registry::skopeo(&[
        "inspect",
        "--cert-dir",
        &trust.display().to_string(),
        &format!("docker://{}/stella/stella-api:{}", registry.host, built.tags[0]),
    ]);
    assert!(inspect.contains(&api.digest), "{inspect}");
}

/// A single host with Docker and no registry: `load.sh --to docker` verifies the bundle, serves
/// its layout on loopback only while Docker pulls each image by digest, stops serving, and
/// writes a compose.env under which `docker-compose config` names images Docker already holds
/// by those digests; one of them runs. Afterwards nothing listens on the port.
#[test]
fn load_to_docker_needs_no_registry_and_leaves_images_pinned_by_digest() {
    let built = Built::read(&xtask::images::default_out()).unwrap();
    let (_dir, bundle) = extract();
    let port = stella_e2e::free_port();
    let host = format!("127.0.0.1:{port}");
    /// Removes what the test tagged, so the engine is left as it was found.
    struct Untag(Vec<String>);
    impl Drop for Untag {
        fn drop(&mut self) {
            for r in &self.0 {
                let _ = Command::new("docker").args(["rmi", "--no-prune", r]).output();
            }
        }
    }
    let mut refs: Vec<String> = Vec::new();
    for image in &built.images {
        refs.push(format!("{host}/stella/{}@{}", image.name, image.digest));
        refs.extend(built.tags.iter().map(|t| format!("{host}/stella/{}:{t}", image.name)));
    }
    let _untag = Untag(refs);
    let untrusted = load(&bundle, &["--to", "docker", "--port", &port.to_string()]);
    assert!(!untrusted.status.success() && text(&untrusted).contains("--trust-embedded"), "{}", text(&untrusted));
    let out =
        load(&bundle, &["--to", "docker", "--port", &port.to_string(), "--key", &made().public.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("loaded {} images into Docker", built.images.len())), "{}", text(&out));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "the bundle's registry still listens");
    // Every image is in the engine under the digest the bundle pins, for this host's platform.
    let platform = xtask::load::host_platform();
    for image in &built.images {
        let reference = format!("{host}/stella/{}@{}", image.name, image.digest);
        let inspect = run(Command::new("docker").args([
            "image",
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}} {{.Id}}",
            &reference,
        ]));
        let config = &image.platforms[platform].config;
        assert_eq!(inspect.trim(), format!("{platform} {config}"), "{reference}");
    }
    // Compose, with the written settings, names exactly those references; with no registry
    // running, a service starts from them (and describes itself).
    let env = std::fs::read_to_string(bundle.join("loaded/compose.env")).unwrap();
    assert!(env.lines().any(|l| l == format!("STELLA_REGISTRY={host}/stella")), "{env}");
    let config = text(&output(
        Command::new("docker-compose")
            .args(["--env-file", "../loaded/compose.env", "config"])
            .current_dir(bundle.join("compose")),
    ));
    let api = built.images.iter().find(|i| i.name == "stella-api").unwrap();
    let wanted = format!("{host}/stella/stella-api:{}@{}", built.tags[0], api.digest);
    assert!(config.contains(&wanted), "{config}");
    let described = run(Command::new("docker").args(["run", "--rm", "--pull", "never", &wanted, "describe", "--json"]));
    let described: serde_json::Value = serde_json::from_str(&described).unwrap_or_else(|e| panic!("{e}: {described}"));
    assert!(described.to_string().contains("8081"), "{described}");
}

/// A delta against the full bundle of the same build: it keeps the manifests and takes every
/// other blob from the base, names that base in `base.json`, is refused by a registry that lacks
/// the base (naming it) and by the Docker path, and loads with no upload once the base is there.
#[test]
fn a_delta_bundle_carries_only_what_its_base_lacks_and_needs_the_base_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let printed = run(xtask::shell::cargo()
        .args(["xtask", "bundle", "--json", "--out"])
        .arg(dir.path())
        .arg("--key")
        .arg(key())
        .arg("--since")
        .arg(&made().archive)
        .current_dir(root()));
    let report: serde_json::Value = serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {printed}"));
    let delta = PathBuf::from(report["path"].as_str().unwrap());
    assert!(delta.file_name().unwrap().to_string_lossy().ends_with("-delta.tar.zst"), "{report}");
    assert_eq!(report["base"], "stella-bundle-v0.1.0");
    let full = std::fs::metadata(&made().archive).unwrap().len();
    let size = report["size"].as_u64().unwrap();
    assert!(report["blobs_from_base"].as_u64().unwrap() > 0 && size * 10 < full, "{size} of {full}: {report}");
    eprintln!("delta against the same build: {size} bytes, full bundle {full} bytes");

    let loader = dir.path().join("stella-load-amd64");
    let into = dir.path().join("unpacked");
    let out =
        output(Command::new(&loader).arg("unpack").arg(&delta).arg(&into).args(["--fingerprint", &made().fingerprint]));
    assert!(out.status.success(), "{}", text(&out));
    let bundle = xtask::bundle::single_top(&into).unwrap();
    let base: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("base.json")).unwrap()).unwrap();
    assert_eq!(base["base"], "stella-bundle-v0.1.0");

    let registry = LocalRegistry::new();
    let public = made().public.display().to_string();
    let refused = load(&bundle, &["--to", &registry.host, "--key", &public]);
    assert!(
        !refused.status.success() && text(&refused).contains("load that bundle into this registry first"),
        "{}",
        text(&refused)
    );
    let docker = load(&bundle, &["--to", "docker", "--port", &stella_e2e::free_port().to_string(), "--key", &public]);
    assert!(!docker.status.success() && text(&docker).contains("is a delta bundle"), "{}", text(&docker));
    // With the base loaded, the delta loads and uploads nothing new.
    let (_full_dir, full_bundle) = extract();
    let first = load(&full_bundle, &["--to", &registry.host, "--key", &public]);
    assert!(first.status.success(), "{}", text(&first));
    let second = load(&bundle, &["--to", &registry.host, "--key", &public]);
    assert!(second.status.success() && text(&second).contains(": 0 blobs uploaded (0 MiB)"), "{}", text(&second));
}
