//! Progress on stderr with indicatif: the current volume, bytes, rate,
//! and ETA when the total is known. Hidden with `-q` or when stderr is not
//! a terminal; never on stdout, which carries results (and bundles, with
//! `-o -`). The bar is cleared before the command's own last words.

use std::io::{IsTerminal, Read};

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
    /// The bar counts the bytes read from the input (see `reading`), so
    /// `advance` from the library is not counted again.
    counts_input: bool,
}

impl TermProgress {
    /// A bar on stderr, or nothing when it should stay quiet.
    pub fn boxed(quiet: bool, total: Option<u64>) -> Box<dyn Progress> {
        match bar(quiet, total) {
            Some(bar) => Box::new(TermProgress {
                bar,
                counts_input: false,
            }),
            None => Box::new(NoProgress),
        }
    }

    /// A bar for reading a bundle of `size` bytes from `input` (import,
    /// inspect). It counts the bytes read from `input`, not the content
    /// bytes the reader reports: those of a compressed bundle exceed its
    /// size, and the reader reports a file only once it is whole, which
    /// would hold the bar still through a large file.
    pub fn reading(
        quiet: bool,
        input: Box<dyn Read>,
        size: Option<u64>,
    ) -> (Box<dyn Read>, Box<dyn Progress>) {
        match bar(quiet, size) {
            Some(bar) => (
                Box::new(Counted {
                    inner: input,
                    bar: bar.clone(),
                }),
                Box::new(TermProgress {
                    bar,
                    counts_input: true,
                }),
            ),
            None => (input, Box::new(NoProgress)),
        }
    }
}

/// The bar, unless `-q` or stderr is not a terminal (piped, redirected).
fn bar(quiet: bool, total: Option<u64>) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{msg:24!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
    } else {
        "{spinner} {msg:24!} {bytes} {binary_bytes_per_sec} {elapsed}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

/// Counts the bytes read through it on the bar.
struct Counted {
    inner: Box<dyn Read>,
    bar: ProgressBar,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

impl Progress for TermProgress {
    fn begin(&self, label: &str, total: Option<u64>) {
        // The label first: setting the length draws.
        self.bar.set_message(label.to_string());
        if let Some(t) = total {
            self.bar.set_length(t);
        }
    }
    fn advance(&self, bytes: u64) {
        if !self.counts_input {
            self.bar.inc(bytes);
        }
    }
    fn end(&self) {}
}

impl Drop for TermProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
