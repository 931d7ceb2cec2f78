//! `stella-notify`: Notifications on port 8089.
//!
//! Delivers the notification outbox (new critical findings, jobs that failed for good) to the
//! configured sinks in batching windows, with retries and dead letters (`stella_core::notify`).

use stella_core::notify;

fn main() -> std::process::ExitCode {
    stella_runtime::Service::server("notify", 8089)
        .checked_setting(notify::SINKS, |raw| notify::parse_sinks(raw).map(|_| ()))
        .checked_setting(notify::TEMPLATES, |dir| notify::templates(Some(dir)).map(|_| ()))
        .setting(notify::WINDOW)
        .setting(notify::ATTEMPTS)
        .routes(|ctx| {
            // The route builder runs once, inside the runtime, before the server starts.
            notify::spawn(ctx);
            stella_core::worker_routes::notify(stella_core::Core::new(ctx))
        })
        .main()
}
