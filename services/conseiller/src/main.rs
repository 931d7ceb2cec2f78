//! `stella-conseiller`: advisory aggregator (Feedser) on port 8084, aggregation only.
//!
//! Polls the configured OSV sources, stores every document as received and serves linksets that
//! link to the originals (`stella_core::aggregation`). There is no merge path.

fn main() -> std::process::ExitCode {
    stella_core::aggregation::service("conseiller", 8084, stella_core::aggregation::Kind::Advisory).main()
}
