//! The Vulnerability Explorer: the tenant's findings with filters and paging, each linking to
//! its advisory linkset, to the original source documents it rests on (aggregation only: the
//! console shows the originals, never a merged record), to the VEX statements applied, and to the
//! scan's policy verdict.

use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use stella_core::aggregation::{self, Kind, Page};
use stella_core::scans::{self, Filters};
use stella_runtime::axum::extract::{Path, Query, State};
use stella_runtime::axum::http::{StatusCode, header};
use stella_runtime::axum::response::{IntoResponse, Response};

use crate::Console;
use crate::page::{self, Frame};
use crate::session::Session;

const PAGE: i64 = 25;

#[derive(Deserialize, Default)]
pub struct FindingQuery {
    severity: Option<String>,
    status: Option<String>,
    package: Option<String>,
    advisory: Option<String>,
    /// Text, not a number: an empty form field sends `scan=`.
    scan: Option<String>,
    /// Text too: `offset=abc` gets the console's error page, not axum's plain-text 400.
    offset: Option<String>,
}

/// An empty form field is no filter.
fn some(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

pub async fn findings(State(console): State<Console>, session: Session, Query(q): Query<FindingQuery>) -> Response {
    let filters = Filters {
        severity: some(&q.severity),
        status: some(&q.status),
        package: some(&q.package),
        advisory: some(&q.advisory),
        scan: match some(&q.scan).map(|s| s.parse::<i64>()) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return page::error(&console.settings, StatusCode::UNPROCESSABLE_ENTITY, "scan: give a scan number");
            }
        },
        id: None,
    };
    // Large offsets are clamped below, once the total is known; this bound keeps the arithmetic safe.
    let offset = match some(&q.offset).map(|s| s.parse::<i64>()) {
        None => 0,
        Some(Ok(n)) => n.clamp(0, i64::from(i32::MAX)),
        Some(Err(_)) => {
            return page::error(&console.settings, StatusCode::UNPROCESSABLE_ENTITY, "offset: give a number");
        }
    };
    let page_ = Page { limit: PAGE, offset };
    let list = match async { scans::findings(console.core.db()?, &session.caller, &filters, page_).await }.await {
        Ok(l) => l,
        Err(e) => return page::core_error(&console.settings, e),
    };
    let total = list["total"].as_i64().unwrap_or(0);
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let link = |offset: i64| {
        let mut pairs = vec![("offset", offset.to_string())];
        for (k, v) in [
            ("severity", &filters.severity),
            ("status", &filters.status),
            ("package", &filters.package),
            ("advisory", &filters.advisory),
        ] {
            if let Some(v) = v {
                pairs.push((k, v.clone()));
            }
        }
        if let Some(s) = filters.scan {
            pairs.push(("scan", s.to_string()));
        }
        format!("/findings?{}", pairs.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&"))
    };
    // Past the end (a stale link, or fewer findings since): the last page of the same filters.
    if offset > 0 && offset >= total {
        let last = if total == 0 { 0 } else { (total - 1) / PAGE * PAGE };
        return stella_runtime::axum::response::Redirect::to(&link(last)).into_response();
    }
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: "Vulnerability Explorer" };
    let body = html! {
        form class="filters" method="get" action="/findings" role="search" aria-label="Filter findings" {
            label { "Severity" (select("severity", &filters.severity, &["critical", "high", "medium", "low", "unknown"])) }
            label { "Status" (select("status", &filters.status, stella_core::openvex::STATUSES)) }
            label { "Package" input name="package" value=(filters.package.clone().unwrap_or_default()) placeholder="log4j"; }
            label { "Advisory" input name="advisory" value=(filters.advisory.clone().unwrap_or_default()) placeholder="CVE-2021-44228"; }
            label { "Scan" input name="scan" type="number" min="1" value=(filters.scan.map(|s| s.to_string()).unwrap_or_default()); }
            button type="submit" { "Filter" }
            a href="/findings" { "Clear" }
        }
        p id="findings-total" role="status" { (total) " findings" @if total > 0 { ", " (offset + 1) "–" (offset + items.len() as i64) " shown" } }
        table id="findings" {
            caption { "Findings, worst first" }
            thead { tr {
                th scope="col" { "Finding" } th scope="col" { "Package" } th scope="col" { "Version" } th scope="col" { "Severity" }
                th scope="col" { "Status" } th scope="col" { "Advisory" } th scope="col" { "VEX" } th scope="col" { "Scan verdict" }
            } }
            tbody { @for f in &items { (row(f)) } }
        }
        nav class="pager" aria-label="Pages" {
            @if offset > 0 { a rel="prev" href=(link((offset - PAGE).max(0))) { "Previous" } }
            @if offset + PAGE < total { a rel="next" href=(link(offset + PAGE)) { "Next" } }
        }
    };
    page::render(&frame, body).into_response()
}

