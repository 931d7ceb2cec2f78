//! The findings ledger: append-only chains of events, each carrying the hash of the one before
//! it; one chain per tenant (`stella.tenant_ledger`).
//!
//! `hash = sha256(canonical JSON of {v: 2, seq, tenant, kind, payload, recordedAt, prev})`, where
//! canonical is OLPC canonical JSON (sorted keys, no spaces), so the hash can be recomputed from
//! what PostgreSQL gives back, whatever order `jsonb` keeps keys in; `seq` counts the tenant's
//! events from 1. Appends take a transaction advisory lock per tenant: a chain has one writer at
//! a time and no forks (the primary key refuses one anyway), and one tenant's long import never
//! delays another's. Triggers refuse UPDATE, DELETE and TRUNCATE; [`verify`] finds any edit made
//! around them.
//!
//! Why a chain per tenant rather than one for the platform: a tenant verifies what it owns
//! without walking, counting or seeing the head of anyone else's events, and imports of
//! different tenants no longer serialize on one lock. The events of earlier releases stay in
//! `stella.ledger_events`, the platform chain (hashes without `v`, a global `seq`): a tenant's
//! verification checks the content hash of each of its own there, and [`verify_platform`] (an
//! admin of the default tenant) walks that chain's links and every tenant's chain. A previous
//! release, after a rollback, reads and appends to the platform chain only, which stays valid.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};
use stella_runtime::sqlx::{self, PgConnection, PgPool};

use crate::checkpoint::{self, Checkpoints};
use crate::{Error, sha256_hex};

/// The hash the first event of a chain points at.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// First key of the per-tenant `pg_advisory_xact_lock(key, tenant)` ("LEDG" in ASCII).
const LOCK: i32 = 0x4c45_4447;

/// OLPC canonical JSON; `None` for a value it cannot represent (a float), which our events never
/// hold: such a payload can only come from an edit made outside the code.
fn canonical(v: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    v.serialize(&mut ser).ok()?;
    Some(out)
}

/// The hash of a platform-chain event (earlier releases).
fn event_hash(seq: i64, tenant: i64, kind: &str, payload: &Value, recorded_at: &str, prev: &str) -> Option<String> {
    let doc = json!({"seq": seq, "tenant": tenant, "kind": kind, "payload": payload, "recordedAt": recorded_at, "prev": prev});
    canonical(&doc).map(|c| sha256_hex(&c))
}

/// The hash of a tenant-chain event: `v: 2` keeps it apart from any platform-chain event.
fn tenant_hash(seq: i64, tenant: i64, kind: &str, payload: &Value, recorded_at: &str, prev: &str) -> Option<String> {
    let doc = json!({"v": 2, "seq": seq, "tenant": tenant, "kind": kind, "payload": payload, "recordedAt": recorded_at,
                     "prev": prev});
    canonical(&doc).map(|c| sha256_hex(&c))
}

/// Appends one event to the tenant's chain inside the caller's transaction; returns its
/// sequence number in that chain.
pub async fn append(tx: &mut PgConnection, tenant_id: i64, kind: &str, payload: Value) -> Result<i64, Error> {
    let key = i32::try_from(tenant_id).map_err(|_| Error::Internal(format!("tenant id {tenant_id} out of range")))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)").bind(LOCK).bind(key).execute(&mut *tx).await?;
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM stella.tenant_ledger WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1")
            .bind(tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (seq, prev) = last.map(|(s, h)| (s + 1, h)).unwrap_or((1, GENESIS.to_string()));
    let recorded_at: String = sqlx::query_scalar("SELECT stella.rfc3339(now())").fetch_one(&mut *tx).await?;
    let hash = tenant_hash(seq, tenant_id, kind, &payload, &recorded_at, &prev)
        .ok_or_else(|| Error::Internal(format!("ledger event {kind}: the payload has a float")))?;
    sqlx::query(
        "INSERT INTO stella.tenant_ledger (tenant_id, seq, kind, payload, recorded_at, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant_id)
    .bind(seq)
    .bind(kind)
    .bind(&payload)
    .bind(&recorded_at)
    .bind(&prev)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    Ok(seq)
}

/// The result of walking one chain.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    pub valid: bool,
    /// The tenant's events: its chain and its events in the platform chain.
    pub events: i64,
    /// The hash of the chain's last event (the genesis hash for an empty chain).
    pub head: String,
    /// The first event whose hash or link does not hold (its `seq` in `chain`), and why.
    pub broken_at: Option<i64>,
    pub chain: Option<&'static str>,
    pub problem: Option<String>,
    /// The last signed checkpoint the chain was checked against (`{seq, head, at}`), when
    /// checkpoints are on.
    pub checkpoint: Option<Value>,
}

type Row = (i64, i64, String, Value, String, String, String);

