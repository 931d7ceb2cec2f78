//! Task packs: a declarative, versioned list of steps the task runner executes (where their
//! `http` steps may connect is [`crate::egress`]).
//!
//! A pack is JSON (`task-pack.schema.json` beside this crate is its JSON Schema, checked against
//! these types by a unit test):
//! ```json
//! {"apiVersion": "stella-ops.org/v1", "kind": "TaskPack", "name": "mirror-check", "version": "1.0.0",
//!  "steps": [{"id": "fetch", "type": "http", "url": "http://mirror.internal/osv/index.json"},
//!            {"id": "pause", "type": "wait", "seconds": 2},
//!            {"id": "export", "type": "export", "formats": ["spdx", "openvex"]}]}
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "stella-ops.org/v1";

/// A task pack.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pack {
    /// Always `stella-ops.org/v1`.
    pub api_version: String,
    /// Always `TaskPack`.
    pub kind: String,
    /// Lower-case letters, digits and '-'.
    pub name: String,
    /// A semantic version; a pack's content is fixed per version.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Run in order; the first failing step fails the run.
    pub steps: Vec<Step>,
}

/// One step.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Step {
    /// An HTTP request; succeeds when the answer has `expectStatus` (default: any 2xx).
    Http {
        id: String,
        #[serde(default = "get")]
        method: String,
        url: String,
        #[serde(default, rename = "expectStatus", skip_serializing_if = "Option::is_none")]
        expect_status: Option<u16>,
        /// Keep the answer's body (at most 1 MiB) as an artifact of the run, in the object store,
        /// for `STELLA_TASKS_ARTIFACT_RETENTION`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep: bool,
    },
    /// A pause of `seconds` (at most 3600).
    Wait { id: String, seconds: u64 },
    /// An export of the run's tenant data (or one scan's) through the export center: a job of
    /// kind `export`; succeeds when the export is written, fails if it fails or takes longer
    /// than `timeoutSeconds` (default 600).
    Export {
        id: String,
        formats: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scan: Option<i64>,
        #[serde(default = "export_timeout", rename = "timeoutSeconds")]
        timeout_seconds: u64,
    },
}

fn export_timeout() -> u64 {
    600
}

fn get() -> String {
    "GET".into()
}

impl Step {
    pub fn id(&self) -> &str {
        match self {
            Step::Http { id, .. } | Step::Wait { id, .. } | Step::Export { id, .. } => id,
        }
    }
}

/// Parses and validates a pack; the error names the field.
pub fn parse(bytes: &[u8]) -> Result<Pack, String> {
    let pack: Pack = serde_json::from_slice(bytes).map_err(|e| format!("not a task pack: {e}"))?;
    if pack.api_version != API_VERSION {
        return Err(format!("apiVersion: `{}` is not {API_VERSION}", pack.api_version));
    }
    if pack.kind != "TaskPack" {
        return Err(format!("kind: `{}` is not TaskPack", pack.kind));
    }
    let name_ok = !pack.name.is_empty()
        && pack.name.len() <= 63
        && pack.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return Err(format!("name: `{}` must be 1 to 63 lower-case letters, digits or '-'", pack.name));
    }
    semver::Version::parse(&pack.version)
        .map_err(|e| format!("version: `{}` is not a semantic version ({e})", pack.version))?;
    if pack.steps.is_empty() {
        return Err("steps: a pack needs at least one step".into());
    }
    let mut ids = std::collections::BTreeSet::new();
    for (i, step) in pack.steps.iter().enumerate() {
        if !ids.insert(step.id()) {
            return Err(format!("steps[{i}].id: `{}` is used twice", step.id()));
        }
        match step {
            Step::Http { url, method, .. } => {
                // The same parser the step's request uses (the offline check comes at run time).
                crate::egress::Egress::default().uri(url).map_err(|e| format!("steps[{i}].url: {e}"))?;
                if !["GET", "HEAD", "POST", "PUT", "DELETE"].contains(&method.as_str()) {
                    return Err(format!("steps[{i}].method: `{method}` is not GET, HEAD, POST, PUT or DELETE"));
                }
            }
            Step::Wait { seconds, .. } if *seconds > 3600 => {
                return Err(format!("steps[{i}].seconds: {seconds} is more than 3600"));
            }
            Step::Wait { .. } => {}
            Step::Export { formats, timeout_seconds, .. } => {
                if formats.is_empty() {
                    return Err(format!(
                        "steps[{i}].formats: name at least one of {}",
                        crate::exports::ALL_FORMATS.join(", ")
                    ));
                }
                if let Some(f) = formats.iter().find(|f| !crate::exports::ALL_FORMATS.contains(&f.as_str())) {
                    return Err(format!(
                        "steps[{i}].formats: `{f}` is not one of {}",
                        crate::exports::ALL_FORMATS.join(", ")
                    ));
                }
                if !(1..=86400).contains(timeout_seconds) {
                    return Err(format!("steps[{i}].timeoutSeconds: {timeout_seconds} is not between 1 and 86400"));
                }
            }
        }
    }
    Ok(pack)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: &str = r#"{"apiVersion":"stella-ops.org/v1","kind":"TaskPack","name":"p","version":"1.0.0",
        "steps":[{"id":"a","type":"http","url":"https://user@Mirror.Internal:8443/x?y"},{"id":"b","type":"wait","seconds":1}]}"#;

    #[test]
    fn packs_parse_and_errors_name_the_field() {
        let p = parse(PACK.as_bytes()).unwrap();
        assert_eq!(p.steps.len(), 2);
        assert!(parse(PACK.replace("1.0.0", "one").as_bytes()).unwrap_err().starts_with("version: `one`"));
        assert!(
            parse(PACK.replace("\"b\"", "\"a\"").as_bytes()).unwrap_err().contains("steps[1].id: `a` is used twice")
        );
        assert!(
            parse(PACK.replace("\"seconds\":1", "\"seconds\":1,\"x\":2").as_bytes())
                .unwrap_err()
                .contains("unknown field `x`")
        );
        assert!(parse(PACK.replace("https://", "ftp://").as_bytes()).unwrap_err().starts_with("steps[0].url"));
    }

    /// The committed JSON Schema is the one these types give (update: STELLA_UPDATE_SCHEMA=1).
    #[test]
    fn the_committed_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("task-pack.schema.json");
        let schema = serde_json::to_string_pretty(&schemars::schema_for!(Pack)).unwrap() + "\n";
        if std::env::var_os("STELLA_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &schema).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed,
            schema,
            "{} is stale: run STELLA_UPDATE_SCHEMA=1 cargo test -p stella-core",
            path.display()
        );
    }
}
