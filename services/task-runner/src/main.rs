//! `stella-task-runner`: Task Runner on port 8083.
//!
//! Registers task packs and executes their runs as leased orchestrator jobs
//! (`stella_core::taskrunner`), keeps their artifacts in the object store for the retention
//! period; steps reach no internal address unless allowed, and in offline mode only allowed hosts
//! (`stella_core::egress`).

use stella_core::worker_routes;

fn main() -> std::process::ExitCode {
    stella_core::jobs::settings(stella_runtime::Service::server("task-runner", 8083))
        .setting(stella_core::egress::OFFLINE)
        .setting(stella_core::egress::EGRESS_ALLOW)
        .setting(stella_core::egress::TASK_EGRESS_ALLOW)
        .setting(stella_core::egress::TASK_EGRESS_DENY)
        .setting(stella_core::taskrunner::ARTIFACT_RETENTION)
        .setting(stella_core::exports::MAX_PENDING)
        .routes(|ctx| {
            // The route builder runs once, inside the runtime, before the server starts.
            let store = stella_core::taskrunner::spawn(ctx);
            let core = stella_core::Core::new(ctx);
            let routes = stella_core::routes::task_runner(core.clone());
            match store {
                Some(store) => routes.merge(worker_routes::artifacts(worker_routes::ArtifactState { core, store })),
                None => routes,
            }
        })
        .main()
}
