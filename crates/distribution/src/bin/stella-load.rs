//! `stella-load`: the air-gap loader shipped static (amd64, arm64) in every StellaOps bundle.
//! It checks a bundle (signature over `checksums.txt`, then every file) before anything else,
//! pushes its OCI layout into a private registry with digests unchanged, and writes the Compose
//! and Helm settings that point at that registry. `load.sh` picks the binary for the host.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stella_distribution::{bundle, checksums, registry, signature, unpack};

#[derive(Parser)]
#[command(name = "stella-load", version, about = "Verify a StellaOps bundle and load it into a registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Trust {
    /// The bundle's directory (unpacked).
    #[arg(long, default_value = ".")]
    bundle: PathBuf,
    /// A trusted copy of the signing public key (PEM).
    #[arg(long, conflicts_with = "fingerprint")]
    key: Option<PathBuf>,
    /// The signing key's fingerprint (sha256:<hex>), published out of band; the bundle's own
    /// cosign.pub must have it.
    #[arg(long)]
    fingerprint: Option<String>,
}

/// Where and how to push: shared by `push` and `push-layout`, so both take the same flags.
#[derive(clap::Args)]
struct Destination {
    /// The registry, HOST[:PORT].
    #[arg(long)]
    to: String,
    /// Repository path under the registry (stella gives HOST/stella/stella-api).
    #[arg(long, default_value = "stella")]
    prefix: String,
    /// Plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    insecure: bool,
    /// Credentials, when the registry asks for them, come from STELLA_REGISTRY_USERNAME and
    /// STELLA_REGISTRY_PASSWORD (or STELLA_REGISTRY_PASSWORD_FILE), never from the command line.
    /// CA certificates (PEM) the registry's TLS certificate must chain to; implies HTTPS.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 4)]
    jobs: usize,
    /// Chunk size of large uploads, in MiB.
    #[arg(long, default_value_t = 16)]
    chunk_mib: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl Destination {
    /// Pushes the layout at `layout`; progress lines go to stderr unless the report is JSON.
    /// `blobs_checked`: every blob was just checked against a signed list, so the push need
    /// not hash them again.
    fn push(&self, layout: &Path, blobs_checked: bool) -> Result<registry::Pushed, String> {
        let options = registry::Options {
            insecure: self.insecure,
            jobs: self.jobs,
            chunk: self.chunk_mib << 20,
            blobs_checked,
            ca_file: self.ca_file.clone(),
            credentials: stella_distribution::auth::Credentials::from_env()?,
            ..registry::Options::default()
        };
        let quiet = self.json;
        registry::push_layout(layout, &self.to, &self.prefix, options, &|line| {
            if !quiet {
                eprintln!("{line}");
            }
        })
        .map_err(|e| e.to_string())
    }

    /// The report: JSON on stdout with `--json` (then `true`), else one summary line.
    fn print(&self, what: &str, report: &registry::Pushed) -> Result<bool, String> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(report).map_err(|e| e.to_string())?);
            return Ok(true);
        }
        println!(
            "pushed {what}to {}/{}: {} blobs uploaded ({} MiB), {} already there, {} mounted; {} manifests; {} tags; {} retries",
            self.to,
            self.prefix,
            report.blobs_uploaded,
            report.bytes_uploaded >> 20,
            report.blobs_present,
            report.blobs_mounted,
            report.manifests,
            report.tags.len(),
            report.retries
        );
        Ok(false)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check bundle.sig over checksums.txt, then every file; push nothing.
    Verify(Trust),
    /// Verify, then push every image, signature, SBOM and attestation to a registry.
    Push {
        #[command(flatten)]
        trust: Trust,
        #[command(flatten)]
        to: Destination,
    },
    /// Extract a bundle archive (.tar.zst) into a new directory, refusing unsafe entries.
    Unpack { archive: PathBuf, dir: PathBuf },
    /// Push an OCI layout built on this machine (`cargo xtask images`, default target/oci) to a
    /// registry: what `quickstart.sh --layout` runs, so it compiles nothing. No bundle and no
    /// signature check: the layout is your own build (a bundle goes through `push`).
    PushLayout {
        /// The layout directory (holds index.json and blobs/).
        layout: PathBuf,
        #[command(flatten)]
        to: Destination,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stella-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The signature first (so a changed checksums.txt is caught), then every file.
fn verify(t: &Trust) -> Result<(String, usize), String> {
    let trust = match (&t.key, &t.fingerprint) {
        (Some(k), _) => {
            bundle::Trust::Key(signature::public_key(&read(k)?, &k.display().to_string()).map_err(|e| e.to_string())?)
        }
        (None, Some(f)) => bundle::Trust::Fingerprint(f.clone()),
        (None, None) => {
            return Err("give the signing key (--key FILE) or its fingerprint (--fingerprint sha256:...)".into());
        }
    };
    let v = bundle::verify(&t.bundle, &trust).map_err(|e| e.to_string())?;
    Ok((format!("{} signed by {}", t.bundle.join(checksums::SIGNATURE).display(), v.fingerprint), v.files))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Verify(t) => {
            let (who, n) = verify(&t)?;
            println!("verified: {who}; {n} files match checksums.txt");
            Ok(())
        }
        Command::Unpack { archive, dir } => {
            let n = unpack::unpack(&archive, &dir, unpack::Limits::default()).map_err(|e| e.to_string())?;
            println!("unpacked {n} files into {}", dir.display());
            Ok(())
        }
        Command::PushLayout { layout, to } => {
            let report = to.push(&layout, false)?;
            to.print(&format!("{} ", layout.display()), &report)?;
            Ok(())
        }
        Command::Push { trust, to } => {
            let (who, n) = verify(&trust)?;
            eprintln!("verified: {who}; {n} files match checksums.txt");
            // Every blob was just checked against checksums.txt.
            let report = to.push(&trust.bundle.join("oci"), true)?;
            let written = write_settings(&trust.bundle, &to.to, &to.prefix)?;
            if to.print("", &report)? {
                return Ok(());
            }
            println!("\nCompose:  cp {} compose/.env && (cd compose && ./quickstart.sh)", written[0].display());
            println!(
                "Helm:     helm install stella helm/stella -f helm/stella/values-prod.yaml -f helm/stella/values-airgap.yaml -f {}",
                written[1].display()
            );
            Ok(())
        }
    }
}

fn write_settings(bundle: &Path, to: &str, prefix: &str) -> Result<[PathBuf; 2], String> {
    let dir = bundle.join(checksums::LOADED);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let example = bundle.join("compose/.env.example");
    let base = read(&example)?;
    let registry = if prefix.is_empty() { to.to_string() } else { format!("{to}/{prefix}") };
    let env: String =
        base.lines()
            .map(|l| {
                if l.starts_with("STELLA_REGISTRY=") {
                    format!("STELLA_REGISTRY={registry}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
    let values = format!(
        "# Written by stella-load: the registry the bundle was loaded into; digests unchanged.\nglobal:\n  imageRegistry: {}\n  imageRepositoryPrefix: {}\n",
        serde_json::to_string(to).expect("a string serializes"),
        serde_json::to_string(prefix).expect("a string serializes")
    );
    let env_path = dir.join("compose.env");
    let values_path = dir.join("values-registry.yaml");
    for (path, text) in [(&env_path, env), (&values_path, values)] {
        // A new temporary file (never one that exists, never through a link), then a rename.
        let tmp =
            dir.join(format!(".{}.tmp-{}", path.file_name().unwrap_or_default().to_string_lossy(), std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok([env_path, values_path])
}
