//! Policy: versioned policy documents and the worker that gives every scan a verdict under the
//! newest version.
//!
//! A policy is a list of rules; a rule fails a scan when one of its findings has a listed
//! severity and a status outside `unlessStatus`. The baseline (version 1) ships with the schema.
//! The worker claims unevaluated scans with `FOR UPDATE SKIP LOCKED`, so several policy replicas
//! share the work without evaluating a scan twice; each verdict is recorded with the policy
//! version and appended to the ledger in the same transaction.

use std::ops::ControlFlow;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use stella_runtime::config::{Default as Fallback, Kind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tracing::{info, warn};

use crate::authority::Caller;
use crate::{Error, ledger};

pub const INTERVAL: Setting = s(
    "STELLA_POLICY_INTERVAL",
    Kind::Duration,
    Fallback::Value("30s"),
    "The longest the policy worker waits before it looks for scans without a verdict under the \
     newest policy. An imported scan or a new policy version wakes it at once (a PostgreSQL \
     notification); this poll is the fallback for a lost notification.",
);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub severities: Vec<String>,
    #[serde(default)]
    pub unless_status: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Policy {
    pub name: String,
    pub rules: Vec<Rule>,
}

/// A finding as the policy sees it.
#[derive(Debug)]
pub struct Subject {
    pub id: i64,
    pub purl: String,
    pub linkset: String,
    pub severity: String,
    pub status: String,
}

/// `("pass" | "fail", violations)`.
pub fn evaluate(policy: &Policy, findings: &[Subject]) -> (&'static str, Vec<Value>) {
    let mut violations = Vec::new();
    for rule in &policy.rules {
        for f in findings {
            if rule.severities.contains(&f.severity) && !rule.unless_status.contains(&f.status) {
                violations.push(json!({"rule": rule.id, "finding": f.id, "purl": f.purl, "linkset": f.linkset,
                                       "severity": f.severity, "status": f.status}));
            }
        }
    }
    (if violations.is_empty() { "pass" } else { "fail" }, violations)
}

/// The newest policy version and its document.
pub async fn newest(db: &PgPool) -> Result<(i32, Policy), Error> {
    let (version, body): (i32, Value) =
        sqlx::query_as("SELECT version, body FROM stella.policies ORDER BY version DESC LIMIT 1").fetch_one(db).await?;
    let policy = serde_json::from_value(body).map_err(|e| Error::Internal(format!("policy version {version}: {e}")))?;
    Ok((version, policy))
}

/// Evaluates up to `batch` scans that have no verdict under the newest policy; returns how many.
pub async fn evaluate_pending(db: &PgPool, batch: i64) -> Result<usize, Error> {
    let (version, policy) = newest(db).await?;
    let mut tx = db.begin().await?;
    let scans: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT s.id, s.tenant_id FROM stella.scans s
         WHERE NOT EXISTS (SELECT 1 FROM stella.verdicts v WHERE v.scan_id = s.id AND v.policy_version = $1)
         ORDER BY s.id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(version)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    for (scan, tenant) in &scans {
        let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(
            "SELECT id, purl, linkset, severity, status FROM stella.findings WHERE scan_id = $1 ORDER BY id",
        )
        .bind(scan)
        .fetch_all(&mut *tx)
        .await?;
        let subjects: Vec<Subject> = rows
            .into_iter()
            .map(|(id, purl, linkset, severity, status)| Subject { id, purl, linkset, severity, status })
            .collect();
        let (outcome, violations) = evaluate(&policy, &subjects);
        // Another replica may have committed this verdict after our snapshot: then it is theirs.
        let inserted = sqlx::query(
            "INSERT INTO stella.verdicts (scan_id, policy_version, tenant_id, outcome, violations) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (scan_id, policy_version) DO NOTHING",
        )
        .bind(scan)
        .bind(version)
        .bind(tenant)
        .bind(outcome)
        .bind(Value::Array(violations.clone()))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            continue;
        }
        let payload = json!({"scan": scan, "policy": policy.name, "policyVersion": version, "outcome": outcome,
                             "violations": violations.len()});
        ledger::append(&mut tx, *tenant, "policy.verdict", payload).await?;
        info!(scan, policy_version = version, outcome, violations = violations.len(), "verdict recorded");
    }
    tx.commit().await?;
    Ok(scans.len())
}

/// Starts the verdict worker (policy service).
pub fn spawn(ctx: &stella_runtime::Context) {
    let Some(db) = ctx.db.clone() else {
        warn!("STELLA_DATABASE_URL is not set: no verdicts are evaluated");
        return;
    };
    let interval = ctx.config.duration(INTERVAL.name).unwrap_or(Duration::from_secs(30));
    let wake = crate::wake::start(ctx).topic("verdicts");
    ctx.repeat_or_woken("verdicts", wake, move || {
        let db = db.clone();
        async move {
            ControlFlow::Continue(match evaluate_pending(&db, 20).await {
                Ok(20) => Duration::ZERO, // a full batch: more may be waiting
                Ok(_) => interval,
                Err(e) => {
                    warn!(error = %e, "evaluating scans failed; retrying");
                    interval
                }
            })
        }
    });
}

/// Every policy version, newest first.
pub async fn list(db: &PgPool) -> Result<Value, Error> {
    let rows: Vec<(i32, String, Value, String)> = sqlx::query_as(
        "SELECT version, name, body, stella.rfc3339(created_at) FROM stella.policies ORDER BY version DESC",
    )
    .fetch_all(db)
    .await?;
    Ok(Value::Array(
        rows.into_iter()
            .map(|(version, name, body, at)| json!({"version": version, "name": name, "document": body, "createdAt": at}))
            .collect(),
    ))
}

/// The verdicts of one of the caller's scans, newest policy first.
pub async fn verdicts(db: &PgPool, caller: &Caller, scan: i64) -> Result<Value, Error> {
    let rows: Vec<(i32, String, Value, String)> = sqlx::query_as(
        "SELECT policy_version, outcome, violations, stella.rfc3339(evaluated_at) FROM stella.verdicts
         WHERE scan_id = $1 AND tenant_id = $2 ORDER BY policy_version DESC",
    )
    .bind(scan)
    .bind(caller.tenant_id)
    .fetch_all(db)
    .await?;
    Ok(Value::Array(
        rows.into_iter()
            .map(|(version, outcome, violations, at)| {
                json!({"scan": scan, "policyVersion": version, "outcome": outcome, "violations": violations, "evaluatedAt": at})
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_fails_unresolved_critical_and_high_only() {
        let policy: Policy = serde_json::from_value(json!({"name": "baseline", "rules": [
            {"id": "r", "severities": ["critical", "high"], "unlessStatus": ["not_affected", "fixed"]}]}))
        .unwrap();
        let f = |id, severity: &str, status: &str| Subject {
            id,
            purl: "pkg:x/y@1".into(),
            linkset: "CVE-1".into(),
            severity: severity.into(),
            status: status.into(),
        };
        assert_eq!(evaluate(&policy, &[f(1, "critical", "not_affected"), f(2, "medium", "affected")]).0, "pass");
        let (outcome, v) = evaluate(&policy, &[f(1, "high", "affected"), f(2, "critical", "fixed")]);
        assert_eq!(outcome, "fail");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["finding"], 1);
    }
}
