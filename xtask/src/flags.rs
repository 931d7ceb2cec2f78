//! Every flag of every `cargo xtask` command; the `///` lines are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and ship the StellaOps distribution",
    version
)]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Install what this machine lacks: the pinned toolchain and targets, cross linkers, and with
    /// --test the tools the test suite uses (PostgreSQL, skopeo, umoci, ...). Idempotent.
    Setup(Setup),
    /// Run every check: formatting, clippy, the service binaries, unit and end-to-end tests.
    Test(Test),
    /// Measure and print figures with ratios against a baseline measured in the same run.
    Bench(Bench),
    /// Build every image of images.toml: static binaries for each platform, assembled without a
    /// daemon into a reproducible multi-arch OCI image layout (default target/oci).
    Images(Images),
    /// Print the resolved plan of `images` (inputs and digests, targets, epoch, outputs) without building.
    Plan(PlanFlags),
    /// Rebuild the commit of a layout in a fresh clone elsewhere (other umask, time zone and
    /// target directory) and compare every digest: what an auditor runs.
    Reproduce(Reproduce),
    /// The auditor's rebuild against a published images.json: `rebuild --compare images.json`
    /// reports image by image whether the rebuilt digests match (same as `reproduce --against`).
    Rebuild(Rebuild),
    /// Write the signed, reproducible air-gap bundle stella-bundle-vX.Y.Z.tar.zst of the last
    /// build (default into target/bundle); `bundle verify FILE` checks one without pushing.
    Bundle(BundleFlags),
    /// Write a new signing key pair: DIR/cosign.key (PKCS#8 PEM, mode 0600) and DIR/cosign.pub.
    Keygen(Keygen),
    /// Check every blob digest and every image signature of a layout against a public key.
    Verify(VerifyFlags),
    /// Write the JSON Schema of images.toml (docs/images.schema.json); --check fails when it is stale.
    Schema(Schema),
    /// Write deploy/compose and the Helm chart's generated files (deploy/helm/stella) pinning the
    /// digests of the last build; --check fails when the committed files differ.
    Deploy(DeployFlags),
    /// Push a built layout to a registry: every image with its tags, signatures, SBOMs and
    /// provenance (OCI distribution API; blobs already there are skipped, so it resumes).
    Publish(Publish),
    /// Print the digest of the xtask source this binary was built from (what `reproduce` asks a
    /// built xtask before letting it build a clone of the same source).
    #[command(hide = true)]
    SourceDigest,
    /// Package the Helm chart deploy/helm/stella as a signed OCI artifact (what `helm push`
    /// uploads, but reproducible) into its own layout (default target/chart), for `publish --layout`.
    Chart(ChartFlags),
    /// Layer definitions: `lock` pins the Debian packages of every Debian layer (layers/debian.lock).
    Layers(LayersFlags),
}

#[derive(Args)]
pub struct DeployFlags {
    /// Compare with the files on disk instead of writing them; fail when they differ.
    #[arg(long)]
    pub check: bool,
    /// The build to pin (default: target/oci).
    #[arg(long)]
    pub layout: Option<PathBuf>,
    /// Output directory (default: deploy/ at the workspace root).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ChartFlags {
    /// The build whose digests the chart pins (default: target/oci); the chart must be current
    /// for it (`cargo xtask deploy --check`).
    #[arg(long)]
    pub layout: Option<PathBuf>,
    /// The layout to write (default: target/chart).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sign with this private key file (default: $STELLA_SIGNING_KEY_FILE); unsigned without one.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct Publish {
    /// Destination `host[:port][/prefix]`, e.g. `127.0.0.1:5000/stella`: images become
    /// `<host>/<prefix>/<image>`. Loopback registries are spoken to over HTTP, others HTTPS.
    /// Default: `<registry>/<repository>` of images.toml's [defaults], the one place the
    /// registry is configured.
    #[arg(long)]
    pub to: Option<String>,
    /// The layout to push (default: target/oci).
    #[arg(long)]
    pub layout: Option<PathBuf>,
    /// Plain HTTP to a registry that is not on loopback.
    #[arg(long)]
    pub insecure: bool,
    /// Print what was pushed as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BundleFlags {
    #[command(subcommand)]
    pub command: Option<BundleCommand>,
    /// The build to bundle (default: target/oci).
    #[arg(long)]
    pub layout: Option<PathBuf>,
    /// Output directory (default: target/bundle).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The signing key, the one that signed the images (default: $STELLA_SIGNING_KEY_FILE).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// A previous bundle (.tar.zst, signed by the same key): write a delta bundle,
    /// <name>-delta.tar.zst, without the blobs that one holds; it loads into a registry that
    /// holds the base.
    #[arg(long, value_name = "BASE")]
    pub since: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Unpack a bundle into a temporary directory (refusing unsafe entries), then check its
    /// signature and every file, as load.sh does before pushing.
    Verify(BundleVerify),
    /// Split a bundle into parts of at most --size bytes (FILE.part-000, ...) with a
    /// FILE.parts.sha256 list; `cat FILE.part-* > FILE` joins them.
    Split(BundleSplit),
}

