//! `images.toml`, the image catalog: its types (which are also its JSON Schema), parsing, and
//! validation whose every error names the file, line and column, the key, and the fix.
//!
//! Unknown keys and wrong types are caught by serde (`deny_unknown_fields`) with the span toml
//! reports; duplicate image names by the TOML parser itself (a table key cannot repeat).
//! Semantic checks (a binary no package provides, a port clash, an unknown platform) locate
//! their key in a second, span-preserving parse of the same text.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The catalog: defaults shared by every image, and one entry per image.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Settings every image inherits.
    pub defaults: Defaults,
    /// One entry per image, keyed by image name (`stella-api`); the name is the last part of
    /// the image reference `<registry>/<repository>/<name>`.
    pub images: BTreeMap<String, Image>,
}

/// Settings every image inherits.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Registry host the images are published to, e.g. `registry.stella-ops.org`.
    pub registry: String,
    /// Repository prefix under the registry, e.g. `stella`: images are `<registry>/<repository>/<name>`.
    pub repository: String,
    /// Platforms every image is built for: `linux/amd64`, `linux/arm64`.
    pub platforms: Vec<String>,
    /// `uid:gid` the container runs as; must not be root.
    pub user: String,
    /// Layer definitions under `layers/` every image starts from, bottom first (e.g. `base`).
    pub base_layers: Vec<String>,
    /// Source repository URL (`org.opencontainers.image.source`).
    pub source: String,
    /// SPDX license expression (`org.opencontainers.image.licenses`).
    pub licenses: String,
    /// Vendor (`org.opencontainers.image.vendor`).
    pub vendor: String,
    /// Environment every image sets, `NAME = "value"`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Labels every image carries.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One image.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// One line saying what the image is (`org.opencontainers.image.description`).
    pub description: String,
    /// The cargo package that builds the binary.
    pub package: String,
    /// The binary of that package to ship; defaults to the package name.
    #[serde(default)]
    pub binary: Option<String>,
    /// TCP ports the image listens on (`ExposedPorts`, and the `io.stellaops.ports` label).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Environment variables with safe defaults, `NAME = "value"`; added to the defaults' env.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Paths declared as volumes.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Entrypoint; defaults to `["/app/<binary>"]`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments (`Cmd`).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Whether the image has a HEALTHCHECK running `<binary> healthcheck`; default: true when
    /// the image has ports.
    #[serde(default)]
    pub healthcheck: Option<bool>,
    /// Extra layer definitions under `layers/`, above the base layers.
    #[serde(default)]
    pub layers: Vec<String>,
    /// Labels of this image, added to the defaults' labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Platforms of this image when not the defaults'.
    #[serde(default)]
    pub platforms: Option<Vec<String>>,
    /// `service` (a StellaOps service with the runtime's HTTP contract: health, readiness,
    /// metrics), `support` (PostgreSQL, Redis, NATS: their own protocols, a data volume) or
    /// `tool` (a command users run, like the `stella` CLI: shipped and signed, never deployed).
    #[serde(default)]
    pub kind: Kind,
    /// SPDX license expression of what the image ships, when not the defaults' (a support
    /// image is licensed as its server is).
    #[serde(default)]
    pub licenses: Option<String>,
    /// The signal that stops the container cleanly (`StopSignal`); default `SIGTERM`.
    /// PostgreSQL and NATS use `SIGINT`: fast shutdown, exit code 0.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// Signals an image may name as its stop signal.
pub const STOP_SIGNALS: &[&str] = &["SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"];

/// What an image is, for the labels it carries and for `deploy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A StellaOps service built on the shared runtime.
    #[default]
    Service,
    /// A supporting server (database, cache, queue) built from pinned Debian packages.
    Support,
    /// A command-line tool run with `docker run`: in the bundle, not in `deploy/`.
    Tool,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Support => "support",
            Kind::Tool => "tool",
        }
    }
}

impl Image {
    pub fn binary(&self) -> &str {
        self.binary.as_deref().unwrap_or(&self.package)
    }
}

/// A platform an image can be built for, and the Rust target that builds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Platform {
    pub os: &'static str,
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
    pub triple: &'static str,
}

