//! Sign-in and the session: the Authority's own password login and session token, kept in an
//! HttpOnly, SameSite=Strict cookie. Every page extracts a [`Session`], which authenticates the
//! token on each request exactly as the API does (revoked or expired: back to the login page).

use maud::html;
use serde::Deserialize;
use stella_core::authority::{self, Caller};
use stella_runtime::axum::Form;
use stella_runtime::axum::extract::{FromRequestParts, State};
use stella_runtime::axum::http::request::Parts;
use stella_runtime::axum::http::{HeaderMap, StatusCode, Uri, header};
use stella_runtime::axum::response::{IntoResponse, Redirect, Response};
use stella_runtime::sqlx;

use crate::Console;
use crate::page::{self, Frame};

const COOKIE: &str = "stella_session";

/// The signed-in user and their session token (never rendered into a page).
pub struct Session {
    pub caller: Caller,
    pub token: String,
}

impl FromRequestParts<Console> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Session, Response> {
        let token = cookie(&parts.headers).ok_or_else(to_login)?;
        let db = console.core.db().map_err(|e| page::core_error(&console.settings, e))?;
        let caller = authority::authenticate(db, &token).await.map_err(|e| page::core_error(&console.settings, e))?;
        // A cross-site form cannot carry a SameSite=Strict cookie; the Origin check is for old
        // browsers that ignore SameSite.
        if parts.method == stella_runtime::axum::http::Method::POST && !same_origin(&parts.headers, &parts.uri) {
            return Err(page::error(&console.settings, StatusCode::FORBIDDEN, "cross-site request refused"));
        }
        Ok(Session { caller, token })
    }
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

/// A POST whose `Origin` (when the browser sends one; every current browser does on a POST)
/// names this host: the `Host` header, or under HTTP/2 the request's authority.
fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

pub fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// `/`: the wizard on a user's first sign-in, the explorer afterwards.
pub async fn home(State(console): State<Console>, session: Result<Session, Response>) -> Response {
    // The rejection is the login page for a missing or expired session, and the outage page
    // when the database cannot say which.
    let session = match session {
        Ok(s) => s,
        Err(rejection) => return rejection,
    };
    match onboarded(&console, &session.caller).await {
        Ok(true) => Redirect::to("/findings").into_response(),
        Ok(false) => Redirect::to("/welcome").into_response(),
        Err(e) => page::core_error(&console.settings, e),
    }
}

/// Whether the user finished (or skipped) the Welcome wizard.
pub async fn onboarded(console: &Console, caller: &Caller) -> Result<bool, stella_core::Error> {
    let done: Option<bool> = sqlx::query_scalar("SELECT onboarded_at IS NOT NULL FROM stella.users WHERE id = $1")
        .bind(caller.user_id)
        .fetch_optional(console.core.db()?)
        .await?;
    Ok(done.unwrap_or(false))
}

pub async fn login_page(State(console): State<Console>) -> Response {
    login_form(&console, None, "default", "", StatusCode::OK)
}

/// The form; after a refusal it keeps the tenant and user name and says why.
fn login_form(console: &Console, problem: Option<&str>, tenant: &str, username: &str, status: StatusCode) -> Response {
    let frame = Frame { settings: &console.settings, user: None, title: "Sign in" };
    let body = html! {
        @if let Some(p) = problem { p class="error" role="alert" id="login-error" { (p) } }
        form class="stack" method="post" action="/login" {
            label { "Tenant" input name="tenant" value=(tenant) autocomplete="organization" required; }
            label { "User name" input name="username" value=(username) autocomplete="username" required autofocus; }
            label { "Password" input name="password" type="password" autocomplete="current-password" required; }
            button type="submit" { "Sign in" }
        }
        @if console.settings.quickstart {
            p { "Quickstart: the user is " code { "admin" } "; its password is in "
                code { ".secrets/admin-password" } " beside docker-compose.yml, and quickstart.sh printed it." }
        }
    };
    (status, page::render(&frame, body)).into_response()
}

#[derive(Deserialize)]
pub struct Login {
    tenant: String,
    username: String,
    password: String,
}

pub async fn login(
    State(console): State<Console>,
    authority::Source(source): authority::Source,
    headers: HeaderMap,
    uri: Uri,
    Form(l): Form<Login>,
) -> Response {
    if !same_origin(&headers, &uri) {
        return page::error(&console.settings, StatusCode::FORBIDDEN, "cross-site request refused");
    }
    let db = match console.core.db() {
        Ok(db) => db,
        Err(e) => return page::core_error(&console.settings, e),
    };
    let policy = &console.core.authority;
    match authority::login(db, policy, l.tenant.trim(), l.username.trim(), &l.password, source).await {
        Ok(issued) => {
            let secure = console.settings.cookie_secure.unwrap_or_else(|| forwarded_https(&headers));
            let cookie = format!(
                "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                issued.token,
                policy.session_ttl.as_secs(),
                if secure { "; Secure" } else { "" }
            );
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Err(stella_core::Error::Unauthorized(m)) => {
            login_form(&console, Some(&m), &l.tenant, &l.username, StatusCode::UNAUTHORIZED)
        }
        Err(e @ stella_core::Error::Throttled { .. }) => {
            login_form(&console, Some(&e.to_string()), &l.tenant, &l.username, StatusCode::TOO_MANY_REQUESTS)
        }
        Err(e) => page::core_error(&console.settings, e),
    }
}

/// `auto`: behind a TLS-terminating ingress the cookie is marked Secure.
fn forwarded_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https")
}

/// Signs out: the session token is revoked, not only forgotten by the browser. A cross-site
/// post is refused before the cookie is cleared, so another site cannot sign a user out.
pub async fn logout(
    State(console): State<Console>,
    headers: HeaderMap,
    uri: Uri,
    session: Result<Session, Response>,
) -> Response {
    if !same_origin(&headers, &uri) {
        return page::error(&console.settings, StatusCode::FORBIDDEN, "cross-site request refused");
    }
    if let Ok(s) = session
        && let Ok(db) = console.core.db()
    {
        let revoked = sqlx::query(
            "UPDATE stella.api_tokens SET revoked_at = now() WHERE token_sha256 = $1 AND kind = 'session' AND revoked_at IS NULL",
        )
        .bind(stella_core::sha256_hex(s.token.as_bytes()))
        .execute(db)
        .await;
        if let Err(e) = revoked {
            stella_runtime::tracing::warn!(error = %e, "could not revoke the session token");
        }
    }
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}
