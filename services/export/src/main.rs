//! `stella-export`: Export Center on port 8088.
//!
//! Queues exports and writes them, as leased orchestrator jobs, to the object store
//! (`stella_core::exports`): findings as JSON and CSV, SBOMs as SPDX and CycloneDX, OpenVEX.

use stella_core::{exports, jobs, worker_routes};

fn main() -> std::process::ExitCode {
    jobs::settings(stella_runtime::Service::server("export", 8088))
        .checked_setting(exports::FORMATS, |raw| exports::parse_formats(raw).map(|_| ()))
        .setting(exports::MAX_PENDING)
        .routes(|ctx| {
            let c = &ctx.config;
            let formats = exports::parse_formats(c.text(exports::FORMATS.name).unwrap_or("json")).unwrap_or_default();
            let store = match exports::store(&exports::StoreConfig::from(c)) {
                Ok(store) => store,
                Err(e) => {
                    // Unset or unusable: the service runs (its contract, readiness) and every
                    // export request is answered 503 with what to set.
                    stella_runtime::tracing::error!(error = %e, "no object store: exports are refused");
                    return worker_routes::unavailable(e);
                }
            };
            // The route builder runs once, inside the runtime, before the server starts.
            exports::spawn(ctx, store.clone(), formats.clone());
            let max_pending = exports::max_pending(c);
            worker_routes::export(worker_routes::ExportState {
                core: stella_core::Core::new(ctx),
                store,
                formats,
                max_pending,
            })
        })
        .main()
}
