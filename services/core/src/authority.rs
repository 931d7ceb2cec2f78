//! Authority: tenants, users, sessions and API tokens.
//!
//! A token is `stella_` and 43 base64url characters (32 random bytes). Only its SHA-256 is
//! stored; the token is shown once, when created. Sessions (from a password login) and API
//! tokens are the same kind of row, each with an expiry: a session lasts `STELLA_SESSION_TTL`,
//! an API token `STELLA_TOKEN_TTL` unless its creator asks for less (at most
//! `STELLA_TOKEN_MAX_TTL`). Every protected route extracts a [`Caller`], which checks the token
//! and, when the request names a tenant (`X-Stella-Tenant`), that it is the token's tenant. A
//! token acts with the lower of its own role and its user's current one, so demoting a user
//! demotes their tokens at once. Password logins are throttled ([`crate::throttle`]), the same
//! for the API and the console, which both call [`login`] and [`create_token`].

use std::net::IpAddr;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use serde::Serialize;
use stella_runtime::axum::extract::{FromRef, FromRequestParts};
use stella_runtime::axum::http::request::Parts;
use stella_runtime::config::{Config, Default as Fallback, Kind as SettingKind, Setting};
use stella_runtime::s;
use stella_runtime::sqlx::{self, PgPool};
use stella_runtime::tracing::{info, warn};

use crate::throttle::{self, Limits};
use crate::{Core, Error, sha256_hex};

/// The Authority's settings: every service that signs users in or creates tokens (the API and
/// the console) declares them.
pub const SETTINGS: &[Setting] = &[
    s(
        "STELLA_SESSION_TTL",
        SettingKind::Duration,
        Fallback::Value("12h"),
        "How long a session from a password login (the API's or the console's) lasts.",
    ),
    s(
        "STELLA_TOKEN_TTL",
        SettingKind::Duration,
        Fallback::Value("30d"),
        "Lifetime of an API token whose creator names none.",
    ),
    s(
        "STELLA_TOKEN_MAX_TTL",
        SettingKind::Duration,
        Fallback::Value("365d"),
        "The longest lifetime an API token may be given; longer requests are refused (422).",
    ),
    s(
        "STELLA_LOGIN_MAX_FAILURES",
        SettingKind::Count { min: 1, max: 1000 },
        Fallback::Value("5"),
        "Failed logins of one account within STELLA_LOGIN_FAILURE_WINDOW before its logins are refused (429).",
    ),
    s(
        "STELLA_LOGIN_MAX_FAILURES_PER_SOURCE",
        SettingKind::Count { min: 1, max: 100000 },
        Fallback::Value("50"),
        "Failed logins from one source address within the window, whatever the account, before its logins are \
         refused (429). Behind a proxy every client shares its address: raise this.",
    ),
    s(
        "STELLA_LOGIN_FAILURE_WINDOW",
        SettingKind::Duration,
        Fallback::Value("15m"),
        "How long a failed login counts toward the limits above.",
    ),
];

/// Lifetimes and limits, from [`SETTINGS`].
#[derive(Clone, Debug)]
pub struct Policy {
    pub session_ttl: Duration,
    pub token_ttl: Duration,
    pub token_max_ttl: Duration,
    pub limits: Limits,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            session_ttl: Duration::from_secs(12 * 3600),
            token_ttl: Duration::from_secs(30 * 86400),
            token_max_ttl: Duration::from_secs(365 * 86400),
            limits: Limits::default(),
        }
    }
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        let d = Policy::default();
        let duration = |name, fallback| config.duration(name).unwrap_or(fallback);
        let count = |name, fallback: i64| config.int(name).map_or(fallback, |n| n as i64);
        Policy {
            session_ttl: duration("STELLA_SESSION_TTL", d.session_ttl),
            token_ttl: duration("STELLA_TOKEN_TTL", d.token_ttl),
            token_max_ttl: duration("STELLA_TOKEN_MAX_TTL", d.token_max_ttl),
            limits: Limits {
                per_account: count("STELLA_LOGIN_MAX_FAILURES", d.limits.per_account),
                per_source: count("STELLA_LOGIN_MAX_FAILURES_PER_SOURCE", d.limits.per_source),
                window: duration("STELLA_LOGIN_FAILURE_WINDOW", d.limits.window),
            },
        }
    }
}

