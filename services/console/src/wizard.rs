//! The Welcome wizard, shown on a user's first sign-in: (1) confirm endpoints, (2) create an API
//! token, (3) import the sample scan and watch it until its findings and verdict exist, (4) open
//! the Vulnerability Explorer. Every step can be revisited from the navigation.

use maud::{Markup, html};
use serde::Deserialize;
use stella_core::{authority, scans, seed};
use stella_runtime::axum::Form;
use stella_runtime::axum::extract::State;
use stella_runtime::axum::http::StatusCode;
use stella_runtime::axum::response::{IntoResponse, Redirect, Response};
use stella_runtime::sqlx;

use crate::page::{self, Frame, copyable};
use crate::session::Session;
use crate::{Console, probe};

const STEPS: &[(&str, &str)] = &[
    ("/welcome", "Endpoints"),
    ("/welcome/token", "API token"),
    ("/welcome/scan", "Sample scan"),
    ("/findings", "Explorer"),
];

/// "Finish the welcome tour" on every step: a viewer, who cannot import the sample, can finish too.
fn finish() -> Markup {
    html! {
        form class="finish" method="post" action="/welcome/done" {
            button class="secondary" type="submit" { "Finish the welcome tour" }
        }
    }
}

fn steps(current: usize) -> Markup {
    html! {
        ol class="steps" aria-label="Welcome steps" {
            @for (i, (href, name)) in STEPS.iter().enumerate() {
                @if i == current {
                    li aria-current="step" { (i + 1) ". " (name) }
                } @else {
                    li { a href=(href) { (i + 1) ". " (name) } }
                }
            }
        }
    }
}

/// Step 1: where everything is, each service's version and whether it is ready.
pub async fn endpoints(State(console): State<Console>, session: Session) -> Response {
    let probes = probe::all(&console.settings).await;
    let ready = probes.iter().filter(|p| p.ready.is_ok()).count();
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: "Welcome to StellaOps" };
    let body = html! {
        (steps(0))
        h2 { "1. Confirm endpoints" }
        p { "The API is at " code id="api-url" { (console.settings.api_url) } ". "
            "This console reaches the services at the addresses below." }
        p id="ready-summary" class=(if ready == probes.len() { "ok" } else { "pending" }) {
            (ready) " of " (probes.len()) " services ready" }
        table id="services" {
            caption { "Services, their versions and readiness" }
            thead { tr { th scope="col" { "Service" } th scope="col" { "Address" } th scope="col" { "Version" } th scope="col" { "Ready" } } }
            tbody {
                @for p in &probes {
                    tr data-service=(p.service) {
                        td { "stella-" (p.service) }
                        td { code { (p.url) } }
                        td class="version" { @match &p.version { Ok(v) => (v), Err(e) => span class="error" { (e) } } }
                        td class="ready" { @match &p.ready { Ok(()) => span class="ok" { "ready" }, Err(e) => span class="error" { (e) } } }
                    }
                }
            }
        }
        p { a class="button" href="/welcome/token" { "Next: create an API token" } }
        (finish())
    };
    page::render(&frame, body).into_response()
}

/// Step 2: the form.
pub async fn token_page(State(console): State<Console>, session: Session) -> Response {
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: "Welcome to StellaOps" };
    page::render(&frame, token_form(&session.caller, None)).into_response()
}