/// Every platform the assembler knows.
pub const PLATFORMS: &[(&str, Platform)] = &[
    (
        "linux/amd64",
        Platform { os: "linux", architecture: "amd64", variant: None, triple: "x86_64-unknown-linux-musl" },
    ),
    (
        "linux/arm64",
        Platform { os: "linux", architecture: "arm64", variant: Some("v8"), triple: "aarch64-unknown-linux-musl" },
    ),
];

impl Platform {
    pub fn parse(name: &str) -> Option<Platform> {
        PLATFORMS.iter().find(|(n, _)| *n == name || name == format!("{n}/v8")).map(|(_, p)| *p)
    }

    /// `linux/amd64`, `linux/arm64`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.os, self.architecture)
    }
}

/// An error in `images.toml`, located.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}\n  help: {help}")]
pub struct CatalogError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: String,
}

/// Reads and validates `path`; `binaries` are the binaries the workspace's packages provide,
/// by package.
pub fn load(path: &Path, binaries: &BTreeMap<String, BTreeSet<String>>) -> anyhow::Result<Catalog> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse(&path.display().to_string(), &text, binaries)?)
}

/// Parses and validates catalog text; `file` is only used in errors.
pub fn parse(file: &str, text: &str, binaries: &BTreeMap<String, BTreeSet<String>>) -> Result<Catalog, CatalogError> {
    let at = |span: Option<Range<usize>>, message: String, help: String| {
        let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        CatalogError { file: file.to_string(), line, column, message, help }
    };
    let catalog: Catalog = toml::from_str(text).map_err(|e| {
        let mut message = e.message().trim().to_string();
        if let Some(key) = e.span().filter(|_| message == "duplicate key").and_then(|s| text.get(s)) {
            message = format!("duplicate key `{}`", key.trim_matches('"'));
        }
        let help = help_for(&message);
        at(e.span(), message, help)
    })?;
    let locate = |path: &[&str]| span_of(text, path);

    check_platforms(&catalog.defaults.platforms, &["defaults", "platforms"], &locate, &at)?;
    check_user(&catalog.defaults.user, &locate, &at)?;
    let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
    for (name, image) in &catalog.images {
        let key = |k: &'static str| vec!["images", name.as_str(), k];
        if !valid_name(name) {
            return Err(at(
                locate(&["images", name]),
                format!("image name `{name}` is not a valid repository name"),
                "use lower-case letters, digits and single `-`, `.` or `_` between them, e.g. `stella-api`".into(),
            ));
        }
        match binaries.get(&image.package) {
            None => {
                let known = binaries.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(at(
                    locate(&key("package")),
                    format!("images.{name}.package: no workspace package is named `{}`", image.package),
                    format!("name one of the workspace's packages: {known}"),
                ));
            }
            Some(bins) if !bins.contains(image.binary()) => {
                let known = bins.iter().cloned().collect::<Vec<_>>().join(", ");
                return Err(at(
                    locate(&key(if image.binary.is_some() { "binary" } else { "package" })),
                    format!("images.{name}: package `{}` provides no binary `{}`", image.package, image.binary()),
                    format!("set `binary` to one of: {known}"),
                ));
            }
            Some(_) => {}
        }
        if let Some(signal) = &image.stop_signal
            && !STOP_SIGNALS.contains(&signal.as_str())
        {
            return Err(at(
                locate(&key("stop_signal")),
                format!("images.{name}.stop_signal: `{signal}` is not a signal this catalog accepts"),
                format!("use one of {}", STOP_SIGNALS.join(", ")),
            ));
        }
        if let Some(licenses) = &image.licenses
            && spdx::Expression::parse(licenses).is_err()
        {
            return Err(at(
                locate(&key("licenses")),
                format!("images.{name}.licenses: `{licenses}` is not an SPDX license expression"),
                "use SPDX identifiers joined by AND / OR, e.g. `PostgreSQL` or `Apache-2.0 OR MIT`".into(),
            ));
        }
        for (i, port) in image.ports.iter().enumerate() {
            let span = span_of_index(text, &key("ports"), i);
            if *port == 0 {
                return Err(at(span, format!("images.{name}.ports: 0 is not a port"), "use 1 to 65535".into()));
            }
            if let Some(other) = ports.insert(*port, name) {
                return Err(at(
                    span,
                    format!("images.{name}.ports: port {port} is already used by image `{other}`"),
                    "give each image its own port: Compose publishes them all on one host".into(),
                ));
            }
        }
        if let Some(platforms) = &image.platforms {
            check_platforms(platforms, &key("platforms"), &locate, &at)?;
        }
        for (k, v) in image.env.iter().chain(&catalog.defaults.env) {
            if k.is_empty() || k.contains('=') || v.contains('\n') {
                return Err(at(
                    locate(&key("env")),
                    format!("images.{name}.env: `{k}` is not a usable environment variable"),
                    "names must be non-empty without `=`, values one line".into(),
                ));
            }
        }
    }
    Ok(catalog)
}

