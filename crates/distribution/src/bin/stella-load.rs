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

/// Who the bundle must be signed by.
#[derive(clap::Args)]
struct Trust {
    /// A trusted copy of the signing public key (PEM).
    #[arg(long, conflicts_with_all = ["fingerprint", "trust_embedded"])]
    key: Option<PathBuf>,
    /// The signing key's fingerprint (sha256:<hex>), published out of band; the bundle's own
    /// cosign.pub must have it.
    #[arg(long, conflicts_with = "trust_embedded")]
    fingerprint: Option<String>,
    /// Accept the key the bundle carries: proves the bundle is whole, not who made it. Without
    /// this, --key or --fingerprint, `verify` and `unpack` say "intact, origin unknown" and exit 3.
    #[arg(long)]
    trust_embedded: bool,
}

impl Trust {
    /// The trust to check against, and whether the caller chose it (`false`: nothing was given,
    /// the bundle's own key is used only to say whether it is intact).
    fn resolve(&self) -> Result<(bundle::Trust, bool), String> {
        Ok(match (&self.key, &self.fingerprint) {
            (Some(k), _) => (
                bundle::Trust::Key(
                    signature::public_key(&read(k)?, &k.display().to_string()).map_err(|e| e.to_string())?,
                ),
                true,
            ),
            (None, Some(f)) => (bundle::Trust::Fingerprint(f.clone()), true),
            (None, None) => (bundle::Trust::Embedded, self.trust_embedded),
        })
    }
}

/// What `verify` and `unpack` print, and their exit code: 0 when verified (or accepted with
/// --trust-embedded), 3 when only intact.
fn outcome(v: &bundle::Verified, chosen: bool, what: &str) -> ExitCode {
    println!("{}", v.summary(what));
    if v.origin_known {
        ExitCode::SUCCESS
    } else if chosen {
        eprintln!("stella-load: accepted on the key the bundle carries (--trust-embedded)");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "stella-load: not verified: give --key FILE or --fingerprint sha256:... as StellaOps published them \
             (--trust-embedded accepts the bundle's own key)"
        );
        ExitCode::from(3)
    }
}

