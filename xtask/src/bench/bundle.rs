//! `cargo xtask bench bundle`: the air-gap bundle against the usual tools, in one run.
//!
//! - bundle creation (`cargo xtask bundle`, checksums and signature included) against GNU tar
//!   piped into `zstd` at the same level over the same files;
//! - the bundle's size against the sum of the layout's unique blobs (goal: at most 1.02);
//! - `load.sh` into an empty registry (verification of every file included) against `skopeo
//!   copy --all` of every named entry of the same layout (images, signature and attestation
//!   tags; skopeo cannot address the SBOMs, unnamed referrers) into another empty registry;
//!   goal: ratio at most 1.
//!
//! The registries are Debian's `docker-registry` on loopback, started fresh for every run.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::Serialize;

use super::{Options, median_secs};
use crate::{bundle, images, shell};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Figures {
    bundle_secs: f64,
    tar_zstd_secs: f64,
    create_ratio: f64,
    bundle_bytes: u64,
    unique_blob_bytes: u64,
    size_ratio: f64,
    load_secs: f64,
    skopeo_secs: f64,
    load_ratio: f64,
}

/// A `docker-registry` on a free loopback port, serving a temporary directory.
struct Registry {
    child: std::process::Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> anyhow::Result<Registry> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting docker-registry (cargo xtask setup --test installs it)")?;
        let host = format!("127.0.0.1:{port}");
        for _ in 0..200 {
            if std::net::TcpStream::connect(&host).is_ok() {
                return Ok(Registry { child, host, _dir: dir });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        anyhow::bail!("docker-registry did not start on {host}")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let runs = options.runs.max(1);
    let layout = images::default_out();
    let work = tempfile::tempdir()?;
    let bundle_options =
        bundle::Options { layout: layout.clone(), out: work.path().join("out"), key: None, since: None };
    // The first build compiles the loaders; it is not measured.
    let made = bundle::build(&bundle_options)?;
    let bundle_secs = median_secs(runs, || bundle::build(&bundle_options).map(|_| ()))?;

    // The same files, by GNU tar and zstd (same level, one thread).
    let unpacked = work.path().join("unpacked");
    stella_distribution::unpack::unpack(
        &made.path,
        &unpacked,
        &stella_distribution::bundle::Trust::Embedded,
        Default::default(),
    )?;
    let top = bundle::single_top(&unpacked)?;
    let baseline = work.path().join("baseline.tar.zst");
    let script = format!(
        "tar --sort=name -cf - -C {} . | zstd -q -T1 -{} -o {} -f",
        top.display(),
        bundle::archive::LEVEL,
        baseline.display()
    );
    let tar_zstd_secs = median_secs(runs, || shell::run(Command::new("sh").arg("-c").arg(&script)))?;
    let unique_blob_bytes = dir_bytes(&layout.join("blobs/sha256"))?;

    // Loading: ours (load.sh, verification included) against skopeo copy --all.
    let key = crate::plan::Request::new(crate::catalog::default_path(), layout.clone())
        .key
        .context("the bench loads a signed bundle: set $STELLA_SIGNING_KEY_FILE")?;
    let public = key.with_file_name("cosign.pub");
    let load_secs = median_secs(runs, || {
        let registry = Registry::start()?;
        let _ = std::fs::remove_dir_all(top.join(stella_distribution::checksums::LOADED));
        shell::run(Command::new("sh").arg(top.join("load.sh")).args(["--to", &registry.host, "--key"]).arg(&public))
    })?;
    // The same content by skopeo: every named entry of the layout (each image, and each cosign
    // signature and attestation tag), one `skopeo copy --all` each. The SBOMs, which the layout
    // holds as unnamed OCI referrers, skopeo cannot address; the loader pushes those too.
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let named: Vec<String> = index["manifests"]
        .as_array()
        .context("index.json has no manifests")?
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_string))
        .collect();
    let skopeo_secs = median_secs(runs, || {
        let registry = Registry::start()?;
        for reference in &named {
            shell::run(Command::new("skopeo").args([
                "copy",
                "--quiet",
                "--all",
                "--dest-tls-verify=false",
                &format!("oci:{}:{reference}", layout.display()),
                &format!("docker://{}/stella/{reference}", registry.host),
            ]))?;
        }
        Ok(())
    })?;
    let f = Figures {
        bundle_secs,
        tar_zstd_secs,
        create_ratio: bundle_secs / tar_zstd_secs,
        bundle_bytes: made.size,
        unique_blob_bytes,
        size_ratio: made.size as f64 / unique_blob_bytes as f64,
        load_secs,
        skopeo_secs,
        load_ratio: load_secs / skopeo_secs,
    };
    if options.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
        return Ok(());
    }
    println!("bundle creation ({} files, checksums and signature): {:.2} s", made.files, f.bundle_secs);
    println!(
        "baseline tar | zstd -{} -T1 over the same files:   {:.2} s   ratio {:.2}",
        bundle::archive::LEVEL,
        f.tar_zstd_secs,
        f.create_ratio
    );
    println!(
        "bundle size {} against the unique blobs {}: ratio {:.3} (goal at most 1.02)",
        images::human(f.bundle_bytes),
        images::human(f.unique_blob_bytes),
        f.size_ratio
    );
    println!("load.sh into an empty registry (verification included): {:.2} s", f.load_secs);
    println!(
        "skopeo copy --all of the {} named entries (images, signatures, attestations; no SBOMs): {:.2} s   ratio {:.2} (goal at most 1)",
        named.len(),
        f.skopeo_secs,
        f.load_ratio
    );
    Ok(())
}
