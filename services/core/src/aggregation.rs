//! Aggregation only: Conseiller (advisories) and Excitator (VEX) store each source document
//! exactly as received and index facts read from it; linksets group the documents that name one
//! vulnerability and point at each original.
//!
//! There is no merge path. Every indexed row references exactly one original; a linkset is a
//! query over those rows, never a stored combination. Re-ingesting the same bytes from the same
//! place is a no-op (a unique key); changed bytes are a new original and the old one is kept
//! (the table is append-only, enforced by a trigger). A document that does not parse is recorded
//! with its source and the problem, and stays out of every linkset.

use serde_json::{Value, json};
use stella_runtime::sqlx::{self, PgPool};

use crate::{Error, openvex, osv, sha256_hex};

/// What a service aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Advisory,
    Vex,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Advisory => "advisory",
            Kind::Vex => "vex",
        }
    }

    /// The URL segment of the service's routes.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Advisory => "advisories",
            Kind::Vex => "vex",
        }
    }

    fn format(self) -> &'static str {
        match self {
            Kind::Advisory => "OSV JSON",
            Kind::Vex => "OpenVEX JSON",
        }
    }
}

/// What happened to one document.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Outcome {
    /// A new original (first time, or changed bytes at the same place).
    Stored { id: i64 },
    /// These bytes from this place are already stored.
    Unchanged { id: i64 },
    /// The document did not parse; it is recorded as rejected (`new`: for the first time).
    Rejected { problem: String, new: bool },
}

enum Parsed {
    Advisory(osv::Advisory),
    Vex(String, Vec<openvex::Statement>),
}

/// Ingests one document from `source` at `locator`.
pub async fn ingest(db: &PgPool, kind: Kind, source: &str, locator: &str, body: &[u8]) -> Result<Outcome, Error> {
    let sha = sha256_hex(body);
    let parsed = match kind {
        Kind::Advisory => osv::parse(body).map(Parsed::Advisory),
        Kind::Vex => openvex::parse(body).map(|(id, s)| Parsed::Vex(id, s)),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(problem) => {
            let problem = format!("{} is not valid {}: {problem}", locator, kind.format());
            let new = sqlx::query(
                "INSERT INTO stella.rejected_documents (kind, source, locator, sha256, problem) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (kind, source, locator, sha256) DO NOTHING",
            )
            .bind(kind.as_str())
            .bind(source)
            .bind(locator)
            .bind(&sha)
            .bind(&problem)
            .execute(db)
            .await?
            .rows_affected()
                == 1;
            return Ok(Outcome::Rejected { problem, new });
        }
    };
    let mut tx = db.begin().await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO stella.source_documents (kind, source, locator, sha256, body) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (kind, source, locator, sha256) DO NOTHING RETURNING id",
    )
    .bind(kind.as_str())
    .bind(source)
    .bind(locator)
    .bind(&sha)
    .bind(body)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        tx.rollback().await?;
        let id = sqlx::query_scalar(
            "SELECT id FROM stella.source_documents WHERE kind = $1 AND source = $2 AND locator = $3 AND sha256 = $4",
        )
        .bind(kind.as_str())
        .bind(source)
        .bind(locator)
        .bind(&sha)
        .fetch_one(db)
        .await?;
        return Ok(Outcome::Unchanged { id });
    };
    match parsed {
        Parsed::Advisory(a) => {
            sqlx::query(
                "INSERT INTO stella.advisories (document_id, advisory_id, linkset, aliases, summary, severity, modified)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(&a.id)
            .bind(a.linkset())
            .bind(a.identifiers())
            .bind(&a.summary)
            .bind(&a.severity)
            .bind(&a.modified)
            .execute(&mut *tx)
            .await?;
            for (position, affected) in a.affected.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO stella.advisory_affected (document_id, position, purl, ranges, versions)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id)
                .bind(position as i32)
                .bind(&affected.purl)
                .bind(serde_json::to_value(&affected.ranges).expect("events serialize"))
                .bind(&affected.versions)
                .execute(&mut *tx)
                .await?;
            }
        }
        Parsed::Vex(vex_id, statements) => {
            for (position, s) in statements.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO stella.vex_statements
                       (document_id, position, statement, vex_id, vulnerability, aliases, product, status, justification)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(id)
                .bind(position as i32)
                .bind(s.index as i32)
                .bind(&vex_id)
                .bind(&s.vulnerability)
                .bind(&s.aliases)
                .bind(&s.product)
                .bind(&s.status)
                .bind(&s.justification)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(Outcome::Stored { id })
}