#[derive(Args)]
pub struct BundleVerify {
    /// The bundle (.tar.zst).
    pub file: PathBuf,
    /// A trusted copy of the public key.
    #[arg(long, conflicts_with = "fingerprint")]
    pub key: Option<PathBuf>,
    /// The trusted fingerprint (sha256:<hex>) the bundle's cosign.pub must have.
    #[arg(long)]
    pub fingerprint: Option<String>,
}

#[derive(Args)]
pub struct BundleSplit {
    /// The bundle (.tar.zst).
    pub file: PathBuf,
    /// Largest part, in bytes, or with a K, M or G suffix (powers of 1024).
    #[arg(long)]
    pub size: String,
}

#[derive(Args)]
pub struct LayersFlags {
    #[command(subcommand)]
    pub command: LayersCommand,
}

#[derive(Subcommand)]
pub enum LayersCommand {
    /// Resolve the dependency closure of every layer definition's [debian] section with the
    /// machine's apt sources (in a private apt state, for every architecture) and write
    /// layers/debian.lock with each package's version, source, URL and SHA-256.
    Lock(LockFlags),
}

#[derive(Args)]
pub struct LockFlags {
    /// Debian architecture to lock (repeatable). Default: amd64 and arm64.
    #[arg(long = "architecture")]
    pub architectures: Vec<String>,
    /// Print the lock's summary as JSON (layer, architecture, packages, bytes).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct Select {
    /// The image catalog (default: images.toml at the workspace root).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// Where the OCI image layout is written (default: target/oci).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Build only this platform (repeatable): linux/amd64 or linux/arm64. Default: each image's own.
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Build only this image (repeatable). Default: every image.
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Tag vX.Y.Z from the workspace version (the default when no tag flag is given).
    #[arg(long)]
    pub release: bool,
    /// Tag vX.Y.Z-rc.N.
    #[arg(long, value_name = "N")]
    pub rc: Option<u32>,
    /// Tag `edge` (latest main).
    #[arg(long)]
    pub edge: bool,
    /// Tag nightly-YYYYMMDD (the date of the source epoch).
    #[arg(long)]
    pub nightly: bool,
    /// Use small fixed files instead of compiled binaries: runs the whole pipeline in seconds.
    #[arg(long)]
    pub fake_binaries: bool,
    /// Sign every image with this private key file (PKCS#8 PEM); default: $STELLA_SIGNING_KEY_FILE.
    /// Without a key the images are built unsigned. The key is never read from the command line.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

#[derive(Args)]
pub struct Images {
    #[command(flatten)]
    pub select: Select,
    /// Print the built images (names, tags, digests) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Then load this machine's platform of every image into the local Docker engine.
    #[arg(long)]
    pub load: bool,
    /// Build even when nothing changed since the last build of this layout (by default such a
    /// rerun answers from the layout's stamp, `<out>.stamp.json`, in milliseconds).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct PlanFlags {
    #[command(flatten)]
    pub select: Select,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct Schema {
    /// Fail if the committed schema differs instead of writing it.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args)]
pub struct Setup {
    /// Also install the tools the test suite runs (PostgreSQL server, skopeo, umoci, ...).
    #[arg(long)]
    pub test: bool,
    /// Print what would be installed without installing it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct Test {
    /// Skip `cargo xtask setup --test` (for machines set up by hand).
    #[arg(long)]
    pub no_setup: bool,
    /// How many test binaries run at once (each runs its own tests in parallel too). Three by
    /// default: on a 2-core runner most of a test's time is spent waiting on containers and
    /// PostgreSQL, so three at once cut the test run from 959 s to 788 s (measured, stop 31).
    /// `--jobs 1` to read one log at a time.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub jobs: usize,
    /// Arguments passed to each test binary after `--`, e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

#[derive(Args)]
pub struct Bench {
    /// What to measure.
    pub suite: Suite,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// `stack`: the measuring window, in seconds.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Suite {
    /// Start-up to ready and idle memory of every service, against python3's http.server.
    Services,
    /// Assembly against tar | gzip, the no-op rebuild, umoci side by side, image sizes.
    Images,
    /// Bundle creation against tar | zstd, bundle size against the unique blobs, load.sh
    /// against skopeo copy --all (needs $STELLA_SIGNING_KEY_FILE, the key of the build).
    Bundle,
    /// The whole Compose quickstart at idle: every container's CPU and memory over a window, and
    /// the Docker engine's CPU, beside the same stack with the previous release's polling.
    Stack,
}

impl Select {
    /// The library's request (the library never sees clap types).
    pub fn request(&self) -> xtask::plan::Request {
        use xtask::plan::Tag;
        let mut tags = Vec::new();
        if self.release {
            tags.push(Tag::Release);
        }
        if let Some(n) = self.rc {
            tags.push(Tag::Rc(n));
        }
        if self.edge {
            tags.push(Tag::Edge);
        }
        if self.nightly {
            tags.push(Tag::Nightly);
        }
        if tags.is_empty() {
            tags.push(Tag::Release);
        }
        let catalog = self.catalog.clone().map(xtask::images::absolute).unwrap_or_else(xtask::catalog::default_path);
        let out = self.out.clone().map(xtask::images::absolute).unwrap_or_else(xtask::images::default_out);
        xtask::plan::Request {
            platforms: self.platforms.clone(),
            images: self.images.clone(),
            tags,
            fake_binaries: self.fake_binaries,
            key: self
                .key
                .clone()
                .map(xtask::images::absolute)
                .or_else(|| xtask::plan::Request::new(catalog.clone(), out.clone()).key),
            ..xtask::plan::Request::new(catalog, out)
        }
    }
}

#[derive(Args)]
pub struct Rebuild {
    /// The images.json (or layout directory) to compare with.
    #[arg(long)]
    pub compare: PathBuf,
    /// Where to clone and build (default: a new directory under the temporary directory).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Rebuild only this platform (repeatable).
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Rebuild only this image (repeatable); the others are not compared.
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct Reproduce {
    /// The layout to compare with (default: target/oci), or a published images.json.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Where to clone and build (default: a new directory under the temporary directory).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Rebuild only this platform (repeatable).
    #[arg(long = "platform")]
    pub platforms: Vec<String>,
    /// Rebuild only this image (repeatable); the others are not compared.
    #[arg(long = "image")]
    pub images: Vec<String>,
    /// Keep the clone and target directory of an earlier rebuild in --work (same revision): a
    /// second partial rebuild compiles only what the first did not.
    #[arg(long, requires = "work")]
    pub reuse: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct Keygen {
    /// Directory to write cosign.key and cosign.pub into.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct VerifyFlags {
    /// The public key (PEM), e.g. cosign.pub.
    #[arg(long)]
    pub key: PathBuf,
    /// The layout to verify (default: target/oci).
    pub layout: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
