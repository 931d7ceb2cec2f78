//! "Export pack to production" (quickstart banner): runs the seeded `export-to-production`
//! task pack here, which exports the tenant's findings, SBOMs and VEX through stella-export,
//! and shows how to register and run the same pack against a production tenant.

use maud::html;
use stella_core::{seed, taskrunner};
use stella_runtime::axum::extract::State;
use stella_runtime::axum::http::{StatusCode, header};
use stella_runtime::axum::response::{IntoResponse, Redirect, Response};

use crate::Console;
use crate::page::{self, Frame, copyable};
use crate::session::Session;

const PACK: &str = "export-to-production";

fn pack_bytes() -> &'static [u8] {
    seed::PACKS.iter().find(|(name, _)| *name == PACK).map(|(_, b)| *b).unwrap_or_default()
}

/// These pages exist in quickstart mode only: elsewhere they would run the seeded pack in a
/// real tenant (or clash with a pack of the same name there).
fn off(console: &Console) -> Option<Response> {
    (!console.settings.quickstart).then(|| {
        page::error(&console.settings, StatusCode::NOT_FOUND, "the export pack is offered in quickstart mode only")
    })
}

pub async fn export_page(State(console): State<Console>, session: Session) -> Response {
    if let Some(r) = off(&console) {
        return r;
    }
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: "Export pack to production" };
    let s = &console.settings;
    let body = html! {
        p { "The task pack " code { (PACK) } " exports this tenant's findings, SBOMs and VEX in every enabled format "
            "(JSON, CSV, SPDX, CycloneDX, OpenVEX) through stella-export. Run it here to see what it writes, then "
            "register the same pack with your production tenant." }
        form method="post" action="/quickstart/export" { button type="submit" id="run-export" { "Run it on the quickstart" } }
        h2 { "Against a production tenant" }
        p { a href="/quickstart/export-to-production.json" download="export-to-production.json" { "Download the pack" }
            ", then with a production API token in " code { "STELLA_TOKEN" } ":" }
        p { "The chart's ingress serves the API only: reach the task runner through your own route to it, or "
            code { "kubectl port-forward svc/<release>-stella-task-runner 8083" } "." }
        (copyable("prod-push", "Register the pack", &format!("stella --task-runner-url https://task-runner.stella.example.com pack push {PACK}.json")))
        (copyable("prod-run", "Run it", &format!("stella --task-runner-url https://task-runner.stella.example.com pack run {PACK} --wait")))
        p { "Without a local binary: " code { (s.cli(false, &format!("pack run {PACK} --wait"))) } }
    };
    page::render(&frame, body).into_response()
}

pub async fn export_run(State(console): State<Console>, session: Session) -> Response {
    if let Some(r) = off(&console) {
        return r;
    }
    let started = async {
        let db = console.core.db()?;
        taskrunner::register(db, &session.caller, pack_bytes()).await?;
        taskrunner::start(db, &session.caller, PACK, None, console.core.attempts()).await
    }
    .await;
    match started {
        Ok(run) => Redirect::to(&format!("/quickstart/runs/{}", run["id"])).into_response(),
        Err(e) => page::core_error(&console.settings, e),
    }
}

/// The run, reloaded every two seconds until it is finished.
pub async fn run_page(State(console): State<Console>, session: Session, page::Id(id): page::Id) -> Response {
    if let Some(r) = off(&console) {
        return r;
    }
    let run = match async { taskrunner::run(console.core.db()?, &session.caller, id).await }.await {
        Ok(r) => r,
        Err(e) => return page::core_error(&console.settings, e),
    };
    let status = run["status"].as_str().unwrap_or_default().to_string();
    let finished = matches!(status.as_str(), "succeeded" | "failed");
    let title = format!("Run {id} of {}", run["pack"].as_str().unwrap_or_default());
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: &title };
    let body = html! {
        p { "Status: " strong id="run-status" class=(if status == "succeeded" { "ok" } else if finished { "error" } else { "pending" }) { (status) }
            @if let Some(r) = run["reason"].as_str() { " — " (r) } }
        ul id="run-steps" {
            @for s in run["steps"].as_array().into_iter().flatten() {
                li { code { (s["id"].as_str().unwrap_or_default()) } ": " (s["status"].as_str().unwrap_or_default())
                    @if let Some(d) = s["detail"].as_str() { " — " (d) } }
            }
        }
        p { a href="/quickstart/export" { "Back" } }
    };
    if finished {
        page::render(&frame, body).into_response()
    } else {
        ([("refresh", "2")], page::render(&frame, body)).into_response()
    }
}

pub async fn pack_file(State(console): State<Console>, _session: Session) -> Response {
    if let Some(r) = off(&console) {
        return r;
    }
    ([(header::CONTENT_TYPE, "application/json")], pack_bytes()).into_response()
}
