//! Configuration: one declarative table of settings, read once at start-up.
//!
//! Every setting is declared as a [`Setting`] (name, type, default, secret or not, description).
//! The same table drives parsing, the `/config` discovery endpoint, `describe --json` and the
//! generated configuration reference, so documentation cannot drift from the code.
//!
//! Sources, highest precedence first: the environment variable (`STELLA_PORT`), for secrets a
//! `*_FILE` variable naming a file mount (`STELLA_DATABASE_URL_FILE`), then the optional file
//! `$STELLA_CONFIG_DIR/<service>.toml` (default `/etc/stella/<service>.toml`) whose keys are the
//! variable names without the `STELLA_` prefix, in lower case (`port = 8081`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// What a setting accepts; also how it is documented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Port,
    /// An unsigned integer within an inclusive range.
    Count {
        min: u64,
        max: u64,
    },
    /// `500ms`, `25s`, `2m`, `1h`, or a plain number of seconds.
    Duration,
    IpAddr,
    /// A URL whose scheme must be one of these.
    Url {
        schemes: &'static [&'static str],
    },
    OneOf(&'static [&'static str]),
    /// A comma-separated list of host names (`*.example.org` for every subdomain) and IP
    /// addresses, and with `cidrs`, also CIDR ranges such as `10.20.0.0/16`.
    Hosts {
        cidrs: bool,
    },
    Text,
}

impl Kind {
    /// What the kind accepts, as shown in errors and in the reference.
    pub fn accepted(&self) -> String {
        match self {
            Kind::Bool => "true or false".into(),
            Kind::Port => "a port number from 1 to 65535".into(),
            Kind::Count { min, max } => format!("an integer from {min} to {max}"),
            Kind::Duration => "a duration such as 500ms, 25s, 2m, 1h or 30d".into(),
            Kind::IpAddr => "an IPv4 or IPv6 address such as 0.0.0.0 or ::".into(),
            Kind::Url { schemes } => {
                format!("a URL starting with {}", schemes.join(":// or ") + "://")
            }
            Kind::OneOf(choices) => format!("one of {}", choices.join(", ")),
            Kind::Hosts { cidrs: false } => {
                "host names (`*.example.org` for its subdomains) and IP addresses, comma-separated".into()
            }
            Kind::Hosts { cidrs: true } => {
                "host names (`*.example.org` for its subdomains), IP addresses and CIDR ranges (`10.20.0.0/16`), \
                 comma-separated"
                    .into()
            }
            Kind::Text => "any text".into(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Port => "port",
            Kind::Count { .. } => "integer",
            Kind::Duration => "duration",
            Kind::IpAddr => "ip-address",
            Kind::Url { .. } => "url",
            Kind::OneOf(_) => "enum",
            Kind::Hosts { .. } => "host-list",
            Kind::Text => "string",
        }
    }
}

/// The default of a setting.
#[derive(Clone, Copy, Debug)]
pub enum Default {
    /// Unset unless configured.
    None,
    Value(&'static str),
    /// The service's own documented port.
    ServicePort,
}

/// One configuration setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// Environment variable name, e.g. `STELLA_PORT`.
    pub name: &'static str,
    pub kind: Kind,
    pub default: Default,
    /// Secrets are redacted everywhere and may be given through `<NAME>_FILE`.
    pub secret: bool,
    pub description: &'static str,
}

impl Setting {
    /// The same setting, secret: redacted everywhere and also read from `<NAME>_FILE`. For the
    /// tables, `s(..).secret()` (see [`crate::s`]).
    pub const fn secret(self) -> Setting {
        Setting { secret: true, ..self }
    }

    /// The key of this setting in `/etc/stella/<service>.toml`.
    pub fn file_key(&self) -> String {
        self.name.strip_prefix("STELLA_").unwrap_or(self.name).to_ascii_lowercase()
    }
}

/// A parsed setting value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(u64),
    Duration(Duration),
    Text(String),
}

/// Where a value came from, for `/config` and for error messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Default,
    Env,
    File,
    SecretFile,
}

