//! `stella-api`: Web Services API and Authority on port 8081.
//!
//! Login, API tokens, SBOM import as scans and the Vulnerability Explorer (`stella_core::routes::api`),
//! beside the operational contract of `stella-runtime`.

fn main() -> std::process::ExitCode {
    stella_core::authority::SETTINGS
        .iter()
        .chain([&stella_core::budget::IMPORT_MEMORY_BUDGET])
        .fold(stella_runtime::Service::server("api", 8081), |s, setting| s.setting(*setting))
        .routes(|ctx| {
            // Expired sessions and old login failures are deleted by the API, hourly.
            stella_core::authority::spawn_purge(ctx);
            stella_core::routes::api(stella_core::Core::new(ctx))
        })
        .main()
}
