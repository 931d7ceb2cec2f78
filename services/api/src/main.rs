//! `stella-api`: Web Services API and Authority.
//!
//! Serves the operational contract of `stella-runtime` on port 8081.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("api", 8081).main()
}