type Locate<'a> = dyn Fn(&[&str]) -> Option<Range<usize>> + 'a;
type At<'a> = dyn Fn(Option<Range<usize>>, String, String) -> CatalogError + 'a;

fn check_platforms(platforms: &[String], path: &[&str], locate: &Locate, at: &At) -> Result<(), CatalogError> {
    let known = PLATFORMS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    if platforms.is_empty() {
        return Err(at(
            locate(path),
            format!("{}: no platform", path.join(".")),
            format!("list at least one of {known}"),
        ));
    }
    let mut seen = BTreeSet::new();
    for p in platforms {
        if Platform::parse(p).is_none() {
            return Err(at(
                locate(path),
                format!("{}: unknown platform `{p}`", path.join(".")),
                format!("use one of {known}"),
            ));
        }
        if !seen.insert(p) {
            return Err(at(locate(path), format!("{}: `{p}` is listed twice", path.join(".")), "list it once".into()));
        }
    }
    Ok(())
}

fn check_user(user: &str, locate: &Locate, at: &At) -> Result<(), CatalogError> {
    let ids: Vec<Option<u32>> = user.split(':').map(|p| p.parse().ok()).collect();
    match ids.as_slice() {
        [Some(uid), Some(gid)] if *uid != 0 && *gid != 0 => Ok(()),
        _ => Err(at(
            locate(&["defaults", "user"]),
            format!("defaults.user: `{user}` is not a non-root `uid:gid`"),
            "use numeric ids other than 0, e.g. \"65532:65532\"".into(),
        )),
    }
}

/// Distribution-spec repository path component: `[a-z0-9]+([._-][a-z0-9]+)*`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// A fix for the messages serde and toml produce.
fn help_for(message: &str) -> String {
    if message.starts_with("unknown field") {
        "remove the key or correct its spelling; `cargo xtask schema` writes the JSON Schema with every key".into()
    } else if message.starts_with("missing field") {
        "add the key; every required key is listed in docs/images.md".into()
    } else if message.contains("duplicate key") {
        "each image name may appear once: rename or merge the two entries".into()
    } else if message.starts_with("invalid type") {
        "give the key a value of the type named above (see docs/images.md)".into()
    } else {
        "see docs/images.md for the format".into()
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, column)
}

/// The span of the value at `path` (table keys), if the text has it.
fn span_of(text: &str, path: &[&str]) -> Option<Range<usize>> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut span = None;
    for (i, key) in path.iter().enumerate() {
        let (k, v) = table.iter().find(|(k, _)| k.get_ref() == key)?;
        span = Some(if i + 1 == path.len() { v.span() } else { k.span() });
        match v.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ if i + 1 == path.len() => {}
            _ => return span,
        }
    }
    span
}

/// The span of element `index` of the array at `path`.
fn span_of_index(text: &str, path: &[&str], index: usize) -> Option<Range<usize>> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    for (i, key) in path.iter().enumerate() {
        let (_, v) = table.iter().find(|(k, _)| k.get_ref() == key)?;
        match v.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            toml::de::DeValue::Array(a) if i + 1 == path.len() => return a.get(index).map(|e| e.span()),
            _ => return Some(v.span()),
        }
    }
    None
}

/// The JSON Schema of `images.toml`, generated from the types above.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Catalog);
    serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n"
}

/// `images.toml` at the workspace root.
pub fn default_path() -> PathBuf {
    crate::shell::root().join("images.toml")
}

/// `<registry>/<repository>` of the catalog's `[defaults]`: where `publish` pushes unless told
/// otherwise, so the registry that Compose and the chart pull from is named in one place.
pub fn default_destination(path: &Path) -> anyhow::Result<String> {
    let catalog = load(path, &crate::workspace::package_binaries()?)?;
    Ok(format!("{}/{}", catalog.defaults.registry, catalog.defaults.repository))
}
