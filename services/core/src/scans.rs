//! Scans: an imported SBOM, matched against the current advisories, with VEX applied; and the
//! Vulnerability Explorer query over the findings.
//!
//! Matching happens once, at import: each component (purl with version) is compared with every
//! current advisory that names its purl base, by the OSV range algorithm. A finding groups the
//! advisories of one linkset for one component and links to each of them (it does not copy or
//! combine them); its severity is the highest any linked advisory gives, and its status comes
//! from the newest applicable VEX statement (or `affected` without one), with links to every
//! statement considered. Import, findings and their ledger events are one transaction.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use stella_runtime::sqlx::{self, PgPool};

use crate::aggregation::Page;
use crate::authority::Caller;
use crate::version::{self, Range};
use crate::{Error, ledger, osv, sbom, sha256_hex};

/// One finding before it is stored.
#[derive(Debug)]
struct Finding {
    purl: String,
    package: String,
    version: String,
    linkset: String,
    aliases: BTreeSet<String>,
    severity: String,
    documents: BTreeSet<i64>,
    status: String,
    vex: Vec<Value>,
}

type Candidate = (i64, String, Value, Vec<String>, String, Vec<String>, String);
type VexRow = (i64, i32, String, Vec<String>, String, String);

/// The longest scan name, in characters.
pub const NAME_LIMIT: usize = 200;

/// A scan name given by the caller: 1 to [`NAME_LIMIT`] characters, no control characters.
fn check_name(name: &str) -> Result<(), Error> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > NAME_LIMIT || name.chars().any(char::is_control) {
        return Err(Error::bad(
            "name",
            format!("a scan name is 1 to {NAME_LIMIT} characters without control characters (this one has {chars})"),
        ));
    }
    Ok(())
}

/// A name taken from the document itself, cut to [`NAME_LIMIT`] characters (the document is
/// kept whole; only the label is shortened).
fn shortened(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    match clean.char_indices().nth(NAME_LIMIT - 1) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None if clean.trim().is_empty() => "unnamed SBOM".into(),
        None => clean,
    }
}

/// Imports an SBOM for the caller's tenant. The same bytes imported again return the first
/// scan (`false`: nothing new was created).
pub async fn import(db: &PgPool, caller: &Caller, name: Option<&str>, body: &[u8]) -> Result<(bool, Value), Error> {
    caller.require("operator")?;
    if let Some(name) = name {
        check_name(name)?;
    }
    let parsed = sbom::parse(body).map_err(|problem| Error::bad("SBOM", problem))?;
    let sha = sha256_hex(body);
    if let Some(id) = existing(db, caller.tenant_id, &sha).await? {
        return Ok((false, scan(db, caller, id).await?));
    }
    let findings = match_components(db, &parsed).await?;
    let name = name.map(str::to_string).unwrap_or_else(|| shortened(&parsed.name));
    let mut tx = db.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO stella.scans (tenant_id, name, format, sha256, components, unidentified, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, sha256) DO NOTHING RETURNING id",
    )
    .bind(caller.tenant_id)
    .bind(&name)
    .bind(&parsed.format)
    .bind(&sha)
    .bind(parsed.components.len() as i32)
    .bind(parsed.unidentified as i32)
    .bind(&caller.username)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        // Imported concurrently by another request: that one wins.
        tx.rollback().await?;
        let id = existing(db, caller.tenant_id, &sha).await?.ok_or_else(|| Error::Internal("scan vanished".into()))?;
        return Ok((false, scan(db, caller, id).await?));
    };
    for purl in parsed.components.keys() {
        sqlx::query("INSERT INTO stella.scan_components (scan_id, purl) VALUES ($1, $2)")
            .bind(id)
            .bind(purl)
            .execute(&mut *tx)
            .await?;
    }
    let payload = json!({"scan": id, "name": name, "sha256": sha, "components": parsed.components.len()});
    ledger::append(&mut tx, caller.tenant_id, "scan.imported", payload).await?;
    for f in &findings {
        let finding: i64 = sqlx::query_scalar(
            "INSERT INTO stella.findings
               (tenant_id, scan_id, purl, package, version, linkset, aliases, severity, status, advisory_documents, vex)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(caller.tenant_id)
        .bind(id)
        .bind(&f.purl)
        .bind(&f.package)
        .bind(&f.version)
        .bind(&f.linkset)
        .bind(f.aliases.iter().cloned().collect::<Vec<_>>())
        .bind(&f.severity)
        .bind(&f.status)
        .bind(f.documents.iter().copied().collect::<Vec<_>>())
        .bind(Value::Array(f.vex.clone()))
        .fetch_one(&mut *tx)
        .await?;
        let found = json!({"finding": finding, "scan": id, "purl": f.purl, "linkset": f.linkset, "severity": f.severity,
                           "advisoryDocuments": f.documents});
        ledger::append(&mut tx, caller.tenant_id, "finding.found", found).await?;
        if !f.vex.is_empty() {
            let applied = json!({"finding": finding, "status": f.status, "statements": f.vex});
            ledger::append(&mut tx, caller.tenant_id, "vex.applied", applied).await?;
        }
        // A critical finding that still affects the product is news: the outbox row commits
        // with the finding, and stella-notify delivers it.
        if f.severity == "critical" && matches!(f.status.as_str(), "affected" | "under_investigation") {
            let event = json!({"finding": finding, "scan": id, "scanName": name, "purl": f.purl,
                               "linkset": f.linkset, "status": f.status});
            crate::notify::record(&mut tx, Some(caller.tenant_id), "finding.critical", event).await?;
        }
    }
    tx.commit().await?;
    Ok((true, scan(db, caller, id).await?))
}

