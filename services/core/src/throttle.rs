//! Login throttling: failed password logins are counted per account and per source address in
//! PostgreSQL (`stella.login_failures`), so every replica of the API and the console enforces
//! one limit. Over a limit, a login is refused with 429 and `Retry-After` before the password
//! is checked, so a guess that happens to be right is refused too; a success clears the
//! account's failures.
//!
//! Why PostgreSQL and not Redis: it is the one store every replica already shares and the only
//! source of truth; a login is rare enough that one indexed count per attempt costs nothing.

use std::net::IpAddr;
use std::time::Duration;

use stella_runtime::sqlx::{self, PgPool};

use crate::Error;

/// The limits, from the Authority's settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Failures of one account (tenant and user name) within `window`.
    pub per_account: i64,
    /// Failures from one source address within `window`, whatever the account.
    pub per_source: i64,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { per_account: 5, per_source: 50, window: Duration::from_secs(15 * 60) }
    }
}

fn account(tenant: &str, username: &str) -> String {
    format!("{tenant}/{username}")
}

fn source(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
}

/// Refuses the attempt when the account or the source is over its limit: 429 naming which,
/// with the seconds until the oldest failure in the window expires.
pub async fn check(
    db: &PgPool,
    limits: &Limits,
    tenant: &str,
    username: &str,
    ip: Option<IpAddr>,
) -> Result<(), Error> {
    let window = limits.window.as_secs_f64();
    // One static query per column: the failures within the window, and the seconds until the
    // oldest of them leaves it.
    macro_rules! counted {
        ($column:literal) => {
            concat!(
                "SELECT count(*), COALESCE(ceil(extract(epoch FROM min(at) + make_interval(secs => $2) - now())), 0)::BIGINT
                 FROM stella.login_failures WHERE ",
                $column,
                " = $1 AND at > now() - make_interval(secs => $2)"
            )
        };
    }
    for (sql, key, limit, what) in [
        (
            counted!("account"),
            account(tenant, username),
            limits.per_account,
            format!("the account {tenant}/{username}"),
        ),
        (counted!("source"), source(ip), limits.per_source, format!("this address ({})", source(ip))),
    ] {
        let (failures, retry): (i64, i64) = sqlx::query_as(sql).bind(&key).bind(window).fetch_one(db).await?;
        if failures >= limit {
            let retry = retry.max(1) as u64;
            return Err(Error::Throttled {
                message: format!(
                    "too many failed logins for {what}: {failures} within {} min; retry in {retry} s",
                    limits.window.as_secs() / 60
                ),
                retry_after: retry,
            });
        }
    }
    Ok(())
}

/// Records a failed attempt.
pub async fn failed(db: &PgPool, tenant: &str, username: &str, ip: Option<IpAddr>) -> Result<(), Error> {
    sqlx::query("INSERT INTO stella.login_failures (account, source) VALUES ($1, $2)")
        .bind(account(tenant, username))
        .bind(source(ip))
        .execute(db)
        .await?;
    Ok(())
}

/// A successful login clears its account's failures (not its source's: one right password
/// does not license more guesses from the same address).
pub async fn succeeded(db: &PgPool, tenant: &str, username: &str) -> Result<(), Error> {
    sqlx::query("DELETE FROM stella.login_failures WHERE account = $1")
        .bind(account(tenant, username))
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes failures older than the window: they count for nothing.
pub async fn purge(db: &PgPool, limits: &Limits) -> Result<u64, Error> {
    Ok(sqlx::query("DELETE FROM stella.login_failures WHERE at <= now() - make_interval(secs => $1)")
        .bind(limits.window.as_secs_f64())
        .execute(db)
        .await?
        .rows_affected())
}