fn token_form(caller: &stella_core::authority::Caller, problem: Option<&str>) -> Markup {
    // Roles up to the caller's own; operator preselected when allowed.
    let roles: Vec<(&str, &str)> =
        [("viewer", "viewer: read"), ("operator", "operator: read, import, export"), ("admin", "admin: everything")]
            .into_iter()
            .filter(|(r, _)| authority::role_rank(r) <= authority::role_rank(&caller.role))
            .collect();
    let preselect =
        if authority::role_rank(&caller.role) >= authority::role_rank("operator") { "operator" } else { "viewer" };
    html! {
        (steps(1))
        h2 { "2. Create an API token" }
        p { "Scripts and the " code { "stella" } " CLI use an API token. It is shown once: copy it now." }
        @if let Some(p) = problem { p class="error" role="alert" { (p) } }
        @if authority::role_rank(&caller.role) < authority::role_rank("operator") {
            // The API's rule: viewers read with their session, they do not mint tokens.
            p { "Creating API tokens needs the operator role; you are a viewer. Ask an administrator for one." }
        } @else {
        form class="stack" method="post" action="/welcome/token" {
            label { "Token name" input name="name" value="my-first-token" required maxlength="100"; }
            label { "Role"
                select name="role" {
                    @for (role, text) in &roles { option value=(role) selected[*role == preselect] { (text) } }
                }
            }
            button type="submit" { "Create token" }
        }
        }
        p { a href="/welcome/scan" { "Skip to the next step" } }
        (finish())
    }
}

#[derive(Deserialize)]
pub struct NewToken {
    name: String,
    role: String,
}

/// Step 2: the token, shown once, with a ready curl line and CLI lines.
pub async fn create_token(State(console): State<Console>, session: Session, Form(t): Form<NewToken>) -> Response {
    let db = match console.core.db() {
        Ok(db) => db,
        Err(e) => return page::core_error(&console.settings, e),
    };
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: "Welcome to StellaOps" };
    // The API's own rules: an operator or admin, a role up to theirs, the default lifetime.
    let policy = &console.core.authority;
    let issued = match authority::create_token(db, policy, &session.caller, t.name.trim(), &t.role, None).await {
        Ok(i) => i,
        Err(e @ (stella_core::Error::BadInput { .. } | stella_core::Error::Forbidden(_))) => {
            let body = token_form(&session.caller, Some(&e.to_string()));
            return (e.status(), page::render(&frame, body)).into_response();
        }
        Err(e) => return page::core_error(&console.settings, e),
    };
    let s = &console.settings;
    let curl = format!("curl -H 'Authorization: Bearer {}' {}/api/v1/findings", issued.token, s.api_url);
    let export = format!("export STELLA_TOKEN={}", issued.token);
    let body = html! {
        (steps(1))
        h2 { "2. Your API token" }
        p class="ok" role="status" { "Token “" (issued.name) "” created with the " (issued.role) " role, valid until "
            (issued.expires_at.as_deref().unwrap_or("it is revoked")) ". It is shown only on this page." }
        (copyable("token", "Token", &issued.token))
        (copyable("curl", "Try it with curl", &curl))
        h3 { "With the stella CLI" }
        p { "No local " code { "stella" } " binary? The container image needs only Docker:" }
        (copyable("cli-env", "1. Put the token in the environment", &export))
        (copyable("cli-docker", "2. List findings (container image)", &s.cli(false, "findings")))
        (copyable("cli-local", "or with a local stella binary", &s.cli(true, "findings")))
        p { a class="button" href="/welcome/scan" { "Next step" } }
        (finish())
    };
    (StatusCode::CREATED, page::render(&frame, body)).into_response()
}

/// Step 3: in quickstart mode, the sample and the button. Elsewhere the sample is not offered:
/// it would be a made-up application in a real tenant (and its critical finding would notify
/// real channels), so the page says how to import one's own SBOM.
pub async fn scan_page(State(console): State<Console>, session: Session) -> Response {
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: "Welcome to StellaOps" };
    let (name, bytes) = seed::SAMPLE_SBOM;
    let s = &console.settings;
    let body = html! {
        (steps(2))
        @if s.quickstart {
            h2 { "3. Import the sample scan" }
            p { "The sample is a CycloneDX SBOM, " a href="/welcome/sample-checkout.cdx.json" download="sample-checkout.cdx.json" { code { (name) } }
                " (" (bytes.len()) " bytes), of an application that uses vulnerable versions of lodash and log4j. Importing it "
                "matches its components against the advisories, applies the VEX statements and asks the policy engine for a verdict." }
            @if authority::role_rank(&session.caller.role) >= authority::role_rank("operator") {
                form method="post" action="/welcome/scan" { button type="submit" id="import-sample" { "Import the sample scan" } }
            } @else {
                p { "Importing needs the operator role; you are a viewer." }
            }
            (copyable("cli-import", "The same with the CLI (download the sample first)", &s.cli(false, "import sample-checkout.cdx.json --wait")))
        } @else {
            h2 { "3. Import an SBOM" }
            p { "Import your application's SBOM (SPDX 2.3 or CycloneDX JSON) with the CLI or the API; its findings then appear in the explorer." }
            (copyable("cli-import", "With the CLI", &s.cli(false, "import my-app.cdx.json --wait")))
        }
        p { a class="button" href="/findings" { "Open the Vulnerability Explorer" } }
        (finish())
    };
    page::render(&frame, body).into_response()
}