async fn existing(db: &PgPool, tenant: i64, sha: &str) -> Result<Option<i64>, Error> {
    Ok(sqlx::query_scalar("SELECT id FROM stella.scans WHERE tenant_id = $1 AND sha256 = $2")
        .bind(tenant)
        .bind(sha)
        .fetch_optional(db)
        .await?)
}

async fn match_components(db: &PgPool, parsed: &sbom::Sbom) -> Result<Vec<Finding>, Error> {
    let bases: Vec<String> =
        parsed.components.values().map(|p| p.base.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let candidates: Vec<Candidate> = sqlx::query_as(
        "SELECT f.document_id, f.purl, f.ranges, f.versions, a.linkset, a.aliases, a.severity
         FROM stella.advisory_affected f JOIN stella.advisories a ON a.document_id = f.document_id
         WHERE f.purl = ANY ($1) AND f.document_id IN (SELECT id FROM stella.current_documents WHERE kind = 'advisory')
         ORDER BY f.document_id, f.position",
    )
    .bind(&bases)
    .fetch_all(db)
    .await?;
    let mut found: BTreeMap<(String, String), Finding> = BTreeMap::new();
    for component in parsed.components.values() {
        let Some(v) = component.version.as_deref() else { continue };
        for (document, purl, ranges, versions, linkset, aliases, severity) in &candidates {
            if *purl != component.base {
                continue;
            }
            let ranges: Vec<Range> = serde_json::from_value(ranges.clone()).unwrap_or_default();
            let hit = versions.iter().any(|x| x == v) || ranges.iter().any(|r| version::in_range(v, r));
            if !hit {
                continue;
            }
            let f = found.entry((component.full(), linkset.clone())).or_insert_with(|| Finding {
                purl: component.full(),
                package: component.base.clone(),
                version: v.to_string(),
                linkset: linkset.clone(),
                aliases: BTreeSet::new(),
                severity: "unknown".into(),
                documents: BTreeSet::new(),
                status: "affected".into(),
                vex: vec![],
            });
            f.documents.insert(*document);
            f.aliases.extend(aliases.iter().cloned());
            if osv::severity_rank(severity) > osv::severity_rank(&f.severity) {
                f.severity = severity.clone();
            }
        }
    }
    let identifiers: Vec<String> =
        found.values().flat_map(|f| f.aliases.iter().cloned()).collect::<BTreeSet<_>>().into_iter().collect();
    let statements: Vec<VexRow> = sqlx::query_as(
        "SELECT s.document_id, s.statement, s.vulnerability, s.aliases, s.product, s.status
         FROM stella.vex_statements s
         WHERE (s.vulnerability = ANY ($1) OR s.aliases && $1)
           AND s.document_id IN (SELECT id FROM stella.current_documents WHERE kind = 'vex')
         ORDER BY s.document_id, s.position",
    )
    .bind(&identifiers)
    .fetch_all(db)
    .await?;
    for f in found.values_mut() {
        // Statements come in document order, so the last applicable one is the newest.
        for (document, statement, vulnerability, aliases, product, status) in &statements {
            let names_it = f.aliases.contains(vulnerability) || aliases.iter().any(|a| f.aliases.contains(a));
            let covers = *product == f.purl || *product == f.package;
            if names_it && covers {
                f.status = status.clone();
                f.vex.push(json!({"document": document, "statement": statement, "status": status, "product": product}));
            }
        }
    }
    Ok(found.into_values().collect())
}

/// One scan of the caller's tenant, with its finding counts and policy verdict.
pub async fn scan(db: &PgPool, caller: &Caller, id: i64) -> Result<Value, Error> {
    let row: Option<(String, String, String, i32, i32, String, String)> = sqlx::query_as(
        "SELECT name, format, sha256, components, unidentified, created_by, stella.rfc3339(created_at)
         FROM stella.scans WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(caller.tenant_id)
    .fetch_optional(db)
    .await?;
    let (name, format, sha, components, unidentified, by, at) =
        row.ok_or_else(|| Error::NotFound(format!("scan {id} in tenant {}", caller.tenant)))?;
    let counts: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT severity, status, count(*) FROM stella.findings WHERE scan_id = $1 GROUP BY severity, status ORDER BY 1, 2",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    let mut by_severity = serde_json::Map::new();
    let mut by_status = serde_json::Map::new();
    let mut total = 0;
    for (severity, status, n) in counts {
        total += n;
        add(&mut by_severity, &severity, n);
        add(&mut by_status, &status, n);
    }
    let verdict: Option<(i32, String, Value, String)> = sqlx::query_as(
        "SELECT policy_version, outcome, violations, stella.rfc3339(evaluated_at) FROM stella.verdicts
         WHERE scan_id = $1 ORDER BY policy_version DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    let verdict = verdict.map(|(version, outcome, violations, at)| {
        json!({"policyVersion": version, "outcome": outcome, "violations": violations, "evaluatedAt": at})
    });
    Ok(json!({"id": id, "name": name, "format": format, "sha256": sha, "components": components,
              "unidentified": unidentified, "createdBy": by, "createdAt": at,
              "findings": {"total": total, "bySeverity": by_severity, "byStatus": by_status}, "verdict": verdict}))
}

fn add(map: &mut serde_json::Map<String, Value>, key: &str, n: i64) {
    let v = map.get(key).and_then(Value::as_i64).unwrap_or(0) + n;
    map.insert(key.to_string(), json!(v));
}

/// The caller's scans, newest first.
pub async fn scans(db: &PgPool, caller: &Caller, page: Page) -> Result<Value, Error> {
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM stella.scans WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3")
            .bind(caller.tenant_id)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(db)
            .await?;
    let mut out = Vec::new();
    for id in ids {
        out.push(scan(db, caller, id).await?);
    }
    Ok(Value::Array(out))
}

/// Vulnerability Explorer filters; every one optional.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Filters {
    pub severity: Option<String>,
    pub status: Option<String>,
    /// A substring of the purl.
    pub package: Option<String>,
    /// A linkset key or any identifier of the vulnerability.
    pub advisory: Option<String>,
    pub scan: Option<i64>,
    /// One finding by its id.
    pub id: Option<i64>,
}

/// Findings of the caller's tenant, worst first, with links to the originals they rest on.
pub async fn findings(db: &PgPool, caller: &Caller, filters: &Filters, page: Page) -> Result<Value, Error> {
    if let Some(s) = &filters.severity
        && osv::severity_rank(s) == 0
        && s != "unknown"
    {
        return Err(Error::bad("severity", format!("`{s}` is not one of critical, high, medium, low, unknown")));
    }
    if let Some(s) = &filters.status
        && !crate::openvex::STATUSES.contains(&s.as_str())
    {
        return Err(Error::bad("status", format!("`{s}` is not one of {}", crate::openvex::STATUSES.join(", "))));
    }
    // One filter clause for the count and the page: a macro, so both queries stay static strings
    // and bind the same parameters in the same order.
    macro_rules! filtered {
        () => {
            "FROM stella.findings f
             WHERE f.tenant_id = $1 AND ($2::TEXT IS NULL OR f.severity = $2) AND ($3::TEXT IS NULL OR f.status = $3)
               AND ($4::TEXT IS NULL OR strpos(lower(f.purl), lower($4)) > 0) AND ($5::TEXT IS NULL OR f.linkset = $5 OR $5 = ANY (f.aliases))
               AND ($6::BIGINT IS NULL OR f.scan_id = $6) AND ($7::BIGINT IS NULL OR f.id = $7)"
        };
        ($query:expr) => {
            $query
                .bind(caller.tenant_id)
                .bind(&filters.severity)
                .bind(&filters.status)
                .bind(&filters.package)
                .bind(&filters.advisory)
                .bind(filters.scan)
                .bind(filters.id)
        };
    }
    let total: i64 = filtered!(sqlx::query_scalar(concat!("SELECT count(*) ", filtered!()))).fetch_one(db).await?;
    type Row = (i64, i64, String, String, String, String, Vec<String>, String, String, Vec<i64>, Value, Option<String>);
    let rows: Vec<Row> = filtered!(sqlx::query_as(concat!(
        "SELECT f.id, f.scan_id, f.purl, f.package, f.version, f.linkset, f.aliases, f.severity, f.status,
                f.advisory_documents, f.vex,
                (SELECT v.outcome FROM stella.verdicts v WHERE v.scan_id = f.scan_id ORDER BY v.policy_version DESC LIMIT 1) ",
        filtered!(),
        " ORDER BY CASE f.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END DESC,
                  f.id
         LIMIT $8 OFFSET $9"
    )))
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(db)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, scan, purl, package, version, linkset, aliases, severity, status, documents, vex, verdict)| {
            let advisories: Vec<Value> = documents
                .iter()
                .map(|d| json!({"document": d, "service": "conseiller", "raw": format!("/api/v1/advisories/documents/{d}/raw")}))
                .collect();
            let vex: Vec<Value> = vex
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s["service"] = json!("excitator");
                    s["raw"] = json!(format!("/api/v1/vex/documents/{}/raw", s["document"]));
                    s
                })
                .collect();
            json!({"id": id, "scan": scan, "purl": purl, "package": package, "version": version, "severity": severity,
                   "status": status, "aliases": aliases, "policyVerdict": verdict,
                   "linkset": {"key": linkset, "service": "conseiller", "href": format!("/api/v1/advisories/linksets/{linkset}")},
                   "advisories": advisories, "vex": vex})
        })
        .collect();
    Ok(json!({"items": items, "total": total, "limit": page.limit, "offset": page.offset}))
}
