//! The StellaOps distribution pipeline as a library: `cargo xtask` is a thin CLI over it, and
//! the end-to-end tests call it directly.

pub mod bench;
pub mod setup;
pub mod shell;
pub mod test;
pub mod workspace;
