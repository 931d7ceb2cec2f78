//! `stella-orchestrator`: Orchestrator on port 8082.
//!
//! The job history and status of the job queue (`stella_core::jobs`): jobs are enqueued by the
//! services that need them (task runs, exports) and leased by the workers of their kind.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("orchestrator", 8082)
        .routes(|ctx| stella_core::worker_routes::orchestrator(stella_core::Core::new(ctx)))
        .main()
}
