//! The StellaOps distribution pipeline as a library: `cargo xtask` is a thin CLI over it, and
//! the end-to-end tests call it directly.

pub mod assemble;
pub mod bench;
pub mod bundle;
pub mod catalog;
pub mod chart;
pub mod compile;
pub mod debian;
pub mod deploy;
pub mod fresh;
pub mod images;
pub mod layer;
pub mod layers;
pub mod load;
pub mod oci;
pub mod plan;
pub mod progress;
pub mod provenance;
pub use stella_distribution::registry;
pub mod reproduce;
pub mod sbom;
pub mod schema;
pub mod setup;
pub mod shell;
pub mod sign;
pub mod sigstore;
pub mod test;
pub mod tree;
pub mod verify;
pub mod workspace;
