//! `stella-conseiller`: advisory aggregator (Feedser) on port 8084, aggregation only.
//!
//! Polls the configured OSV sources, stores every document as received and serves linksets that
//! link to the originals (`stella_core::aggregation`). There is no merge path.

use stella_core::aggregation::Kind;
use stella_core::sources;

fn main() -> std::process::ExitCode {
    let mut service = stella_runtime::Service::server("conseiller", 8084)
        .aggregation_only()
        .checked_setting(sources::SOURCES, sources::check);
    for s in sources::SETTINGS {
        service = service.setting(*s);
    }
    service
        .routes(|ctx| {
            // The route builder runs once, inside the runtime, before the server starts.
            sources::spawn(ctx, Kind::Advisory);
            stella_core::routes::aggregation(stella_core::Core::new(ctx), Kind::Advisory)
        })
        .main()
}