/// Roles, weakest first: a caller may grant only roles up to its own.
pub const ROLES: &[&str] = &["viewer", "operator", "admin"];

pub fn role_rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap_or(0)
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    #[serde(skip)]
    pub tenant_id: i64,
    pub tenant: String,
    pub username: String,
    #[serde(skip)]
    pub user_id: i64,
    pub role: String,
    pub token_name: String,
}

impl Caller {
    /// Refuses the request unless the caller has at least `role`.
    pub fn require(&self, role: &str) -> Result<(), Error> {
        if role_rank(&self.role) >= role_rank(role) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!("this needs the {role} role; the token has {}", self.role)))
        }
    }

    /// Refuses the request unless the caller is an admin of the platform tenant (`default`):
    /// what acts on every tenant at once. The refusal says `{why}: only an admin of the `default`
    /// tenant may {act}`.
    pub fn require_platform_admin(&self, why: &str, act: &str) -> Result<(), Error> {
        self.require("admin")?;
        if self.tenant != crate::seed::TENANT {
            let tenant = crate::seed::TENANT;
            return Err(Error::Forbidden(format!("{why}: only an admin of the `{tenant}` tenant may {act}")));
        }
        Ok(())
    }
}

/// Any router state that holds a [`Core`] authenticates callers through it.
impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Core: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, Error> {
        let core = Core::from_ref(state);
        let header = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Unauthorized("missing `Authorization: Bearer <token>`".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Error::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
        let caller = authenticate(core.db()?, token.trim()).await?;
        if let Some(wanted) = parts.headers.get("x-stella-tenant").and_then(|v| v.to_str().ok())
            && wanted != caller.tenant
        {
            return Err(Error::Forbidden(format!("the token belongs to tenant `{}`, not `{wanted}`", caller.tenant)));
        }
        Ok(caller)
    }
}

