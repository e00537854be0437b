//! A byte-count progress bar for backup and restore, drawn on stderr only
//! when stderr is a terminal, so logs, pipes and scheduled runs stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar, or nothing when there is no terminal to draw on. Clones
/// draw the same bar (e.g. from a blocking thread).
#[derive(Clone)]
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar for `total` bytes, labelled `what`, drawn on stderr if it is a
    /// terminal.
    pub fn bytes(what: &str, total: u64) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        Self(bar)
    }

    /// A bar that never draws (library calls, scheduled runs, tests).
    pub fn hidden() -> Self {
        Self(ProgressBar::hidden())
    }

    /// A spinner for a step whose size is unknown (`pg_dump`, `pg_restore`).
    pub fn step(&self, what: &str) {
        self.0.set_message(what.to_owned());
        self.0.tick();
    }

    /// Sets the total, once it is known.
    pub fn set_total(&self, total: u64) {
        self.0.set_length(total);
    }

    /// Moves the bar by `n` bytes.
    pub fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    /// Removes the bar from the terminal.
    pub fn done(&self) {
        self.0.finish_and_clear();
    }
}
