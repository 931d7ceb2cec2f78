//! The images of the last `cargo xtask images` build (target/oci; `cargo xtask test` builds
//! them first), checked by tools we did not write: skopeo, umoci, oci-image-tool, qemu, Docker.
//! Every image and every platform, none by example.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stella_e2e::{Proc, free_port, run, wait_status};
use xtask::assemble::{Built, BuiltImage};

fn layout() -> PathBuf {
    xtask::images::default_out()
}

fn built() -> Built {
    Built::read(&layout()).expect("the images are built (cargo xtask test builds them before the tests)")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn every_service_has_an_image_for_both_platforms() {
    let built = built();
    for bin in xtask::workspace::service_binaries().unwrap() {
        let image = built.images.iter().find(|i| i.name == bin).unwrap_or_else(|| panic!("no image for {bin}"));
        let platforms: Vec<_> = image.platforms.keys().map(String::as_str).collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{bin}");
    }
}

#[test]
fn skopeo_inspects_every_image_on_both_platforms() {
    let built = built();
    let dir = layout();
    let bins = xtask::workspace::package_binaries().unwrap();
    let catalog = xtask::catalog::load(&stella_e2e::root().join("images.toml"), &bins).unwrap();
    for image in &built.images {
        let stop_signal = catalog.images[&image.name].stop_signal.clone().unwrap_or_else(|| "SIGTERM".into());
        let tag = &built.tags[0];
        let reference = format!("oci:{}:{}:{tag}", dir.display(), image.name);
        for (platform, p) in &image.platforms {
            let arch = platform.rsplit('/').next().unwrap();
            let raw =
                json(&run(Command::new("skopeo").args(["inspect", "--raw", "--override-arch", arch, &reference])));
            assert_eq!(raw["mediaType"], xtask::oci::INDEX, "{}: the tag must name the multi-arch index", image.name);
            let config =
                json(&run(Command::new("skopeo").args(["inspect", "--config", "--override-arch", arch, &reference])));
            assert_eq!(config["architecture"], arch, "{} {platform}", image.name);
            assert_eq!(config["config"]["User"], "65532:65532", "{} {platform}", image.name);
            assert_eq!(config["config"]["StopSignal"], stop_signal.as_str(), "{} {platform}", image.name);
            assert_eq!(config["created"], built.created);
            let labels = &config["config"]["Labels"];
            for key in ["title", "version", "revision", "source", "licenses", "created"] {
                let label = format!("org.opencontainers.image.{key}");
                assert!(labels[&label].is_string(), "{} lacks label {label}", image.name);
            }
            let inspect = json(&run(Command::new("skopeo").args(["inspect", "--override-arch", arch, &reference])));
            assert_eq!(inspect["Architecture"], arch);
            // skopeo picks the platform's manifest from our index, verifies every blob's digest
            // while copying, and keeps the manifest bytes: its digest must be ours.
            let copy = tempfile::tempdir().unwrap();
            let dest = format!("dir:{}", copy.path().display());
            run(Command::new("skopeo").args(["copy", "--quiet", "--override-arch", arch, &reference, &dest]));
            let manifest = std::fs::read(copy.path().join("manifest.json")).unwrap();
            assert_eq!(xtask::layer::sha256(&manifest), p.manifest, "{} {platform}", image.name);
        }
    }
}

/// A layout holding just one platform manifest, named `img`: umoci and oci-image-tool do not
/// choose a platform from an image index. The blobs are hard links to ours, unchanged.
fn single_manifest_view(manifest: &str, into: &Path) {
    let dir = layout();
    std::fs::create_dir_all(into.join("blobs/sha256")).unwrap();
    for entry in std::fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        std::fs::hard_link(entry.path(), into.join("blobs/sha256").join(entry.file_name())).unwrap();
    }
    std::fs::copy(dir.join("oci-layout"), into.join("oci-layout")).unwrap();
    let size = std::fs::metadata(dir.join("blobs/sha256").join(manifest.trim_start_matches("sha256:"))).unwrap().len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": xtask::oci::MANIFEST,
            "digest": manifest,
            "size": size,
            "annotations": { "org.opencontainers.image.ref.name": "img" },
        }],
    });
    std::fs::write(into.join("index.json"), index.to_string()).unwrap();
}

fn check_rootfs(image: &BuiltImage, platform: &str, rootfs: &Path) -> PathBuf {
    let bins = xtask::workspace::package_binaries().unwrap();
    let catalog = xtask::catalog::load(&stella_e2e::root().join("images.toml"), &bins).unwrap();
    let name = catalog.images[&image.name].binary().to_string();
    let binary = rootfs.join("app").join(&name);
    assert!(binary.is_file(), "{} {platform}: no /app/{name}", image.name);
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("stella:x:65532:65532:"), "{}: no stella user", image.name);
    let ca = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(ca.matches("BEGIN CERTIFICATE").count() > 100, "CA bundle too small");
    let out = run(Command::new("find").arg(rootfs).args(["-perm", "/6000"]));
    assert!(out.trim().is_empty(), "{}: setuid or setgid files: {out}", image.name);
    binary
}