/// The sample SBOM, to import it with the CLI.
pub async fn sample_file(_session: Session) -> Response {
    ([(stella_runtime::axum::http::header::CONTENT_TYPE, "application/json")], seed::SAMPLE_SBOM.1).into_response()
}

pub async fn import_sample(State(console): State<Console>, session: Session) -> Response {
    if !console.settings.quickstart {
        return page::error(
            &console.settings,
            StatusCode::NOT_FOUND,
            "the sample scan is offered in quickstart mode only",
        );
    }
    let (name, bytes) = seed::SAMPLE_SBOM;
    let result = async {
        let _room = console.core.imports.admit(bytes.len()).await?;
        scans::import(console.core.db()?, &session.caller, Some(name), bytes).await
    }
    .await;
    match result {
        Ok((_, scan)) => Redirect::to(&format!("/welcome/scan/{}", scan["id"])).into_response(),
        Err(e) => page::core_error(&console.settings, e),
    }
}

/// Step 3: progress until the findings and the verdict exist; the page reloads itself every
/// two seconds until then (a `Refresh` header: no script needed).
pub async fn scan_progress(State(console): State<Console>, session: Session, page::Id(id): page::Id) -> Response {
    let scan = match async { scans::scan(console.core.db()?, &session.caller, id).await }.await {
        Ok(s) => s,
        Err(e) => return page::core_error(&console.settings, e),
    };
    let total = scan["findings"]["total"].as_i64().unwrap_or(0);
    let verdict = scan["verdict"]["outcome"].as_str().map(str::to_string);
    // The verdict comes after matching: once it exists the scan is complete, whatever the number
    // of findings (none, when no advisory matches).
    let done = verdict.is_some();
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: "Welcome to StellaOps" };
    let body = html! {
        (steps(2))
        h2 { "3. Sample scan " (scan["name"].as_str().unwrap_or_default()) }
        ul id="scan-progress" {
            li class="ok" { "Imported: " (scan["components"]) " components (" (scan["format"].as_str().unwrap_or_default()) ")" }
            li class="ok" id="findings-count" { (total) " findings" }
            @match &verdict {
                Some(v) => li class="ok" id="verdict" { "Policy verdict: " strong { (v) } },
                None => li class="pending" role="status" { "Waiting for the policy verdict…" },
            }
        }
        @if done {
            p { a class="button" id="open-explorer" href={ "/findings?scan=" (id) } { "Open the Vulnerability Explorer" } }
        }
        (finish())
    };
    if done {
        page::render(&frame, body).into_response()
    } else {
        ([("refresh", "2")], page::render(&frame, body)).into_response()
    }
}

/// Marks the wizard done for this user: the next sign-in opens the explorer.
pub async fn done(State(console): State<Console>, session: Session) -> Response {
    let result = async {
        sqlx::query("UPDATE stella.users SET onboarded_at = now() WHERE id = $1 AND onboarded_at IS NULL")
            .bind(session.caller.user_id)
            .execute(console.core.db()?)
            .await
            .map_err(stella_core::Error::from)
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/findings").into_response(),
        Err(e) => page::core_error(&console.settings, e),
    }
}