/// What `push` and `docker` do before loading anything: refuse without a trust the caller
/// chose, then verify the unpacked bundle at `dir` and say so on stderr.
fn verify_to_load(trust: &Trust, dir: &Path) -> Result<(), String> {
    let (t, chosen) = trust.resolve()?;
    if !chosen {
        return Err("give the signing key (--key FILE) or its fingerprint (--fingerprint sha256:...) as \
                    StellaOps published them; --trust-embedded accepts the key inside the bundle, which \
                    proves integrity only"
            .into());
    }
    let v = bundle::verify(dir, &t).map_err(|e| e.to_string())?;
    eprintln!("{}", v.summary(&dir.display().to_string()));
    Ok(())
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
            "pushed {what}to {}/{}: {} blobs uploaded ({} MiB), {} already there, {} mounted; {} manifests put, {} already there; {} tags; {} retries",
            self.to,
            self.prefix,
            report.blobs_uploaded,
            report.bytes_uploaded >> 20,
            report.blobs_present,
            report.blobs_mounted,
            report.manifests,
            report.manifests_present,
            report.tags.len(),
            report.retries
        );
        Ok(false)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Check bundle.sig over checksums.txt, then every file of an unpacked bundle; push nothing.
    /// Exit status: 0 verified, 1 refused, 3 intact but its origin unknown (no key given).
    Verify {
        /// The bundle's directory (unpacked).
        #[arg(long, default_value = ".")]
        bundle: PathBuf,
        #[command(flatten)]
        trust: Trust,
    },
    /// Verify, then push every image, signature, SBOM and attestation to a registry.
    Push {
        /// The bundle's directory (unpacked).
        #[arg(long, default_value = ".")]
        bundle: PathBuf,
        #[command(flatten)]
        trust: Trust,
        #[command(flatten)]
        to: Destination,
    },
    /// Extract and verify a bundle archive (.tar.zst) into a new directory, as any user and
    /// without tar: the signature is checked before any other file is written, every file
    /// against its signed size and SHA-256, the zstd checksum at the end; links, devices and
    /// FIFOs are refused. Nothing is left behind when it refuses. Exit status as `verify`.
    Unpack {
        archive: PathBuf,
        dir: PathBuf,
        #[command(flatten)]
        trust: Trust,
    },
    /// The inventory of an unpacked bundle: images, tags, digests, platforms, sizes, SBOM
    /// package counts, and the key it carries. Reads only; `verify` says whether to trust it.
    Inspect {
        /// The bundle's directory (unpacked).
        #[arg(long, default_value = ".")]
        bundle: PathBuf,
        /// Print the inventory as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A single host with Docker and no registry: verify, then serve the bundle's images on
    /// 127.0.0.1:PORT for the time it takes Docker to pull this host's platform of each by
    /// digest, and write loaded/compose.env naming 127.0.0.1:PORT/PREFIX, so the Compose files
    /// run with their pinned digests and no registry afterwards.
    Docker {
        /// The bundle's directory (unpacked).
        #[arg(long, default_value = ".")]
        bundle: PathBuf,
        #[command(flatten)]
        trust: Trust,
        /// The loopback port Docker pulls from; the image names in loaded/compose.env carry it.
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// Repository path (stella gives 127.0.0.1:PORT/stella/stella-api).
        #[arg(long, default_value = "stella")]
        prefix: String,
    },
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("stella-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Verify { bundle: dir, trust } => {
            let (t, chosen) = trust.resolve()?;
            let v = bundle::verify(&dir, &t).map_err(|e| e.to_string())?;
            Ok(outcome(&v, chosen, &dir.display().to_string()))
        }
        Command::Unpack { archive, dir, trust } => {
            let (t, chosen) = trust.resolve()?;
            let v = unpack::unpack(&archive, &dir, &t, unpack::Limits::default()).map_err(|e| e.to_string())?;
            Ok(outcome(&v, chosen, &format!("{} (unpacked into {})", archive.display(), dir.display())))
        }
        Command::Inspect { bundle: dir, json } => {
            let inventory = stella_distribution::inspect::inspect(&dir).map_err(|e| e.to_string())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&inventory).map_err(|e| e.to_string())?);
            } else {
                print!("{}", inventory.table());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Docker { bundle: dir, trust, port, prefix } => {
            verify_to_load(&trust, &dir)?;
            if dir.join(bundle::BASE).exists() {
                return Err(format!(
                    "{} is a delta bundle (see {}): it loads into a registry that holds its base; for one host's \
                     Docker, load the full bundle",
                    dir.display(),
                    bundle::BASE
                ));
            }
            let host = docker::load(&dir.join("oci"), port, &prefix)?;
            let written = write_settings(&dir, &host, &prefix)?;
            println!("\nCompose:  cp {} compose/.env && (cd compose && ./quickstart.sh)", written[0].display());
            Ok(ExitCode::SUCCESS)
        }
        Command::PushLayout { layout, to } => {
            let report = to.push(&layout, false)?;
            to.print(&format!("{} ", layout.display()), &report)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Push { bundle: dir, trust, to } => {
            verify_to_load(&trust, &dir)?;
            // Every blob was just checked against checksums.txt.
            let report = to.push(&dir.join("oci"), true)?;
            let written = write_settings(&dir, &to.to, &to.prefix)?;
            if to.print("", &report)? {
                return Ok(ExitCode::SUCCESS);
            }
            println!("\nCompose:  cp {} compose/.env && (cd compose && ./quickstart.sh)", written[0].display());
            println!(
                "Helm:     helm install stella helm/stella -f helm/stella/values-prod.yaml -f helm/stella/values-airgap.yaml -f {}",
                written[1].display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Pulling a bundle's images into the local Docker engine from the loopback registry.
mod docker {
    use std::path::Path;
    use std::process::Command;

    use stella_distribution::serve;

    fn docker(args: &[&str]) -> Result<(), String> {
        let out = Command::new("docker")
            .args(args)
            .output()
            .map_err(|e| format!("running docker {}: {e} (is Docker installed and running?)", args[0]))?;
        if !out.status.success() {
            return Err(format!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(())
    }

    /// Serves `layout` on 127.0.0.1:`port`, has Docker pull every image by digest and tag it,
    /// stops serving; returns the registry host the images are named by.
    pub fn load(layout: &Path, port: u16, prefix: &str) -> Result<String, String> {
        let catalog = serve::Catalog::read(layout, prefix).map_err(|e| e.to_string())?;
        let images = catalog.images();
        let running =
            serve::start(catalog, std::net::SocketAddr::from(([127, 0, 0, 1], port)), 4).map_err(|e| e.to_string())?;
        let host = running.addr.to_string();
        eprintln!("serving the bundle's images on {host} while Docker pulls them");
        let mut pulled = std::collections::BTreeSet::new();
        for image in &images {
            let by_digest = format!("{host}/{}@{}", image.repository, image.digest);
            if pulled.insert(by_digest.clone()) {
                docker(&["pull", "--quiet", &by_digest])?;
                eprintln!("pulled {by_digest}");
            }
            docker(&["tag", &by_digest, &format!("{host}/{}:{}", image.repository, image.tag)])?;
        }
        drop(running);
        println!(
            "loaded {} images into Docker for this host's platform, by digest, from {host}/{prefix} (no longer served)",
            pulled.len()
        );
        Ok(host)
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
