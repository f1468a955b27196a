//! Progress of `preserve` and `restore` for a person at a terminal: rows done of
//! the total, the rate, and the phase, on stderr. Only commands track progress,
//! and only when stderr is a terminal and the output is not `--json`; the
//! daemon and scripts never see a bar.
//!
//! The vault and database code reports through [`current`], which is `None`
//! outside a [`track`]ed command, so counting costs nothing there.

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

tokio::task_local! {
    static CURRENT: Progress;
}

/// A progress bar over rows.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar on stderr, when stderr is a terminal and `json` is off.
    pub fn for_terminal(json: bool) -> Option<Self> {
        if json || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} [{wide_bar}] {human_pos}/{human_len} rows, {rate}, {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0} rows/s", state.per_sec());
                },
            )
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(Self { bar })
    }

    /// More rows to do.
    pub fn add_total(&self, rows: u64) {
        self.bar.inc_length(rows);
    }

    /// Rows done.
    pub fn add(&self, rows: u64) {
        self.bar.inc(rows);
    }

    /// Rows counted as done that will be done again (a load that fell back
    /// to another format starts over).
    pub fn undo(&self, rows: u64) {
        self.bar
            .set_position(self.bar.position().saturating_sub(rows));
    }

    /// What is being done now (`preserving catalog_product`).
    pub fn phase(&self, what: String) {
        self.bar.set_message(what);
    }

    /// Removes the bar; the command prints its summary next.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Runs `work` with `progress` (if any) as the current progress.
pub async fn track<F: Future>(progress: Option<Progress>, work: F) -> F::Output {
    match progress {
        Some(progress) => {
            let output = CURRENT.scope(progress.clone(), work).await;
            progress.finish();
            output
        }
        None => work.await,
    }
}

/// The progress of the command this task runs for, if it shows one.
pub fn current() -> Option<Progress> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outside_a_tracked_command_there_is_no_progress() {
        assert!(current().is_none());
        // Not a terminal under the test harness: nothing to draw.
        assert!(Progress::for_terminal(false).is_none() || std::io::stderr().is_terminal());
        assert!(Progress::for_terminal(true).is_none());
        let bar = Progress {
            bar: ProgressBar::hidden(),
        };
        let seen = track(Some(bar), async {
            let progress = current().expect("inside track");
            progress.add_total(10);
            progress.add(4);
            progress.bar.position()
        })
        .await;
        assert_eq!(seen, 4);
        assert!(current().is_none());
    }

    #[test]
    fn rows_done_again_are_not_counted_twice() {
        let progress = Progress {
            bar: ProgressBar::hidden(),
        };
        progress.add_total(100);
        progress.add(60);
        progress.undo(60);
        progress.add(100);
        assert_eq!(progress.bar.position(), 100);
        progress.undo(1_000);
        assert_eq!(progress.bar.position(), 0);
    }
}
