//! The export center's file formats, rendered from one snapshot of a tenant's data read in one
//! query per table: findings (JSON, CSV, OpenVEX) and scans with their components (SPDX 2.3,
//! CycloneDX 1.5). Pure once loaded, so every format sees the same data.

use serde_json::{Value, json};
use stella_runtime::sqlx::{self, PgPool};

use crate::Error;

pub struct Data {
    tenant: String,
    export: i64,
    /// When the export was asked for (RFC 3339, seconds): the documents' creation time.
    created: String,
    findings: Vec<Finding>,
    scans: Vec<Scan>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Finding {
    id: i64,
    scan: i64,
    purl: String,
    package: String,
    version: String,
    linkset: String,
    aliases: Vec<String>,
    severity: String,
    status: String,
    advisory_documents: Vec<i64>,
    vex: Value,
}

struct Scan {
    id: i64,
    name: String,
    sha256: String,
    created: String,
    purls: Vec<String>,
}

type Rendered = Vec<(String, &'static str, Vec<u8>)>;

impl Data {
    pub async fn load(
        db: &PgPool,
        tenant_id: i64,
        tenant: &str,
        export: i64,
        scan: Option<i64>,
    ) -> Result<Data, Error> {
        let created: String = sqlx::query_scalar(
            "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM stella.exports WHERE id = $1",
        )
        .bind(export)
        .fetch_one(db)
        .await?;
        type FindingRow = (i64, i64, String, String, String, String, Vec<String>, String, String, Vec<i64>, Value);
        let findings: Vec<FindingRow> = sqlx::query_as(
            "SELECT id, scan_id AS scan, purl, package, version, linkset, aliases, severity, status, advisory_documents, vex
             FROM stella.findings WHERE tenant_id = $1 AND ($2::bigint IS NULL OR scan_id = $2) ORDER BY id",
        )
        .bind(tenant_id)
        .bind(scan)
        .fetch_all(db)
        .await?;
        let findings = findings
            .into_iter()
            .map(|(id, scan, purl, package, version, linkset, aliases, severity, status, advisory_documents, vex)| {
                Finding {
                    id,
                    scan,
                    purl,
                    package,
                    version,
                    linkset,
                    aliases,
                    severity,
                    status,
                    advisory_documents,
                    vex,
                }
            })
            .collect();
        type Row = (i64, String, String, String, Vec<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT s.id, s.name, s.sha256, to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    coalesce(array_agg(c.purl ORDER BY c.purl) FILTER (WHERE c.purl IS NOT NULL), '{}')
             FROM stella.scans s LEFT JOIN stella.scan_components c ON c.scan_id = s.id
             WHERE s.tenant_id = $1 AND ($2::bigint IS NULL OR s.id = $2)
             GROUP BY s.id ORDER BY s.id",
        )
        .bind(tenant_id)
        .bind(scan)
        .fetch_all(db)
        .await?;
        let scans = rows
            .into_iter()
            .map(|(id, name, sha256, created, purls)| Scan { id, name, sha256, created, purls })
            .collect();
        Ok(Data { tenant: tenant.to_string(), export, created, findings, scans })
    }

    /// The files of one format: name, media type, bytes.
    pub fn render(&self, format: &str) -> Result<Rendered, Error> {
        let json = |v: &Value| serde_json::to_vec_pretty(v).map_err(|e| Error::Internal(e.to_string()));
        Ok(match format {
            "json" => vec![("findings.json".into(), "application/json", json(&json!({"findings": self.findings}))?)],
            "csv" => vec![("findings.csv".into(), "text/csv", self.csv())],
            "openvex" => vec![("findings.openvex.json".into(), "application/json", json(&self.openvex())?)],
            "spdx" => self
                .scans
                .iter()
                .map(|s| Ok((format!("scan-{}.spdx.json", s.id), "application/spdx+json", json(&self.spdx(s))?)))
                .collect::<Result<_, Error>>()?,
            "cyclonedx" => self
                .scans
                .iter()
                .map(|s| {
                    Ok((format!("scan-{}.cdx.json", s.id), "application/vnd.cyclonedx+json", json(&cyclonedx(s))?))
                })
                .collect::<Result<_, Error>>()?,
            other => return Err(Error::bad("format", format!("`{other}` is not an export format"))),
        })
    }

    fn csv(&self) -> Vec<u8> {
        let mut out = String::from("id,scan,package,version,purl,vulnerability,aliases,severity,status\n");
        for f in &self.findings {
            let fields = [
                f.id.to_string(),
                f.scan.to_string(),
                f.package.clone(),
                f.version.clone(),
                f.purl.clone(),
                f.linkset.clone(),
                f.aliases.join(" "),
                f.severity.clone(),
                f.status.clone(),
            ];
            out.push_str(&fields.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out.into_bytes()
    }

    fn openvex(&self) -> Value {
        let statements: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                let aliases: Vec<&String> = f.aliases.iter().filter(|a| **a != f.linkset).collect();
                let mut s = json!({
                    "vulnerability": {"name": f.linkset, "aliases": aliases},
                    "products": [{"@id": f.purl}],
                    "status": f.status,
                });
                // OpenVEX asks a reason of `not_affected`: the statements that said so.
                if f.status == "not_affected" {
                    s["impact_statement"] = json!(format!(
                        "not affected according to the VEX statements linked from StellaOps finding {}",
                        f.id
                    ));
                }
                if f.status == "affected" {
                    s["action_statement"] = json!("upgrade to a version outside the advisory's affected ranges");
                }
                s
            })
            .collect();
        json!({
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": format!("https://stella-ops.org/vex/{}/export-{}", self.tenant, self.export),
            "author": "StellaOps Export Center",
            "timestamp": self.created,
            "version": 1,
            "statements": statements,
        })
    }

    fn spdx(&self, scan: &Scan) -> Value {
        let mut packages = vec![json!({
            "SPDXID": "SPDXRef-Scan",
            "name": scan.name,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "APPLICATION",
        })];
        let mut relationships = vec![
            json!({"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": "SPDXRef-Scan"}),
        ];
        for (i, purl) in scan.purls.iter().enumerate() {
            let (name, version) = name_version(purl);
            let id = format!("SPDXRef-Package-{}", i + 1);
            let mut p = json!({
                "SPDXID": id,
                "name": name,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}],
            });
            if let Some(v) = version {
                p["versionInfo"] = json!(v);
            }
            packages.push(p);
            relationships.push(
                json!({"spdxElementId": "SPDXRef-Scan", "relationshipType": "CONTAINS", "relatedSpdxElement": id}),
            );
        }
        json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("{} (StellaOps scan {})", scan.name, scan.id),
            "documentNamespace": format!("https://stella-ops.org/spdx/{}/scan-{}/{}", self.tenant, scan.id, scan.sha256),
            "creationInfo": {"created": scan.created, "creators": [format!("Tool: stella-export-{}", env!("CARGO_PKG_VERSION"))]},
            "packages": packages,
            "relationships": relationships,
        })
    }
}

