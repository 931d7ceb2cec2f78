//! `stella-console`: the web UI on port 8080: login, the Welcome wizard, the Vulnerability
//! Explorer, the offline install docs and, in quickstart mode, the "Connected to Quickstart"
//! banner.
//!
//! Pages are rendered on the server (`maud`) from the same core functions the API routes call,
//! as the signed-in user: the session is an ordinary session token of the Authority, kept in an
//! HttpOnly cookie, so the console can do nothing the user's own token could not. A little
//! JavaScript (`static/console.js`) only adds copy buttons; every page works without it.

mod docs;
mod explorer;
mod page;
mod probe;
mod quickstart;
mod session;
mod settings;
mod wizard;

use stella_runtime::axum::Router;
use stella_runtime::axum::extract::FromRef;
use stella_runtime::axum::routing::{get, post};

/// What every page handler shares.
#[derive(Clone)]
pub struct Console {
    pub core: stella_core::Core,
    pub settings: settings::Settings,
}

impl FromRef<Console> for stella_core::Core {
    fn from_ref(c: &Console) -> stella_core::Core {
        c.core.clone()
    }
}

fn routes(ctx: &stella_runtime::Context) -> Router {
    let console = Console { core: stella_core::Core::new(ctx), settings: settings::Settings::new(ctx) };
    Router::new()
        .route("/", get(session::home))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/static/console.css", get(page::css))
        .route("/static/console.js", get(page::js))
        .route("/welcome", get(wizard::endpoints))
        .route("/welcome/token", get(wizard::token_page).post(wizard::create_token))
        .route("/welcome/scan", get(wizard::scan_page).post(wizard::import_sample))
        .route("/welcome/scan/{id}", get(wizard::scan_progress))
        .route("/welcome/sample-checkout.cdx.json", get(wizard::sample_file))
        .route("/welcome/done", post(wizard::done))
        .route("/findings", get(explorer::findings))
        .route("/findings/{id}", get(explorer::finding))
        .route("/advisories/{key}", get(explorer::advisory_linkset))
        .route("/vex/{key}", get(explorer::vex_linkset))
        .route("/documents/{kind}/{id}", get(explorer::original))
        .route("/docs", get(docs::index))
        .route("/docs/{page}", get(docs::page))
        .route("/quickstart/export", get(quickstart::export_page).post(quickstart::export_run))
        .route("/quickstart/runs/{id}", get(quickstart::run_page))
        .route("/quickstart/export-to-production.json", get(quickstart::pack_file))
        .layer(stella_runtime::axum::middleware::from_fn(page::security_headers))
        .with_state(console)
}

fn main() -> std::process::ExitCode {
    settings::ALL
        .iter()
        .chain(stella_core::authority::SETTINGS)
        .chain([&stella_core::budget::IMPORT_MEMORY_BUDGET])
        .fold(stella_runtime::Service::server("console", 8080), |s, setting| s.setting(*setting))
        .routes(routes)
        .main()
}