/// Paging of list endpoints.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// Linksets, optionally those whose key or an identifier contains `q`.
pub async fn linksets(db: &PgPool, kind: Kind, q: Option<&str>, page: Page) -> Result<Value, Error> {
    let sql = match kind {
        Kind::Advisory => {
            "SELECT a.linkset, count(*)::BIGINT, array_agg(DISTINCT d.source ORDER BY d.source)
             FROM stella.advisories a JOIN stella.source_documents d ON d.id = a.document_id
             WHERE $1::TEXT IS NULL OR strpos(lower(a.linkset), lower($1)) > 0 OR $1 = ANY (a.aliases)
             GROUP BY a.linkset ORDER BY a.linkset LIMIT $2 OFFSET $3"
        }
        Kind::Vex => {
            "SELECT s.vulnerability, count(DISTINCT s.document_id)::BIGINT, array_agg(DISTINCT d.source ORDER BY d.source)
             FROM stella.vex_statements s JOIN stella.source_documents d ON d.id = s.document_id
             WHERE $1::TEXT IS NULL OR strpos(lower(s.vulnerability), lower($1)) > 0 OR $1 = ANY (s.aliases)
             GROUP BY s.vulnerability ORDER BY s.vulnerability LIMIT $2 OFFSET $3"
        }
    };
    let rows: Vec<(String, i64, Vec<String>)> =
        sqlx::query_as(sql).bind(q).bind(page.limit).bind(page.offset).fetch_all(db).await?;
    let path = kind.path();
    Ok(Value::Array(
        rows.into_iter()
            .map(|(key, documents, sources)| {
                json!({"key": key, "documents": documents, "sources": sources, "href": format!("/api/v1/{path}/linksets/{key}")})
            })
            .collect(),
    ))
}

fn document_json(kind: Kind, id: i64, source: &str, locator: &str, sha: &str, fetched: &str, current: bool) -> Value {
    json!({"id": id, "source": source, "locator": locator, "sha256": sha, "fetchedAt": fetched, "current": current,
           "raw": format!("/api/v1/{}/documents/{id}/raw", kind.path())})
}

/// A linked original and the advisory facts read from it (one row per document).
type AdvisoryLink = (i64, String, String, String, String, bool, String, Vec<String>, String, String, String);
/// A linked original and one of its VEX statements.
type VexLink = (i64, String, String, String, String, bool, i32, String, String, String, Option<String>);

