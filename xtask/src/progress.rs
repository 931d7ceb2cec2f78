//! Progress: a bar on a terminal, one plain line per step elsewhere (CI logs stay readable).

use std::io::IsTerminal;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    label: &'static str,
    quiet: bool,
}

impl Progress {
    /// `quiet` prints nothing (for `--json` runs whose stderr is still read by people).
    pub fn new(label: &'static str, total: usize, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {wide_msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label);
            bar
        });
        Progress { bar, label, quiet }
    }

    pub fn step(&self, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(message.to_string());
                bar.inc(1);
            }
            None if !self.quiet => eprintln!("{}: {message}", self.label),
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