/// Walks `rows` (ordered by seq) as one chain: `Err((seq, problem))` at the first break.
fn walk(rows: &[Row], hash: fn(i64, i64, &str, &Value, &str, &str) -> Option<String>) -> Result<String, (i64, String)> {
    let mut prev = GENESIS.to_string();
    for (expected_seq, (seq, tenant, kind, payload, recorded_at, prev_hash, recorded)) in (1..).zip(rows) {
        if *seq != expected_seq {
            return Err((expected_seq, format!("event {expected_seq} is missing (the next is {seq})")));
        }
        if *prev_hash != prev {
            return Err((*seq, format!("event {seq} links to {prev_hash}, but the event before it hashes to {prev}")));
        }
        if hash(*seq, *tenant, kind, payload, recorded_at, prev_hash).as_ref() != Some(recorded) {
            return Err((*seq, format!("event {seq} does not hash to its recorded hash: its content was changed")));
        }
        prev = recorded.clone();
    }
    Ok(prev)
}

/// Verifies the tenant's own events: its chain, link by link, the content hash of each of its
/// events in the platform chain of earlier releases, and, with checkpoints on, that the chain
/// still holds the last signed head.
pub async fn verify(
    db: &PgPool,
    tenant_id: i64,
    checkpoints: Option<&Arc<Checkpoints>>,
) -> Result<Verification, Error> {
    let legacy: Vec<Row> = sqlx::query_as(
        "SELECT seq, tenant_id, kind, payload, recorded_at, prev_hash, hash FROM stella.ledger_events
         WHERE tenant_id = $1 ORDER BY seq",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await?;
    let chain: Vec<Row> = sqlx::query_as(
        "SELECT seq, tenant_id, kind, payload, recorded_at, prev_hash, hash FROM stella.tenant_ledger
         WHERE tenant_id = $1 ORDER BY seq",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await?;
    let events = (legacy.len() + chain.len()) as i64;
    let signed = match checkpoints {
        Some(c) => c.read(tenant_id).await.map_err(|problem| (0, problem)),
        None => Ok(None),
    };
    let shown = signed.as_ref().ok().and_then(|c| c.as_ref().map(checkpoint::shown));
    let broken = |seq, chain, problem| Verification {
        valid: false,
        events,
        head: String::new(),
        broken_at: Some(seq),
        chain: Some(chain),
        problem: Some(problem),
        checkpoint: shown.clone(),
    };
    // The platform chain's links run through other tenants' events: only contents are checked.
    for (seq, tenant, kind, payload, recorded_at, prev_hash, recorded) in &legacy {
        if event_hash(*seq, *tenant, kind, payload, recorded_at, prev_hash).as_ref() != Some(recorded) {
            let problem = format!("event {seq} does not hash to its recorded hash: its content was changed");
            return Ok(broken(*seq, "platform", problem));
        }
    }
    let head = match walk(&chain, tenant_hash) {
        Ok(head) => head,
        Err((seq, problem)) => return Ok(broken(seq, "tenant", problem)),
    };
    match signed {
        Err((seq, problem)) => return Ok(broken(seq, "checkpoint", problem)),
        Ok(Some(c)) => {
            let held = usize::try_from(c.seq - 1).ok().and_then(|i| chain.get(i)).is_some_and(|e| e.6 == c.head);
            if !held {
                let problem = format!(
                    "the chain no longer holds event {} with the head signed at {} ({}): events were deleted or rewritten",
                    c.seq, c.at, c.head
                );
                return Ok(broken(c.seq, "checkpoint", problem));
            }
        }
        Ok(None) => {}
    }
    Ok(Verification { valid: true, events, head, broken_at: None, chain: None, problem: None, checkpoint: shown })
}

/// The platform check (an admin of the default tenant): the platform chain of earlier releases
/// link by link, and every tenant's chain; one line per tenant, no event contents.
pub async fn verify_platform(db: &PgPool, checkpoints: Option<&Arc<Checkpoints>>) -> Result<Value, Error> {
    let legacy: Vec<Row> = sqlx::query_as(
        "SELECT seq, tenant_id, kind, payload, recorded_at, prev_hash, hash FROM stella.ledger_events ORDER BY seq",
    )
    .fetch_all(db)
    .await?;
    let platform = match walk(&legacy, event_hash) {
        Ok(head) => json!({"valid": true, "events": legacy.len(), "head": head}),
        Err((seq, problem)) => json!({"valid": false, "events": legacy.len(), "brokenAt": seq, "problem": problem}),
    };
    let tenants: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, slug FROM stella.tenants ORDER BY slug").fetch_all(db).await?;
    let mut valid = platform["valid"] == true;
    let mut chains = Vec::new();
    for (id, slug) in tenants {
        let v = verify(db, id, checkpoints).await?;
        valid &= v.valid;
        chains.push(
            json!({"tenant": slug, "valid": v.valid, "events": v.events, "head": v.head, "brokenAt": v.broken_at,
                           "chain": v.chain, "problem": v.problem}),
        );
    }
    Ok(json!({"valid": valid, "platform": platform, "tenants": chains}))
}

/// The tenant's chain after `after`, oldest first.
pub async fn events(db: &PgPool, tenant_id: i64, after: i64, limit: i64) -> Result<Value, Error> {
    let rows: Vec<(i64, String, Value, String, String)> = sqlx::query_as(
        "SELECT seq, kind, payload, recorded_at, hash FROM stella.tenant_ledger
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
        assert_ne!(event_hash(1, 1, "k", &a, "t", GENESIS), tenant_hash(1, 1, "k", &a, "t", GENESIS));
    }
}