/// One linkset: every original that names the vulnerability, each as a link, with the facts
/// read from it. Nothing is combined; two sources that disagree are shown side by side.
pub async fn linkset(db: &PgPool, kind: Kind, key: &str) -> Result<Value, Error> {
    let links: Vec<Value> = match kind {
        Kind::Advisory => {
            let rows: Vec<AdvisoryLink> = sqlx::query_as(
                "SELECT d.id, d.source, d.locator, d.sha256, stella.rfc3339(d.fetched_at),
                            d.id IN (SELECT id FROM stella.current_documents), a.advisory_id, a.aliases, a.severity,
                            a.summary, a.modified
                     FROM stella.advisories a JOIN stella.source_documents d ON d.id = a.document_id
                     WHERE a.linkset = $1 OR $1 = ANY (a.aliases) ORDER BY d.id",
            )
            .bind(key)
            .fetch_all(db)
            .await?;
            rows.into_iter()
                .map(|(id, source, locator, sha, fetched, current, advisory, aliases, severity, summary, modified)| {
                    let mut v = document_json(kind, id, &source, &locator, &sha, &fetched, current);
                    v["advisory"] = json!({"id": advisory, "aliases": aliases, "severity": severity,
                                           "summary": summary, "modified": modified});
                    v
                })
                .collect()
        }
        Kind::Vex => {
            let rows: Vec<VexLink> = sqlx::query_as(
                "SELECT d.id, d.source, d.locator, d.sha256, stella.rfc3339(d.fetched_at),
                            d.id IN (SELECT id FROM stella.current_documents), s.statement, s.vex_id, s.product,
                            s.status, s.justification
                     FROM stella.vex_statements s JOIN stella.source_documents d ON d.id = s.document_id
                     WHERE s.vulnerability = $1 OR $1 = ANY (s.aliases) ORDER BY d.id, s.position",
            )
            .bind(key)
            .fetch_all(db)
            .await?;
            rows.into_iter()
                .map(
                    |(
                        id,
                        source,
                        locator,
                        sha,
                        fetched,
                        current,
                        statement,
                        vex_id,
                        product,
                        status,
                        justification,
                    )| {
                        let mut v = document_json(kind, id, &source, &locator, &sha, &fetched, current);
                        v["statement"] = json!({"index": statement, "document": vex_id, "product": product,
                                            "status": status, "justification": justification});
                        v
                    },
                )
                .collect()
        }
    };
    if links.is_empty() {
        return Err(Error::NotFound(format!("{} linkset `{key}`", kind.as_str())));
    }
    Ok(json!({"key": key, "merge": false, "links": links}))
}

/// An original's metadata and bytes, exactly as stored.
pub async fn document(db: &PgPool, kind: Kind, id: i64) -> Result<(Value, Vec<u8>), Error> {
    let row: Option<(String, String, String, String, bool, Vec<u8>)> = sqlx::query_as(
        "SELECT source, locator, sha256, stella.rfc3339(fetched_at), id IN (SELECT id FROM stella.current_documents), body
         FROM stella.source_documents WHERE id = $1 AND kind = $2",
    )
    .bind(id)
    .bind(kind.as_str())
    .fetch_optional(db)
    .await?;
    let (source, locator, sha, fetched, current, body) =
        row.ok_or_else(|| Error::NotFound(format!("{} document {id}", kind.as_str())))?;
    Ok((document_json(kind, id, &source, &locator, &sha, &fetched, current), body))
}

/// Documents that were refused, newest first.
pub async fn rejections(db: &PgPool, kind: Kind, page: Page) -> Result<Value, Error> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT source, locator, sha256, problem, stella.rfc3339(rejected_at) FROM stella.rejected_documents
         WHERE kind = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
    )
    .bind(kind.as_str())
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(db)
    .await?;
    Ok(Value::Array(
        rows.into_iter()
            .map(|(source, locator, sha, problem, at)| {
                json!({"source": source, "locator": locator, "sha256": sha, "problem": problem, "rejectedAt": at})
            })
            .collect(),
    ))
}

/// The declaration of an aggregator binary (Conseiller or Excitator): aggregation only, the
/// source settings, the routes of `kind`, and the source poller started with them. One function
/// for both, so neither can miss a setting or a guard the other has.
pub fn service(name: &'static str, port: u16, kind: Kind) -> stella_runtime::Service {
    let mut service = crate::jobs::settings(stella_runtime::Service::server(name, port))
        .aggregation_only()
        .checked_setting(crate::sources::SOURCES, crate::sources::check);
    for s in crate::sources::SETTINGS {
        service = service.setting(*s);
    }
    // Route builders are plain functions (no captures), one per kind. They run once, inside the
    // runtime, before the server starts: the place to start the poller.
    fn advisories(ctx: &stella_runtime::Context) -> stella_runtime::axum::Router {
        crate::sources::spawn(ctx, Kind::Advisory);
        crate::routes::aggregation(crate::Core::new(ctx), Kind::Advisory)
    }
    fn vex(ctx: &stella_runtime::Context) -> stella_runtime::axum::Router {
        crate::sources::spawn(ctx, Kind::Vex);
        crate::routes::aggregation(crate::Core::new(ctx), Kind::Vex)
    }
    service.routes(match kind {
        Kind::Advisory => advisories,
        Kind::Vex => vex,
    })
}
