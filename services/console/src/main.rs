//! `stella-console`: Web UI: onboarding wizard, Vulnerability Explorer.
//!
//! Serves the operational contract of `stella-runtime` on port 8080.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("console", 8080).main()
}
