//! The findings ledger: an append-only chain of events, each carrying the hash of the one
//! before it.
//!
//! `hash = sha256(canonical JSON of {seq, tenant, kind, payload, recordedAt, prev})`, where
//! canonical is OLPC canonical JSON (sorted keys, no spaces), so the hash can be recomputed from
//! what PostgreSQL gives back, whatever order `jsonb` keeps keys in. Appends take a transaction
//! advisory lock: the chain has one writer at a time and no forks. A trigger refuses UPDATE,
//! DELETE and TRUNCATE on the table; [`verify`] finds any edit made around it.

use serde::Serialize;
use serde_json::{Value, json};
use stella_runtime::sqlx::{self, PgConnection, PgPool};

use crate::{Error, sha256_hex};

/// The hash the first event points at.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `pg_advisory_xact_lock` key of the ledger ("LEDGER" in ASCII).
const LOCK: i64 = 0x4c45_4447_4552;

/// OLPC canonical JSON; `None` for a value it cannot represent (a float), which our events never
/// hold: such a payload can only come from an edit made outside the code.
fn canonical(v: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    v.serialize(&mut ser).ok()?;
    Some(out)
}

fn event_hash(seq: i64, tenant: i64, kind: &str, payload: &Value, recorded_at: &str, prev: &str) -> Option<String> {
    let doc = json!({"seq": seq, "tenant": tenant, "kind": kind, "payload": payload, "recordedAt": recorded_at, "prev": prev});
    canonical(&doc).map(|c| sha256_hex(&c))
}

/// Appends one event inside the caller's transaction; returns its sequence number.
pub async fn append(tx: &mut PgConnection, tenant_id: i64, kind: &str, payload: Value) -> Result<i64, Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(LOCK).execute(&mut *tx).await?;
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM stella.ledger_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (seq, prev) = last.map(|(s, h)| (s + 1, h)).unwrap_or((1, GENESIS.to_string()));
    let recorded_at: String = sqlx::query_scalar("SELECT stella.rfc3339(now())").fetch_one(&mut *tx).await?;
    let hash = event_hash(seq, tenant_id, kind, &payload, &recorded_at, &prev)
        .ok_or_else(|| Error::Internal(format!("ledger event {kind}: the payload has a float")))?;
    sqlx::query(
        "INSERT INTO stella.ledger_events (seq, tenant_id, kind, payload, recorded_at, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(seq)
    .bind(tenant_id)
    .bind(kind)
    .bind(&payload)
    .bind(&recorded_at)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    Ok(seq)
}

/// The result of walking the whole chain.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub valid: bool,
    pub events: i64,
    pub head: String,
    /// The first event whose hash or link does not hold, and why.
    pub broken_at: Option<i64>,
    pub problem: Option<String>,
}

/// Recomputes every hash and link, in order.
pub async fn verify(db: &PgPool) -> Result<Verification, Error> {
    let rows: Vec<(i64, i64, String, Value, String, String, String)> = sqlx::query_as(
        "SELECT seq, tenant_id, kind, payload, recorded_at, prev_hash, hash FROM stella.ledger_events ORDER BY seq",
    )
    .fetch_all(db)
    .await?;
    let mut prev = GENESIS.to_string();
    for (expected_seq, (seq, tenant, kind, payload, recorded_at, prev_hash, hash)) in (1..).zip(&rows) {
        let problem = if *seq != expected_seq {
            Some(format!("event {expected_seq} is missing (the next is {seq})"))
        } else if *prev_hash != prev {
            Some(format!("event {seq} links to {prev_hash}, but the event before it hashes to {prev}"))
        } else if event_hash(*seq, *tenant, kind, payload, recorded_at, prev_hash).as_ref() != Some(hash) {
            Some(format!("event {seq} does not hash to its recorded hash: its content was changed"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Ok(Verification {
                valid: false,
                events: rows.len() as i64,
                head: rows.last().map(|r| r.6.clone()).unwrap_or_default(),
                broken_at: Some(*seq),
                problem: Some(problem),
            });
        }
        prev = hash.clone();
    }
    Ok(Verification { valid: true, events: rows.len() as i64, head: prev, broken_at: None, problem: None })
}

/// The tenant's events after `after`, oldest first.
pub async fn events(db: &PgPool, tenant_id: i64, after: i64, limit: i64) -> Result<Value, Error> {
    let rows: Vec<(i64, String, Value, String, String)> = sqlx::query_as(
        "SELECT seq, kind, payload, recorded_at, hash FROM stella.ledger_events
         WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(Value::Array(
        rows.into_iter()
            .map(|(seq, kind, payload, at, hash)| json!({"seq": seq, "kind": kind, "payload": payload, "recordedAt": at, "hash": hash}))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_does_not_depend_on_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":2},"b":1}"#).unwrap();
        assert_eq!(event_hash(1, 1, "k", &a, "t", GENESIS), event_hash(1, 1, "k", &b, "t", GENESIS));
        assert_ne!(event_hash(1, 1, "k", &a, "t", GENESIS), event_hash(2, 1, "k", &a, "t", GENESIS));
        assert_eq!(event_hash(1, 1, "k", &json!({"x": 1.5}), "t", GENESIS), None, "a float is reported, not a panic");
    }
}
