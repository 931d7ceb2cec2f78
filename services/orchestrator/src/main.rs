//! `stella-orchestrator`: Orchestrator on port 8082.
//!
//! Enqueues the jobs of due schedules (feed polls, tenants' task packs and exports:
//! `stella_core::schedules`) and serves the job history (`stella_core::jobs`); the jobs are
//! leased by the workers of their kind in the other services.

fn main() -> std::process::ExitCode {
    stella_core::jobs::settings(stella_runtime::Service::server("orchestrator", 8082))
        .setting(stella_core::schedules::TICK)
        .routes(|ctx| {
            // The route builder runs once, inside the runtime, before the server starts.
            stella_core::schedules::spawn(ctx);
            stella_core::worker_routes::orchestrator(stella_core::Core::new(ctx))
        })
        .main()
}
