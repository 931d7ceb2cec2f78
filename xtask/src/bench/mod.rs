//! `cargo xtask bench`: figures measured in one run, each beside a baseline measured in the same
//! run on the same machine, so ratios stay meaningful when the machine is busy or different.

pub mod bundle;
pub mod images;
pub mod services;
pub mod stack;

pub struct Options {
    pub json: bool,
    pub runs: usize,
}

/// The median of `runs` timings of `f`, in seconds.
pub fn median_secs(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let start = std::time::Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
