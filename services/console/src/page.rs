//! The page frame every screen shares (header, the quickstart banner, navigation), the static
//! CSS and JavaScript, the security headers and how an error is shown.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use stella_runtime::axum::extract::{FromRequestParts, Path, Request};
use stella_runtime::axum::http::request::Parts;
use stella_runtime::axum::http::{HeaderValue, StatusCode, header};
use stella_runtime::axum::middleware::Next;
use stella_runtime::axum::response::{Html, IntoResponse, Response};

use crate::settings::Settings;

/// Who is signed in, for the header: `None` on the login page.
pub struct Frame<'a> {
    pub settings: &'a Settings,
    pub user: Option<&'a stella_core::authority::Caller>,
    pub title: &'a str,
}

/// A whole page around `body`.
pub fn render(frame: &Frame<'_>, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (frame.title) " · StellaOps Console" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/" { "StellaOps" }
                    @if let Some(user) = frame.user {
                        nav aria-label="Main" {
                            a href="/welcome" { "Welcome" }
                            a href="/findings" { "Vulnerability Explorer" }
                            a href="/docs" { "Install docs" }
                        }
                        form class="who" method="post" action="/logout" {
                            span { (user.username) " @ " (user.tenant) " (" (user.role) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if frame.settings.quickstart {
                    (banner())
                }
                main id="main" {
                    h1 { (frame.title) }
                    (body)
                }
                footer { "StellaOps " (frame.settings.version) }
            }
        }
    };
    Html(page.into_string())
}

/// The "Connected to Quickstart" banner: only in quickstart mode.
fn banner() -> Markup {
    html! {
        section class="banner" id="quickstart-banner" aria-label="Quickstart" {
            strong { "Connected to Quickstart" }
            " — demonstration data, local secrets, not for production. "
            a href="/docs" { "View install docs" }
            " "
            a class="button" href="/quickstart/export" { "Export pack to production" }
        }
    }
}

/// A text block with a copy button (the button needs JavaScript; the text is selectable anyway).
/// A `<code>` cannot take a `<label>`: the group is named by its caption instead.
pub fn copyable(id: &str, label: &str, text: &str) -> Markup {
    html! {
        div class="copy" role="group" aria-labelledby={ (id) "-label" } {
            p class="caption" id={ (id) "-label" } { (label) }
            pre { code id=(id) { (text) } }
            button type="button" class="copy-button" data-copy=(id) aria-label={ "Copy: " (label) } { "Copy" }
        }
    }
}

/// An error as a page with its status: the message is the core's, which names what is wrong.
pub fn error(settings: &Settings, status: StatusCode, message: &str) -> Response {
    let frame = Frame { settings, user: None, title: status.canonical_reason().unwrap_or("Error") };
    let body = html! {
        p class="error" role="alert" { (message) }
        p { a href="/" { "Back to the console" } }
    };
    (status, render(&frame, body)).into_response()
}

/// A record's number in the path (`/findings/{id}`): anything else is a 404 page, not axum's
/// plain-text 400.
pub struct Id(pub i64);

impl FromRequestParts<crate::Console> for Id {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &crate::Console) -> Result<Id, Response> {
        let not_found = |what: &str| error(&console.settings, StatusCode::NOT_FOUND, &format!("no page {what}"));
        let Path(raw) = Path::<String>::from_request_parts(parts, console).await.map_err(|_| not_found("here"))?;
        raw.parse().map(Id).map_err(|_| not_found(&format!("for `{raw}`: give a number")))
    }
}

/// A core error, shown as a page; a missing or expired session goes to the login page.
pub fn core_error(settings: &Settings, e: stella_core::Error) -> Response {
    let status = e.status();
    if status == StatusCode::UNAUTHORIZED {
        return crate::session::to_login();
    }
    // An outage gets its own page: what is down, and that it comes back by itself.
    if let stella_core::Error::DatabaseUnavailable(cause) = &e {
        stella_runtime::tracing::warn!(error = %cause, "console page: the database is unavailable");
        let frame = Frame { settings, user: None, title: "Database unavailable" };
        let body = html! {
            p class="error" role="alert" { (stella_core::error::DATABASE_UNAVAILABLE) }
            p { "Reload this page in a few seconds. Operators: see whether " code { "stella-postgres" }
                " is running and healthy (" code { "docker-compose ps" } ", or the pod's events)." }
        };
        let mut response = (status, render(&frame, body)).into_response();
        response.headers_mut().insert("retry-after", HeaderValue::from_static("5"));
        return response;
    }
    // The core logs database errors in full and shows a generic message for them.
    let message = match &e {
        stella_core::Error::Database(_) | stella_core::Error::Internal(_) => {
            stella_runtime::tracing::error!(error = %e, "console page failed");
            "internal error (see the logs)".to_string()
        }
        other => other.to_string(),
    };
    error(settings, status, &message)
}

const CSS: &str = include_str!("../static/console.css");
const JS: &str = include_str!("../static/console.js");

pub async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

pub async fn js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], JS)
}

/// Headers on every console answer: scripts and styles only from the console itself, no
/// framing, no referrer to other sites (URLs carry filters; same-origin keeps the `Origin`
/// header the cross-site check reads), and pages that hold a token are never cached.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut stella_runtime::axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    response
}

/// Marks `text` as already-escaped HTML (rendered Markdown of our own docs).
pub fn trusted(text: String) -> PreEscaped<String> {
    PreEscaped(text)
}