fn cyclonedx(scan: &Scan) -> Value {
    let components: Vec<Value> = scan
        .purls
        .iter()
        .map(|purl| {
            let (name, version) = name_version(purl);
            let mut c = json!({"type": "library", "bom-ref": purl, "name": name, "purl": purl});
            if let Some(v) = version {
                c["version"] = json!(v);
            }
            c
        })
        .collect();
    // A serial number derived from the scan's content: the same scan exports the same BOM.
    let h = &scan.sha256;
    let serial = format!("urn:uuid:{}-{}-5{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32]);
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial,
        "version": 1,
        "metadata": {"timestamp": scan.created, "component": {"type": "application", "bom-ref": "scan", "name": scan.name}},
        "components": components,
    })
}

/// A purl's name (with its namespace, as ecosystems show it) and version.
fn name_version(purl: &str) -> (String, Option<String>) {
    let Ok(p) = purl.parse::<packageurl::PackageUrl>() else { return (purl.to_string(), None) };
    let name = match p.namespace() {
        Some(ns) => format!("{ns}/{}", p.name()),
        None => p.name().to_string(),
    };
    (name, p.version().map(str::to_string))
}

/// A CSV field quoted when it holds a comma, quote or line break (RFC 4180). A field that a
/// spreadsheet would read as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a carriage
/// return: `=HYPERLINK(...)` from an advisory's text) gets a leading `'`, as OWASP advises, so it
/// is shown as text.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("=HYPERLINK(\"http://x\",\"y\")"), "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
        for formula in ["+1", "-2+3", "@SUM(A1)", "\tcmd"] {
            assert_eq!(csv_field(formula), format!("'{formula}"));
        }
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn purls_give_names_with_namespaces() {
        assert_eq!(
            name_version("pkg:maven/org.apache/log4j@2.14.0"),
            ("org.apache/log4j".into(), Some("2.14.0".into()))
        );
        assert_eq!(name_version("pkg:cargo/time"), ("time".into(), None));
    }
}
