//! Authority: tenants, users, sessions and API tokens.
//!
//! A token is `stella_` and 43 base64url characters (32 random bytes). Only its SHA-256 is
//! stored; the token is shown once, when created. Sessions (from a password login) and API
//! tokens are the same kind of row, a session with an expiry. Every protected route extracts a
//! [`Caller`], which checks the token and, when the request names a tenant (`X-Stella-Tenant`),
//! that it is the token's tenant.

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use serde::Serialize;
use stella_runtime::axum::extract::{FromRef, FromRequestParts};
use stella_runtime::axum::http::request::Parts;
use stella_runtime::sqlx::{self, PgPool};

use crate::{Core, Error, sha256_hex};

/// How long a session from a password login lasts.
pub const SESSION_HOURS: i32 = 12;

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

/// Looks a token up by its hash; expired and revoked tokens are refused alike.
pub async fn authenticate(db: &PgPool, token: &str) -> Result<Caller, Error> {
    let row: Option<(i64, String, i64, String, String, String)> = sqlx::query_as(
        "SELECT t.tenant_id, n.slug, u.id, u.username, t.role, t.name
         FROM stella.api_tokens t JOIN stella.tenants n ON n.id = t.tenant_id JOIN stella.users u ON u.id = t.user_id
         WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(sha256_hex(token.as_bytes()))
    .fetch_optional(db)
    .await?;
    let (tenant_id, tenant, user_id, username, role, token_name) =
        row.ok_or_else(|| Error::Unauthorized("the token is unknown, expired or revoked".into()))?;
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
    hours: Option<i32>,
) -> Result<Issued, Error> {
    let token = new_token()?;
    let (id, expires_at): (i64, Option<String>) = sqlx::query_as(
        "INSERT INTO stella.api_tokens (tenant_id, user_id, name, role, kind, token_sha256, prefix, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(hours => $8))
         RETURNING id, stella.rfc3339(expires_at)",
    )
    .bind(tenant.0)
    .bind(user_id)
    .bind(name)
    .bind(role)
    .bind(kind)
    .bind(sha256_hex(token.as_bytes()))
    .bind(&token[..12])
    .bind(hours)
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

/// Password login: a session token of the user's role, valid [`SESSION_HOURS`].
pub async fn login(db: &PgPool, tenant: &str, username: &str, password: &str) -> Result<Issued, Error> {
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
    let (tenant_id, user_id, _, role) = row.ok_or_else(refused)?;
    if !ok {
        return Err(refused());
    }
    issue(db, (tenant_id, tenant), user_id, "session", &role, "session", Some(SESSION_HOURS)).await
}

/// An API token created by `caller`, with a role up to the caller's own.
pub async fn create_token(db: &PgPool, caller: &Caller, name: &str, role: &str) -> Result<Issued, Error> {
    if !ROLES.contains(&role) {
        return Err(Error::bad("role", format!("`{role}` is not one of {}", ROLES.join(", "))));
    }
    if name.trim().is_empty() || name.len() > 100 {
        return Err(Error::bad("name", "give the token a name of 1 to 100 characters"));
    }
    caller.require(role)?;
    issue(db, (caller.tenant_id, &caller.tenant), caller.user_id, name, role, "api", None).await
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