/// The address a request came from (the TCP peer), for login throttling; `None` where the
/// server does not record it.
pub struct Source(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Source, Self::Rejection> {
        use stella_runtime::axum::extract::ConnectInfo;
        Ok(Source(parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// Looks a token up by its hash; expired and revoked tokens are refused alike.
pub async fn authenticate(db: &PgPool, token: &str) -> Result<Caller, Error> {
    let row: Option<(i64, String, i64, String, String, String, String)> = sqlx::query_as(
        "SELECT t.tenant_id, n.slug, u.id, u.username, t.role, u.role, t.name
         FROM stella.api_tokens t JOIN stella.tenants n ON n.id = t.tenant_id JOIN stella.users u ON u.id = t.user_id
         WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(sha256_hex(token.as_bytes()))
    .fetch_optional(db)
    .await?;
    let (tenant_id, tenant, user_id, username, token_role, user_role, token_name) =
        row.ok_or_else(|| Error::Unauthorized("the token is unknown, expired or revoked".into()))?;
    // The user's role now, not when the token was made: a demotion takes effect at once.
    let role = if role_rank(&user_role) < role_rank(&token_role) { user_role } else { token_role };
    Ok(Caller { tenant_id, tenant, username, user_id, role, token_name })
}

/// A token as shown once, when created.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    pub id: i64,
    pub token: String,
    pub name: String,
    pub role: String,
    pub tenant: String,
    pub expires_at: Option<String>,
}

fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness for a token: {e}")))?;
    Ok(format!("stella_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

async fn issue(
    db: &PgPool,
    tenant: (i64, &str),
    user_id: i64,
    name: &str,
    role: &str,
    kind: &str,
    ttl: Duration,
) -> Result<Issued, Error> {
    let token = new_token()?;
    let (id, expires_at): (i64, Option<String>) = sqlx::query_as(
        "INSERT INTO stella.api_tokens (tenant_id, user_id, name, role, kind, token_sha256, prefix, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
         RETURNING id, stella.rfc3339(expires_at)",
    )
    .bind(tenant.0)
    .bind(user_id)
    .bind(name)
    .bind(role)
    .bind(kind)
    .bind(sha256_hex(token.as_bytes()))
    .bind(&token[..12])
    .bind(ttl.as_secs_f64())
    .fetch_one(db)
    .await?;
    Ok(Issued { id, token, name: name.into(), role: role.into(), tenant: tenant.1.into(), expires_at })
}

/// A hash of a random password, to verify unknown users against.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let mut random = [0u8; 16];
    let _ = getrandom::fill(&mut random);
    hash_password(&hex::encode(random)).unwrap_or_default()
});

/// Password checks running at once, at most.
static VERIFYING: stella_runtime::tokio::sync::Semaphore = stella_runtime::tokio::sync::Semaphore::const_new(4);

/// Password login from `source`: a session token of the user's role, valid for the policy's
/// session lifetime; refused (429) while the account or the source is over its failure limit.
pub async fn login(
    db: &PgPool,
    policy: &Policy,
    tenant: &str,
    username: &str,
    password: &str,
    source: Option<IpAddr>,
) -> Result<Issued, Error> {
    throttle::check(db, &policy.limits, tenant, username, source).await?;
    let row: Option<(i64, i64, String, String)> = sqlx::query_as(
        "SELECT n.id, u.id, u.password_hash, u.role FROM stella.users u JOIN stella.tenants n ON n.id = u.tenant_id
         WHERE n.slug = $1 AND u.username = $2",
    )
    .bind(tenant)
    .bind(username)
    .fetch_optional(db)
    .await?;
    // The same answer, and the same work, for an unknown user and a wrong password: an unknown
    // user is checked against a dummy hash, so neither the message nor the time tells names apart.
    let refused = || Error::Unauthorized("unknown tenant, user or password".into());
    let hash = match &row {
        Some((_, _, hash, _)) => hash.clone(),
        None => DUMMY_HASH.clone(),
    };
    // Each check takes ~19 MiB and tens of milliseconds: at most a few at once, so a flood of
    // logins queues instead of exhausting memory.
    let _permit = VERIFYING.acquire().await.map_err(|e| Error::Internal(e.to_string()))?;
    let password = password.to_string();
    let ok = stella_runtime::tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let Some((tenant_id, user_id, _, role)) = row.filter(|_| ok) else {
        throttle::failed(db, tenant, username, source).await?;
        return Err(refused());
    };
    throttle::succeeded(db, tenant, username).await?;
    issue(db, (tenant_id, tenant), user_id, "session", &role, "session", policy.session_ttl).await
}

/// An API token created by `caller` (an operator or admin), with a role up to the caller's own
/// and a lifetime of `ttl` (the policy's default when `None`, never above its maximum).
pub async fn create_token(
    db: &PgPool,
    policy: &Policy,
    caller: &Caller,
    name: &str,
    role: &str,
    ttl: Option<Duration>,
) -> Result<Issued, Error> {
    caller.require("operator")?;
    let ttl = ttl.unwrap_or(policy.token_ttl);
    if ttl.is_zero() || ttl > policy.token_max_ttl {
        return Err(Error::bad(
            "ttl",
            format!(
                "a token lives from 1 s to {} (STELLA_TOKEN_MAX_TTL)",
                stella_runtime::config::format_duration(policy.token_max_ttl)
            ),
        ));
    }
    if !ROLES.contains(&role) {
        return Err(Error::bad("role", format!("`{role}` is not one of {}", ROLES.join(", "))));
    }
    if name.trim().is_empty() || name.len() > 100 {
        return Err(Error::bad("name", "give the token a name of 1 to 100 characters"));
    }
    caller.require(role)?;
    issue(db, (caller.tenant_id, &caller.tenant), caller.user_id, name, role, "api", ttl).await
}

/// Deletes sessions that expired or were revoked more than a day ago (API tokens stay listed
/// with their state), and login failures that no longer count.
pub async fn purge(db: &PgPool, policy: &Policy) -> Result<(u64, u64), Error> {
    let sessions = sqlx::query(
        "DELETE FROM stella.api_tokens WHERE kind = 'session'
           AND (expires_at < now() - interval '1 day' OR revoked_at < now() - interval '1 day')",
    )
    .execute(db)
    .await?
    .rows_affected();
    Ok((sessions, throttle::purge(db, &policy.limits).await?))
}

/// Runs [`purge`] at start-up and every hour (the API service).
pub fn spawn_purge(ctx: &stella_runtime::Context) {
    let Some(db) = ctx.db.clone() else { return };
    let policy = Policy::from_config(&ctx.config);
    ctx.every("session purge", Duration::from_secs(3600), move || {
        let (db, policy) = (db.clone(), policy.clone());
        async move {
            match purge(&db, &policy).await {
                Ok((0, 0)) => {}
                Ok((sessions, failures)) => {
                    info!(sessions, failures, "expired sessions and old login failures deleted")
                }
                Err(e) => warn!(error = %e, "purging expired sessions failed"),
            }
        }
    });
}

/// The tenant's tokens, without secrets.
pub async fn list_tokens(db: &PgPool, caller: &Caller) -> Result<serde_json::Value, Error> {
    type Row = (i64, String, String, String, String, String, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT t.id, t.name, t.role, t.kind, t.prefix, stella.rfc3339(t.created_at), stella.rfc3339(t.expires_at),
                stella.rfc3339(t.revoked_at)
         FROM stella.api_tokens t WHERE t.tenant_id = $1 AND t.kind = 'api' ORDER BY t.id",
    )
    .bind(caller.tenant_id)
    .fetch_all(db)
    .await?;
    Ok(serde_json::Value::Array(
        rows.into_iter()
            .map(|(id, name, role, kind, prefix, created, expires, revoked)| {
                serde_json::json!({"id": id, "name": name, "role": role, "kind": kind, "prefix": prefix,
                    "createdAt": created, "expiresAt": expires, "revokedAt": revoked})
            })
            .collect(),
    ))
}

/// Revokes one of the tenant's tokens; operators may revoke only their own.
pub async fn revoke(db: &PgPool, caller: &Caller, id: i64) -> Result<(), Error> {
    let done = sqlx::query(
        "UPDATE stella.api_tokens SET revoked_at = now()
         WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL AND ($3 OR user_id = $4)",
    )
    .bind(id)
    .bind(caller.tenant_id)
    .bind(caller.role == "admin")
    .bind(caller.user_id)
    .execute(db)
    .await?
    .rows_affected();
    if done == 0 {
        return Err(Error::NotFound(format!("token {id} (in tenant {}, not yet revoked)", caller.tenant)));
    }
    Ok(())
}

pub fn hash_password(password: &str) -> Result<String, Error> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

fn verify_password(password: &str, hash: &str) -> bool {
    argon2::password_hash::phc::PasswordHash::new(hash)
        .map(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// Sets an existing admin's password on purpose (a rotation: `quickstart.sh --rotate
/// admin-password`) and ends its sessions, which were opened with the old one. Its API tokens
/// stay: automation holds them, and they are listed and revoked one by one. Returns how many
/// sessions ended; an error when there is no such user.
pub async fn reset_password(db: &PgPool, tenant: &str, username: &str, password: &str) -> Result<u64, Error> {
    if password.len() < 12 {
        return Err(Error::bad("admin password", "must be at least 12 characters"));
    }
    let hash = hash_password(password)?;
    let mut tx = db.begin().await?;
    let user: Option<i64> = sqlx::query_scalar(
        "UPDATE stella.users u SET password_hash = $3 FROM stella.tenants n
         WHERE n.id = u.tenant_id AND n.slug = $1 AND u.username = $2 RETURNING u.id",
    )
    .bind(tenant)
    .bind(username)
    .bind(hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user) = user else {
        return Err(Error::bad("admin password reset", format!("tenant `{tenant}` has no user `{username}` yet")));
    };
    let ended = sqlx::query(
        "UPDATE stella.api_tokens SET revoked_at = now() WHERE user_id = $1 AND kind = 'session' AND revoked_at IS NULL",
    )
    .bind(user)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(ended)
}

/// Creates the tenant and its admin user if they do not exist. An existing admin keeps its
/// password: the first run's secret stays valid across restarts and re-seeding.
pub async fn ensure_admin(db: &PgPool, tenant: &str, username: &str, password: &str) -> Result<bool, Error> {
    if password.len() < 12 {
        return Err(Error::bad("admin password", "must be at least 12 characters"));
    }
    let tenant_id: i64 = sqlx::query_scalar(
        "INSERT INTO stella.tenants (slug, display_name) VALUES ($1, $1) ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug
         RETURNING id",
    )
    .bind(tenant)
    .fetch_one(db)
    .await?;
    let hash = hash_password(password)?;
    let created = sqlx::query(
        "INSERT INTO stella.users (tenant_id, username, password_hash, role) VALUES ($1, $2, $3, 'admin')
         ON CONFLICT (tenant_id, username) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(username)
    .bind(hash)
    .execute(db)
    .await?
    .rows_affected();
    Ok(created == 1)
}
