//! `stella-api`: Web Services API and Authority on port 8081.
//!
//! Login, API tokens, SBOM import as scans and the Vulnerability Explorer (`stella_core::routes::api`),
//! beside the operational contract of `stella-runtime`.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("api", 8081)
        .routes(|ctx| stella_core::routes::api(stella_core::Core::new(ctx)))
        .main()
}
