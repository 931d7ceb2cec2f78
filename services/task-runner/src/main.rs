//! `stella-task-runner`: Executes Task Packs.
//!
//! Serves the operational contract of `stella-runtime` on port 8083.

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("task-runner", 8083).main()
}
