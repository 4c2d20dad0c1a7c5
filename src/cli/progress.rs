//! Progress on stderr with indicatif: bytes, rate and ETA when the total is
//! known, per volume. Hidden with `-q` or when stderr is not a terminal;
//! never on stdout.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{NoProgress, Progress};

/// Wraps a progress reporter with the interrupt flag.
pub struct Interruptible(pub Box<dyn Progress>);

impl Progress for Interruptible {
    fn begin(&self, label: &str, total: Option<u64>) {
        self.0.begin(label, total)
    }
    fn advance(&self, bytes: u64) {
        self.0.advance(bytes)
    }
    fn end(&self) {
        self.0.end()
    }
    fn cancelled(&self) -> bool {
        crate::interrupt::requested().is_some()
    }
}

pub struct TermProgress {
    bar: ProgressBar,
}

impl TermProgress {
    /// A bar on stderr, or nothing when it should stay quiet.
    pub fn boxed(quiet: bool, total: Option<u64>) -> Box<dyn Progress> {
        if quiet || !std::io::stderr().is_terminal() {
            return Box::new(NoProgress);
        }
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if total.is_some() {
            "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
        } else {
            "{spinner} {msg:24!} {bytes} {binary_bytes_per_sec} {elapsed}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Box::new(TermProgress { bar })
    }
}

impl Progress for TermProgress {
    fn begin(&self, label: &str, total: Option<u64>) {
        if let Some(t) = total {
            self.bar.set_length(t);
        }
        self.bar.set_message(label.to_string());
    }
    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn end(&self) {}
}

impl Drop for TermProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