#[test]
fn umoci_and_oci_image_tool_accept_every_manifest_and_its_entrypoint_runs() {
    let built = built();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = built
            .images
            .iter()
            .flat_map(|image| image.platforms.iter().map(move |(platform, p)| (image, platform, p)))
            .map(|(image, platform, p)| {
                scope.spawn(move || {
                    let work = tempfile::tempdir().unwrap();
                    let view = work.path().join("layout");
                    single_manifest_view(&p.manifest, &view);
                    let report = run(Command::new("oci-image-tool")
                        .args(["validate", "--type", "image", "--ref", "name=img"])
                        .arg(&view));
                    assert!(report.contains("Validation succeeded"), "{report}");
                    let bundle = work.path().join("bundle");
                    run(Command::new("umoci")
                        .args(["unpack", "--rootless", "--image"])
                        .arg(format!("{}:img", view.display()))
                        .arg(&bundle));
                    let binary = check_rootfs(image, platform, &bundle.join("rootfs"));
                    runs_and_answers(platform, &binary).err().map(|e| format!("{} {platform}: {e}", image.name))
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().unwrap_or_else(|_| Some("a check panicked".into()))).collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs the unpacked entrypoint (arm64 under qemu-aarch64-static): a server must answer
/// `/health/liveness`, a job must describe itself.
fn runs_and_answers(platform: &str, binary: &Path) -> Result<(), String> {
    let (program, mut args): (PathBuf, Vec<String>) = if platform == "linux/arm64" {
        (PathBuf::from("qemu-aarch64-static"), vec![binary.display().to_string()])
    } else {
        (binary.to_path_buf(), vec![])
    };
    let name = binary.file_name().unwrap_or_default().to_string_lossy().into_owned();
    if name == "stella" {
        // The CLI (a tool image): it runs and names its version.
        let out = Command::new(&program).args(&args).arg("--version").output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        return if out.status.success() && text.trim() == format!("stella {}", env!("CARGO_PKG_VERSION")) {
            Ok(())
        } else {
            Err(format!("`stella --version` printed {text:?}"))
        };
    }
    if !xtask::workspace::service_binaries().unwrap().contains(&name) {
        return support_entrypoint_probes(&program, &args);
    }
    let describe =
        Command::new(&program).args(&args).args(["describe", "--json"]).output().map_err(|e| e.to_string())?;
    let info = json(&String::from_utf8_lossy(&describe.stdout));
    if info["kind"] == "job" {
        return if describe.status.success() { Ok(()) } else { Err("describe failed".into()) };
    }
    let port = free_port();
    args.push("serve".into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc =
        Proc::spawn(&program, &argv, &[("STELLA_PORT", port.to_string()), ("STELLA_LISTEN_ADDR", "127.0.0.1".into())]);
    let ready = wait_status(&format!("http://127.0.0.1:{port}/health/liveness"), 200, Duration::from_secs(30));
    ready.map(drop).ok_or_else(|| format!("no liveness answer; stderr: {}", proc.stderr()))
}

/// A support image's entrypoint (stella-postgres, -redis, -nats): its `healthcheck` probes the
/// port its environment names and, with nothing listening there, exits 1 naming the address.
fn support_entrypoint_probes(program: &Path, args: &[String]) -> Result<(), String> {
    let (port, _held) = stella_e2e::closed_port();
    let port = port.to_string();
    let out = Command::new(program)
        .args(args)
        .arg("healthcheck")
        .envs([("PGPORT", &port), ("REDIS_PORT", &port), ("NATS_MONITOR_PORT", &port)])
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(1) && stderr.contains(&format!("127.0.0.1:{port}")) && stderr.starts_with('{') {
        Ok(())
    } else {
        Err(format!("healthcheck against a closed port: {:?}, stderr {stderr}", out.status))
    }
}

/// When the build was signed (`cargo xtask test` signs with a throwaway key), every index and
/// manifest verifies against the key's public half.
#[test]
fn every_image_is_signed_when_a_key_was_given() {
    let built = built();
    let Some(key_file) = std::env::var_os(xtask::sign::KEY_ENV) else {
        assert!(built.signed_by.is_none(), "signed, but the test has no key to check with");
        return;
    };
    let private = xtask::sign::read_key(std::path::Path::new(&key_file)).unwrap();
    assert_eq!(built.signed_by.as_deref(), Some(xtask::sign::fingerprint(&private).as_str()), "signed by another key");
    let report = xtask::verify::verify(&layout(), private.verifying_key()).unwrap();
    assert!(report.ok(), "{report:#?}");
}

/// `cargo xtask images` again with nothing changed answers from the layout's stamp: no plan,
/// no cargo, no assembly (it prints no `$ cargo build` line), nothing in the layout rewritten,
/// and the same record as the build. A dirty checkout's build leaves no stamp, so there is
/// nothing to check then (a rerun would rebuild the layout the other tests are reading).
#[test]
fn a_rerun_with_nothing_changed_compiles_and_writes_nothing() {
    let root = stella_e2e::root();
    let status = run(Command::new("git").args(["status", "--porcelain", "--untracked-files=no"]).current_dir(&root));
    if !status.trim().is_empty() {
        eprintln!("skipped: this checkout has uncommitted changes, so its build wrote no stamp:\n{status}");
        return;
    }
    let stamp = xtask::fresh::path(&layout());
    assert!(stamp.is_file(), "{} is missing: `cargo xtask images` of a clean checkout writes it", stamp.display());
    let written = |name: &str| std::fs::metadata(layout().join(name)).and_then(|m| m.modified()).unwrap();
    let before = (written("index.json"), written("images.json"), written("blobs/sha256"));

    let out = stella_e2e::output(xtask::shell::cargo().args(["xtask", "images"]).current_dir(&root));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("up to date: nothing this build reads changed"), "not answered from the stamp:\n{stderr}");
    assert!(!stderr.contains("cargo build") && !stderr.contains("cargo metadata"), "it ran cargo:\n{stderr}");
    let printed: Built = serde_json::from_value(json(&run(xtask::shell::cargo()
        .args(["xtask", "images", "--json"])
        .current_dir(&root))))
    .unwrap();
    assert_eq!(serde_json::to_value(&printed).unwrap(), serde_json::to_value(built()).unwrap());
    assert_eq!(
        (written("index.json"), written("images.json"), written("blobs/sha256")),
        before,
        "the layout was rewritten"
    );
}

#[test]
fn the_base_layer_is_one_small_blob_shared_by_every_image() {
    let built = built();
    let dir = layout();
    let mut bases = std::collections::BTreeSet::new();
    for image in &built.images {
        for p in image.platforms.values() {
            let manifest: serde_json::Value =
                json(&std::fs::read_to_string(dir.join("blobs/sha256").join(&p.manifest[7..])).unwrap());
            let first = &manifest["layers"][0];
            bases.insert((first["digest"].as_str().unwrap().to_string(), first["size"].as_u64().unwrap()));
        }
    }
    assert_eq!(bases.len(), 1, "images do not share one base layer: {bases:?}");
    let (_, size) = bases.into_iter().next().unwrap();
    assert!(size < 300 * 1024, "the base layer is {size} bytes, over 300 KiB");
}

/// Every server image, loaded into the Docker engine, runs read-only as 65532 with every
/// capability dropped and becomes healthy through its own HEALTHCHECK.
#[test]
fn every_server_image_runs_healthy_in_docker() {
    let built = built();
    let loaded = xtask::load::load(&layout(), &built).expect("docker load");
    // The support images need their secrets and volumes: tests/tests/support.rs runs them.
    let services = xtask::workspace::service_binaries().unwrap();
    let servers: Vec<&BuiltImage> = built
        .images
        .iter()
        .filter(|i| {
            let cfg = &i.platforms[xtask::load::host_platform()];
            let config = json(&std::fs::read_to_string(layout().join("blobs/sha256").join(&cfg.config[7..])).unwrap());
            config["config"]["ExposedPorts"].is_object() && services.contains(&i.name)
        })
        .collect();
    assert!(servers.len() >= 11);
    let tag = &built.tags[0];
    let mut containers = Containers(Vec::new());
    for image in &servers {
        let reference = format!("{}:{tag}", image.repository);
        assert!(loaded.contains(&reference), "{reference} was not loaded");
        let id = run(Command::new("docker").args([
            "run",
            "-d",
            "--read-only",
            "--user",
            "65532:65532",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges:true",
            "--network",
            "none",
            "--health-interval",
            "1s",
            "--health-start-period",
            "1s",
            &reference,
        ]));
        containers.0.push((image.name.clone(), id.trim().to_string()));
    }
    let mut failures = Vec::new();
    for (name, id) in &containers.0 {
        let mut status = String::new();
        for _ in 0..60 {
            status =
                run(Command::new("docker").args(["inspect", "-f", "{{.State.Health.Status}}", id])).trim().to_string();
            if status == "healthy" {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let pid = run(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", id])).trim().to_string();
        let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().to_string();
        let caps = proc_status.lines().find(|l| l.starts_with("CapEff:")).unwrap_or_default().to_string();
        if status != "healthy" || !uid.contains("65532") || !caps.ends_with("0000000000000000") {
            let logs = Command::new("docker")
                .args(["logs", id])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            failures.push(format!("{name}: health {status}, {uid}, {caps}; logs: {logs:?}"));
        }
    }
    drop(containers);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The containers a test started, removed when it ends, a panic included.
struct Containers(Vec<(String, String)>);

impl Drop for Containers {
    fn drop(&mut self) {
        for (_, id) in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}