/// A configuration error. Each names the setting, the bad value (redacted for secrets) and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}={value} is not valid: expected {expected}")]
    Invalid { name: String, value: String, expected: String },
    #[error("{name}={value} is refused: {why}")]
    Refused { name: String, value: String, why: String },
    #[error("{name} is required: {why}")]
    Required { name: String, why: String },
    #[error("both {name} and {name}_FILE are set: set only one")]
    Ambiguous { name: String },
    #[error("{var}={path}: cannot read the file: {source}")]
    SecretFile { var: String, path: String, source: std::io::Error },
    #[error("{path}: cannot read the configuration file: {source}")]
    FileRead { path: String, source: std::io::Error },
    #[error("{path}: not valid TOML: {message}")]
    FileSyntax { path: String, message: String },
    #[error("{path}: unknown key `{key}`: accepted keys are {accepted}")]
    UnknownKey { path: String, key: String, accepted: String },
    #[error("{path}: key `{key}` must be a string, number or boolean")]
    FileType { path: String, key: String },
}

/// The effective configuration of one service.
#[derive(Clone, Debug)]
pub struct Config {
    service: String,
    default_port: Option<u16>,
    settings: Vec<Setting>,
    values: BTreeMap<&'static str, (Option<Value>, Source)>,
}

/// The environment and file system seen by [`Config::load`]; a map-backed one serves tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn read(&self, path: &Path) -> std::io::Result<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

