//! `stella-orchestrator`: Source and job scheduler.
//!
//! Serves the operational contract of `stella-runtime` on port 8082.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("orchestrator", 8082).main()
}