fn select(name: &str, current: &Option<String>, options: &[&str]) -> Markup {
    html! {
        select name=(name) {
            option value="" { "any" }
            @for o in options { option value=(o) selected[current.as_deref() == Some(*o)] { (o) } }
        }
    }
}

fn severity(s: &str) -> Markup {
    html! { span class={ "sev-" (s) } { (s) } }
}

fn row(f: &Value) -> Markup {
    let key = f["linkset"]["key"].as_str().unwrap_or_default();
    html! {
        tr data-finding=(f["id"]) {
            td { a href={ "/findings/" (f["id"]) } { "#" (f["id"]) } }
            td { (f["package"].as_str().unwrap_or_default()) }
            td { (f["version"].as_str().unwrap_or_default()) }
            td { (severity(f["severity"].as_str().unwrap_or_default())) }
            td { (f["status"].as_str().unwrap_or_default()) }
            td { a href={ "/advisories/" (encode(key)) } { (key) } }
            td { (f["vex"].as_array().map_or(0, Vec::len)) }
            td { (f["policyVerdict"].as_str().unwrap_or("pending")) }
        }
    }
}

/// One finding: what it is, the originals it rests on, the VEX statements applied, the verdict.
pub async fn finding(State(console): State<Console>, session: Session, page::Id(id): page::Id) -> Response {
    let filters = Filters { id: Some(id), ..Filters::default() };
    let list =
        async { scans::findings(console.core.db()?, &session.caller, &filters, Page { limit: 1, offset: 0 }).await }
            .await;
    let f = match list.map(|l| l["items"][0].clone()) {
        Ok(f) if !f.is_null() => f,
        Ok(_) => return page::error(&console.settings, StatusCode::NOT_FOUND, &format!("finding {id} not found")),
        Err(e) => return page::core_error(&console.settings, e),
    };
    let key = f["linkset"]["key"].as_str().unwrap_or_default();
    let title = format!("Finding #{id}");
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: &title };
    let body = html! {
        dl {
            dt { "Package" } dd { code { (f["purl"].as_str().unwrap_or_default()) } }
            dt { "Severity" } dd { (severity(f["severity"].as_str().unwrap_or_default())) }
            dt { "Status" } dd id="finding-status" { (f["status"].as_str().unwrap_or_default()) }
            dt { "Vulnerability" } dd { a id="linkset-link" href={ "/advisories/" (encode(key)) } { (key) }
                @for a in f["aliases"].as_array().into_iter().flatten() { " " code { (a.as_str().unwrap_or_default()) } } }
            dt { "Scan" } dd { a href={ "/findings?scan=" (f["scan"]) } { "scan " (f["scan"]) } ", policy verdict: "
                strong id="finding-verdict" { (f["policyVerdict"].as_str().unwrap_or("pending")) } }
        }
        h2 { "Original advisories" }
        p { "The documents this finding rests on, exactly as their sources published them." }
        ul id="originals" {
            @for a in f["advisories"].as_array().into_iter().flatten() {
                li { a class="original" href={ "/documents/advisories/" (a["document"]) } { "advisory document " (a["document"]) } }
            }
        }
        h2 { "VEX statements applied" }
        @let vex = f["vex"].as_array().cloned().unwrap_or_default();
        @if vex.is_empty() { p { "None." } }
        ul id="vex" {
            @for s in &vex {
                li { (s["status"].as_str().unwrap_or_default()) " — "
                    a href={ "/documents/vex/" (s["document"]) } { "VEX document " (s["document"]) } }
            }
        }
    };
    page::render(&frame, body).into_response()
}

