//! `/health/readiness`: every configured dependency is checked concurrently, each with a timeout.
//!
//! The answer is 503 with a body naming each failing dependency, or once draining has begun.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, PgPool};

use crate::shutdown::Drain;

/// A dependency that must answer for the service to be ready.
#[derive(Clone)]
#[cfg_attr(test, allow(clippy::large_enum_variant))]
pub enum Dependency {
    /// PostgreSQL, checked with `SELECT 1` through the service's own pool.
    Postgres(PgPool, PgConnectOptions),
    /// A check whose task panics: what `evaluate` must count as failing.
    #[cfg(test)]
    Panics,
}

impl Dependency {
    fn name(&self) -> &'static str {
        match self {
            Dependency::Postgres(..) => "database",
            #[cfg(test)]
            Dependency::Panics => "panics",
        }
    }

    async fn check(&self, timeout: Duration) -> Result<(), String> {
        match self {
            Dependency::Postgres(pool, options) => {
                // The pool's own error on failure is only "timed out"; half the time goes to the
                // pool and, when that fails, half to one direct connection whose error says why.
                let half = timeout / 2;
                match tokio::time::timeout(half, sqlx::query("SELECT 1").execute(pool)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) if !matches!(e, sqlx::Error::PoolTimedOut) => Err(e.to_string()),
                    _ => match tokio::time::timeout(half, PgConnection::connect_with(options)).await {
                        Ok(Ok(conn)) => {
                            drop(conn.close().await);
                            Err("connected directly, but the pool has no usable connection".into())
                        }
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {}", crate::config::format_duration(timeout))),
                    },
                }
            }
            #[cfg(test)]
            Dependency::Panics => panic!("a check that fails to run"),
        }
    }
}

#[derive(Clone)]
pub struct Readiness {
    deps: Arc<Vec<Dependency>>,
    timeout: Duration,
    drain: Drain,
}

impl Readiness {
    pub fn new(deps: Vec<Dependency>, timeout: Duration, drain: Drain) -> Readiness {
        Readiness { deps: Arc::new(deps), timeout, drain }
    }

    /// `(ready, body)`: the body lists every check with its status and latency.
    pub async fn evaluate(&self) -> (bool, Value) {
        if self.drain.is_draining() {
            return (false, json!({ "status": "draining", "failing": [], "checks": {} }));
        }
        let mut set = tokio::task::JoinSet::new();
        for dep in self.deps.iter() {
            let dep = dep.clone();
            let timeout = self.timeout;
            set.spawn(async move {
                let start = Instant::now();
                let result = dep.check(timeout).await;
                (dep.name(), start.elapsed(), result)
            });
        }
        let mut checks = serde_json::Map::new();
        let mut failing = Vec::new();
        while let Some(joined) = set.join_next().await {
            // A check that panicked has no result: it is counted below, as failing.
            let Ok((name, elapsed, result)) = joined else {
                continue;
            };
            let latency_ms = elapsed.as_millis() as u64;
            let entry = match result {
                Ok(()) => json!({ "status": "up", "latencyMs": latency_ms }),
                Err(error) => {
                    failing.push(name);
                    tracing::warn!(dependency = name, error = %error, "readiness check failed");
                    json!({ "status": "down", "latencyMs": latency_ms, "error": crate::redact::redact(&error) })
                }
            };
            checks.insert(name.into(), entry);
        }
        let unfinished: Vec<&'static str> =
            self.deps.iter().map(Dependency::name).filter(|n| !checks.contains_key(*n)).collect();
        for name in unfinished {
            failing.push(name);
            tracing::warn!(dependency = name, "readiness check did not finish (it panicked)");
            checks.insert(name.into(), json!({ "status": "down", "error": "the check did not finish (it panicked)" }));
        }
        failing.sort_unstable();
        let ready = failing.is_empty();
        let status = if ready { "ready" } else { "not_ready" };
        (ready, json!({ "status": status, "failing": failing, "checks": checks }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check that panics is a failing check, never a skipped one.
    #[tokio::test]
    async fn a_check_that_panics_counts_as_failing() {
        let readiness = Readiness::new(vec![Dependency::Panics], Duration::from_secs(1), Drain::default());
        let (ready, body) = readiness.evaluate().await;
        assert!(!ready, "{body}");
        assert_eq!(body["failing"], json!(["panics"]));
        assert_eq!(body["checks"]["panics"]["status"], "down");
    }
}
