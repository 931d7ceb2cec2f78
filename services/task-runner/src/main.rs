//! `stella-task-runner`: Task Runner on port 8083.
//!
//! Registers task packs and executes their runs in a background worker
//! (`stella_core::taskrunner`); in offline mode, steps may reach only allowed hosts.

fn main() -> std::process::ExitCode {
    stella_core::jobs::settings(stella_runtime::Service::server("task-runner", 8083))
        .setting(stella_core::packs::OFFLINE)
        .setting(stella_core::packs::EGRESS_ALLOW)
        .routes(|ctx| {
            // The route builder runs once, inside the runtime, before the server starts.
            stella_core::taskrunner::spawn(ctx);
            stella_core::routes::task_runner(stella_core::Core::new(ctx))
        })
        .main()
}