pub async fn advisory_linkset(State(console): State<Console>, session: Session, Path(key): Path<String>) -> Response {
    linkset(console, session, Kind::Advisory, key).await
}

pub async fn vex_linkset(State(console): State<Console>, session: Session, Path(key): Path<String>) -> Response {
    linkset(console, session, Kind::Vex, key).await
}

/// A linkset: every original that names the vulnerability, side by side, never merged.
async fn linkset(console: Console, session: Session, kind: Kind, key: String) -> Response {
    let set = match async { aggregation::linkset(console.core.db()?, kind, &key).await }.await {
        Ok(s) => s,
        Err(e) => return page::core_error(&console.settings, e),
    };
    let title = format!("{} {key}", if kind == Kind::Advisory { "Advisory" } else { "VEX" });
    let frame = Frame { settings: &console.settings, user: Some(&session.caller), title: &title };
    let links = set["links"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p { "Aggregation only: each source's original is shown as published; where sources disagree, both are shown." }
        p { a href={ "/findings?advisory=" (encode(&key)) } { "Findings for " (key) } " · "
            @if kind == Kind::Advisory { a href={ "/vex/" (encode(&key)) } { "VEX statements" } }
            @else { a href={ "/advisories/" (encode(&key)) } { "Advisories" } } }
        table id="links" {
            caption { "Original documents" }
            thead { tr { th scope="col" { "Source" } th scope="col" { "Document" } th scope="col" { "Says" } th scope="col" { "SHA-256" } } }
            tbody {
                @for l in &links {
                    tr {
                        td { (l["source"].as_str().unwrap_or_default()) }
                        td { a class="original" href={ "/documents/" (kind.path()) "/" (l["id"]) } { (l["locator"].as_str().unwrap_or_default()) }
                            @if l["current"] == false { " (superseded)" } }
                        td { @if kind == Kind::Advisory {
                                (l["advisory"]["id"].as_str().unwrap_or_default()) ": " (severity(l["advisory"]["severity"].as_str().unwrap_or_default())) " "
                                (l["advisory"]["summary"].as_str().unwrap_or_default())
                            } @else {
                                (l["statement"]["product"].as_str().unwrap_or_default()) ": " (l["statement"]["status"].as_str().unwrap_or_default())
                            } }
                        td { code { (l["sha256"].as_str().unwrap_or_default().get(..16).unwrap_or_default()) "…" } }
                    }
                }
            }
        }
    };
    page::render(&frame, body).into_response()
}

/// An original document, byte for byte, as JSON text with its SHA-256 in a header, like the
/// aggregators' `/raw` routes.
pub async fn original(
    State(console): State<Console>,
    _session: Session,
    Path((kind, id)): Path<(String, String)>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return page::error(&console.settings, StatusCode::NOT_FOUND, &format!("no document `{id}`: give a number"));
    };
    let kind = match kind.as_str() {
        "advisories" => Kind::Advisory,
        "vex" => Kind::Vex,
        other => {
            return page::error(&console.settings, StatusCode::NOT_FOUND, &format!("no documents of kind `{other}`"));
        }
    };
    match async { aggregation::document(console.core.db()?, kind, id).await }.await {
        Ok((meta, body)) => (
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (
                    header::HeaderName::from_static("x-content-sha256"),
                    meta["sha256"].as_str().unwrap_or_default().to_string(),
                ),
            ],
            body,
        )
            .into_response(),
        Err(e) => page::core_error(&console.settings, e),
    }
}

/// RFC 3986's unreserved characters stay as they are (advisory ids read well in links).
const UNRESERVED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes a query or path value.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}
