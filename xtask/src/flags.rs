//! Every flag of every `cargo xtask` command; the `///` lines are the `--help` text.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test and ship the StellaOps distribution", version)]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Install what this machine lacks: the pinned toolchain and targets, cross linkers, and with
    /// --test the tools the test suite uses (PostgreSQL, skopeo, umoci, ...). Idempotent.
    Setup(Setup),
    /// Run every check: formatting, clippy, the service binaries, unit and end-to-end tests.
    Test(Test),
    /// Measure and print figures with ratios against a baseline measured in the same run.
    Bench(Bench),
}

#[derive(Args)]
pub struct Setup {
    /// Also install the tools the test suite runs (PostgreSQL server, skopeo, umoci, ...).
    #[arg(long)]
    pub test: bool,
    /// Print what would be installed without installing it.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args)]
pub struct Test {
    /// Skip `cargo xtask setup --test` (for machines set up by hand).
    #[arg(long)]
    pub no_setup: bool,
    /// Arguments passed to `cargo test` after `--`, e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

#[derive(Args)]
pub struct Bench {
    /// What to measure.
    pub suite: Suite,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Suite {
    /// Start-up to ready and idle memory of every service, against python3's http.server.
    Services,
}
