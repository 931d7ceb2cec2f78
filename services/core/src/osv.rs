//! OSV advisories (<https://ossf.github.io/osv-schema/>): the parts Conseiller indexes.
//!
//! Parsing never changes the document: the original bytes are stored as received and this
//! module only reads facts from them (identifiers, affected packages, severity) for linksets
//! and matching.

use serde::Deserialize;
use serde_json::Value;

use crate::purl::{self, Purl};
use crate::version::{Event, Range, Scheme};

/// The indexed facts of one OSV document.
#[derive(Clone, Debug, PartialEq)]
pub struct Advisory {
    pub id: String,
    /// Other identifiers of the same vulnerability, sorted, without `id`.
    pub aliases: Vec<String>,
    pub summary: String,
    /// `critical`, `high`, `medium`, `low` or `unknown`.
    pub severity: String,
    pub modified: String,
    pub affected: Vec<Affected>,
}

/// One affected package: its purl base and the versions that are affected.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Affected {
    pub purl: String,
    /// `GIT` ranges are kept out: they name commits, not versions.
    pub ranges: Vec<Range>,
    pub versions: Vec<String>,
}

#[derive(Deserialize)]
struct Raw {
    id: String,
    modified: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    summary: String,
    #[serde(default)]
    affected: Vec<RawAffected>,
    #[serde(default)]
    database_specific: Value,
}

#[derive(Deserialize)]
struct RawAffected {
    package: Option<RawPackage>,
    #[serde(default)]
    ranges: Vec<RawRange>,
    #[serde(default)]
    versions: Vec<String>,
}

#[derive(Deserialize)]
struct RawPackage {
    ecosystem: String,
    name: String,
    purl: Option<String>,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(rename = "type")]
    kind: String,
    events: Vec<serde_json::Map<String, Value>>,
}

/// Parses an OSV document; the error names the field and what is wrong with it.
pub fn parse(bytes: &[u8]) -> Result<Advisory, String> {
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("not an OSV document: {e}"))?;
    if raw.id.trim().is_empty() {
        return Err("`id` is empty".into());
    }
    let mut affected = Vec::new();
    for (i, a) in raw.affected.iter().enumerate() {
        let Some(p) = &a.package else { continue };
        let base = match &p.purl {
            Some(s) => Purl::parse(s).map_err(|e| format!("affected[{i}].package.purl: {e}"))?.base,
            None => match purl::from_ecosystem(&p.ecosystem, &p.name) {
                Some(b) => b,
                None => continue, // an ecosystem without a purl mapping cannot match an SBOM component
            },
        };
        let mut ranges = Vec::new();
        for (j, r) in a.ranges.iter().enumerate() {
            if !matches!(r.kind.as_str(), "SEMVER" | "ECOSYSTEM" | "GIT") {
                return Err(format!("affected[{i}].ranges[{j}].type: `{}` is not SEMVER, ECOSYSTEM or GIT", r.kind));
            }
            let mut events = Vec::new();
            for (k, e) in r.events.iter().enumerate() {
                let at = format!("affected[{i}].ranges[{j}].events[{k}]");
                let (key, value) = match e.iter().next() {
                    Some((key, Value::String(v))) if e.len() == 1 => (key.as_str(), v.clone()),
                    _ => return Err(format!("{at}: expected one of introduced, fixed, last_affected with a version")),
                };
                events.push(match key {
                    "introduced" => Event::Introduced(value),
                    "fixed" => Event::Fixed(value),
                    "last_affected" => Event::LastAffected(value),
                    "limit" => continue,
                    other => return Err(format!("{at}: unknown event `{other}`")),
                });
            }
            let scheme = match r.kind.as_str() {
                "SEMVER" => Scheme::Semver,
                "ECOSYSTEM" => Scheme::Ecosystem,
                _ => continue,
            };
            ranges.push(Range { scheme, events });
        }
        affected.push(Affected { purl: base, ranges, versions: a.versions.clone() });
    }
    let mut aliases: Vec<String> = raw.aliases.into_iter().filter(|a| *a != raw.id).collect();
    aliases.sort();
    aliases.dedup();
    let severity = match raw.database_specific.get("severity").and_then(Value::as_str).map(str::to_ascii_lowercase) {
        Some(s) if s == "moderate" => "medium".to_string(),
        Some(s) if ["critical", "high", "medium", "low"].contains(&s.as_str()) => s,
        _ => "unknown".to_string(),
    };
    Ok(Advisory { id: raw.id, aliases, summary: raw.summary, severity, modified: raw.modified, affected })
}

impl Advisory {
    /// The linkset this document belongs to: its CVE identifier when it names one, otherwise
    /// the smallest of its identifiers. Documents from different sources that name the same
    /// CVE therefore land in the same linkset, each kept whole.
    pub fn linkset(&self) -> String {
        linkset_key(&self.id, &self.aliases)
    }

    /// Every identifier of the vulnerability: `id` and the aliases.
    pub fn identifiers(&self) -> Vec<String> {
        let mut all = vec![self.id.clone()];
        all.extend(self.aliases.iter().cloned());
        all
    }
}

/// See [`Advisory::linkset`].
pub fn linkset_key(id: &str, aliases: &[String]) -> String {
    let mut all: Vec<&str> = std::iter::once(id).chain(aliases.iter().map(String::as_str)).collect();
    all.sort();
    all.iter().find(|a| a.starts_with("CVE-")).or(all.first()).map(|s| s.to_string()).unwrap_or_default()
}

/// Severity order, for "the highest severity any linked document gives".
pub fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 4,
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"id":"GHSA-jfh8-c2jp-5v3q","modified":"2026-01-02T00:00:00Z","aliases":["CVE-2021-44228"],
      "summary":"Remote code injection in Log4j","database_specific":{"severity":"CRITICAL"},
      "affected":[{"package":{"ecosystem":"Maven","name":"org.apache.logging.log4j:log4j-core"},
        "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"2.0-beta9"},{"fixed":"2.15.0"}]}]}]}"#;

    #[test]
    fn parses_identifiers_severity_and_ranges() {
        let a = parse(DOC.as_bytes()).unwrap();
        assert_eq!(a.linkset(), "CVE-2021-44228");
        assert_eq!(a.severity, "critical");
        assert_eq!(a.affected[0].purl, "pkg:maven/org.apache.logging.log4j/log4j-core");
        assert_eq!(
            a.affected[0].ranges[0],
            Range {
                scheme: Scheme::Ecosystem,
                events: vec![Event::Introduced("2.0-beta9".into()), Event::Fixed("2.15.0".into())]
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(parse(b"{").unwrap_err().starts_with("not an OSV document"));
        assert!(parse(br#"{"id":"X","summary":"no modified"}"#).unwrap_err().contains("modified"));
        let bad = DOC.replace(r#"{"fixed":"2.15.0"}"#, r#"{"patched":"2.15.0"}"#);
        assert_eq!(parse(bad.as_bytes()).unwrap_err(), "affected[0].ranges[0].events[1]: unknown event `patched`");
    }
}