impl Config {
    /// Reads and validates every setting; the first invalid one is the error.
    pub fn load(
        service: &str,
        default_port: Option<u16>,
        settings: &[Setting],
        env: &dyn Env,
    ) -> Result<Config, ConfigError> {
        let file = read_file(service, settings, env)?;
        let mut values = BTreeMap::new();
        for s in settings {
            let (raw, source) = raw_value(s, &file, env)?;
            let raw = raw.or_else(|| match s.default {
                Default::None => None,
                Default::Value(v) => Some(v.to_string()),
                Default::ServicePort => default_port.map(|p| p.to_string()),
            });
            let value = match raw {
                Some(raw) => Some(parse(s, &raw)?),
                None => None,
            };
            values.insert(s.name, (value, source));
        }
        Ok(Config { service: service.to_string(), default_port, settings: settings.to_vec(), values })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn default_port(&self) -> Option<u16> {
        self.default_port
    }

    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// The value of a setting; `None` when it is unset or not declared for this service (a job
    /// has no `STELLA_PORT`), so shared code can ask without knowing the service's kind.
    fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name).and_then(|(v, _)| v.as_ref())
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Bool(true)))
    }

    pub fn int(&self, name: &str) -> Option<u64> {
        match self.get(name) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn duration(&self, name: &str) -> Option<Duration> {
        match self.get(name) {
            Some(Value::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    /// Every configured secret value, for the log redactor. URL passwords count separately, so
    /// a driver error that echoes only the password is redacted too.
    pub fn secret_values(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for s in self.settings.iter().filter(|s| s.secret) {
            if let Some(Value::Text(t)) = self.get(s.name) {
                out.insert(t.clone());
            }
        }
        // A password or a token inside any URL is a secret, even in a setting that is not (an
        // object store URL given as s3://key:secret@bucket, a collector's `?token=`).
        for s in &self.settings {
            if let Some(Value::Text(t)) = self.get(s.name) {
                out.extend(crate::url::credentials(t));
            }
        }
        out.into_iter().collect()
    }

    /// The effective configuration with every secret replaced by `<redacted>`.
    pub fn redacted(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for s in &self.settings {
            let (value, source) = &self.values[s.name];
            let shown = match value {
                None => serde_json::Value::Null,
                Some(_) if s.secret => serde_json::Value::String(crate::redact::MARK.into()),
                Some(Value::Bool(b)) => (*b).into(),
                Some(Value::Int(n)) => (*n).into(),
                Some(Value::Duration(d)) => format_duration(*d).into(),
                // Credentials inside a URL are hidden in any setting (`crate::url`).
                Some(Value::Text(t)) => crate::url::shown(t).into_owned().into(),
            };
            map.insert(s.name.to_string(), serde_json::json!({ "value": shown, "source": source, "secret": s.secret }));
        }
        serde_json::Value::Object(map)
    }
}

/// The table of settings as data, for `describe --json` and the configuration reference.
pub fn describe(settings: &[Setting], default_port: Option<u16>) -> serde_json::Value {
    let rows: Vec<_> = settings
        .iter()
        .map(|s| {
            let default = match s.default {
                Default::None => None,
                Default::Value(v) => Some(v.to_string()),
                Default::ServicePort => default_port.map(|p| p.to_string()),
            };
            serde_json::json!({
                "name": s.name,
                "fileKey": s.file_key(),
                "type": s.kind.name(),
                "accepted": s.kind.accepted(),
                "default": default,
                "secret": s.secret,
                "description": s.description,
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

fn config_path(service: &str, env: &dyn Env) -> PathBuf {
    let dir = env.var("STELLA_CONFIG_DIR").unwrap_or_else(|| "/etc/stella".into());
    Path::new(&dir).join(format!("{service}.toml"))
}

/// Reads the optional TOML file; unknown keys are errors so a typo never goes unnoticed.
fn read_file(service: &str, settings: &[Setting], env: &dyn Env) -> Result<BTreeMap<String, String>, ConfigError> {
    let path = config_path(service, env);
    let shown = path.display().to_string();
    let text = match env.read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(ConfigError::FileRead { path: shown, source });
        }
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::FileSyntax { path: shown.clone(), message: e.to_string() })?;
    let known: BTreeMap<String, &Setting> = settings.iter().map(|s| (s.file_key(), s)).collect();
    let mut out = BTreeMap::new();
    for (key, value) in table {
        if !known.contains_key(&key) {
            let accepted = known.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(ConfigError::UnknownKey { path: shown, key, accepted });
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => return Err(ConfigError::FileType { path: shown, key }),
        };
        out.insert(key, text);
    }
    Ok(out)
}

fn raw_value(
    s: &Setting,
    file: &BTreeMap<String, String>,
    env: &dyn Env,
) -> Result<(Option<String>, Source), ConfigError> {
    let direct = env.var(s.name).filter(|v| !v.is_empty());
    let file_var = format!("{}_FILE", s.name);
    let via_file = if s.secret { env.var(&file_var).filter(|v| !v.is_empty()) } else { None };
    match (direct, via_file) {
        (Some(_), Some(_)) => Err(ConfigError::Ambiguous { name: s.name.into() }),
        (Some(v), None) => Ok((Some(v), Source::Env)),
        (None, Some(path)) => {
            let text = env.read(Path::new(&path)).map_err(|source| ConfigError::SecretFile {
                var: file_var,
                path: path.clone(),
                source,
            })?;
            // File mounts usually end with a newline that is not part of the secret.
            Ok((Some(text.trim_end_matches(['\n', '\r']).to_string()), Source::SecretFile))
        }
        (None, None) => match file.get(&s.file_key()) {
            Some(v) => Ok((Some(v.clone()), Source::File)),
            None => Ok((None, Source::Default)),
        },
    }
}

/// Parses one raw value according to its kind.
pub fn parse(s: &Setting, raw: &str) -> Result<Value, ConfigError> {
    let bad = || ConfigError::Invalid {
        name: s.name.to_string(),
        value: if s.secret { crate::redact::MARK.to_string() } else { format!("{raw:?}") },
        expected: s.kind.accepted(),
    };
    let raw = raw.trim();
    match s.kind {
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(bad()),
        },
        Kind::Port => match raw.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Value::Int(p.into())),
            _ => Err(bad()),
        },
        Kind::Count { min, max } => match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Value::Int(n)),
            _ => Err(bad()),
        },
        Kind::Duration => parse_duration(raw).map(Value::Duration).ok_or_else(bad),
        Kind::IpAddr => raw.parse::<std::net::IpAddr>().map(|_| Value::Text(raw.into())).map_err(|_| bad()),
        Kind::Url { schemes } => {
            let ok = schemes.iter().any(|scheme| {
                raw.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")).is_some_and(|r| !r.is_empty())
            });
            if ok { Ok(Value::Text(raw.into())) } else { Err(bad()) }
        }
        Kind::OneOf(choices) => {
            if choices.contains(&raw) {
                Ok(Value::Text(raw.into()))
            } else {
                Err(bad())
            }
        }
        Kind::Hosts { cidrs } => {
            if raw.split(',').map(str::trim).filter(|h| !h.is_empty()).all(|h| host_entry(h, cidrs)) {
                Ok(Value::Text(raw.into()))
            } else {
                Err(bad())
            }
        }
        Kind::Text => Ok(Value::Text(raw.into())),
    }
}

/// One entry of a [`Kind::Hosts`] list: an IP address, a CIDR range (when allowed), or a DNS
/// name whose labels are letters, digits and `-`, optionally `*.`-prefixed.
fn host_entry(entry: &str, cidrs: bool) -> bool {
    if entry.parse::<std::net::IpAddr>().is_ok() || (cidrs && entry.parse::<ipnet::IpNet>().is_ok()) {
        return true;
    }
    let name = entry.strip_prefix("*.").unwrap_or(entry);
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
}

/// `500ms`, `25s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::s;

    struct MapEnv(BTreeMap<String, String>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
        fn read(&self, path: &Path) -> std::io::Result<String> {
            self.0
                .get(&format!("file:{}", path.display()))
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    const PORT: Setting = s("STELLA_PORT", Kind::Port, Default::ServicePort, "port");
    const DB: Setting =
        s("STELLA_DATABASE_URL", Kind::Url { schemes: &["postgres", "postgresql"] }, Default::None, "db").secret();

    #[test]
    fn defaults_env_file_and_secret_file_in_order() {
        let e = env(&[("file:/etc/stella/api.toml", "port = 9000\n")]);
        let c = Config::load("api", Some(8081), &[PORT, DB], &e).unwrap();
        assert_eq!(c.int("STELLA_PORT"), Some(9000));
        let e = env(&[("file:/etc/stella/api.toml", "port = 9000\n"), ("STELLA_PORT", "9100")]);
        assert_eq!(Config::load("api", Some(8081), &[PORT], &e).unwrap().int("STELLA_PORT"), Some(9100));
        let c = Config::load("api", Some(8081), &[PORT], &env(&[])).unwrap();
        assert_eq!(c.int("STELLA_PORT"), Some(8081));
        let e = env(&[("STELLA_DATABASE_URL_FILE", "/run/s"), ("file:/run/s", "postgres://u:pw123@h/d\n")]);
        let c = Config::load("api", None, &[DB], &e).unwrap();
        assert_eq!(c.text("STELLA_DATABASE_URL"), Some("postgres://u:pw123@h/d"));
        assert_eq!(c.secret_values(), vec!["postgres://u:pw123@h/d".to_string(), "pw123".to_string()]);
        assert_eq!(c.redacted()["STELLA_DATABASE_URL"]["value"], crate::redact::MARK);
    }

    #[test]
    fn errors_name_the_setting_and_never_show_a_secret() {
        let e = env(&[("STELLA_PORT", "abc")]);
        let err = Config::load("api", Some(8081), &[PORT], &e).unwrap_err().to_string();
        assert_eq!(err, "STELLA_PORT=\"abc\" is not valid: expected a port number from 1 to 65535");
        let e = env(&[("STELLA_DATABASE_URL", "mysql://root:hunter2@x")]);
        let err = Config::load("api", None, &[DB], &e).unwrap_err().to_string();
        assert!(err.contains("STELLA_DATABASE_URL=<redacted>") && !err.contains("hunter2"), "{err}");
        let e = env(&[("file:/etc/stella/api.toml", "prot = 1\n")]);
        let err = Config::load("api", Some(8081), &[PORT], &e).unwrap_err().to_string();
        assert!(err.contains("unknown key `prot`") && err.contains("port"), "{err}");
        let e = env(&[("STELLA_DATABASE_URL", "postgres://a"), ("STELLA_DATABASE_URL_FILE", "/x")]);
        assert!(matches!(Config::load("api", None, &[DB], &e), Err(ConfigError::Ambiguous { .. })));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25s"), Some(Duration::from_secs(25)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("7 s"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
