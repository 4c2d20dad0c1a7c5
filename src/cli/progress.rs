//! Progress on stderr with indicatif: bytes, rate and ETA when the total is
//! known, per volume. Hidden with `-q` or when stderr is not a terminal;
//! never on stdout.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use std::sync::atomic::{AtomicBool, Ordering};

use crate::progress::{NoProgress, Progress};

/// Set when SIGINT, SIGTERM or SIGHUP arrived while signals are deferred.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From here on, SIGINT/SIGTERM/SIGHUP do not kill volmig: they set a flag
/// that long work polls (`Progress::cancelled`), so it stops between
/// entries and puts things back (containers paused or stopped for an
/// export) before exiting. Blocks the signals in this thread (threads
/// spawned later inherit the mask) and waits for them on one of its own.
pub fn defer_interrupts() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        while set.wait().is_ok() {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // A second interrupt: the user insists (a stalled pipe can
                // keep the export from reaching its next entry).
                eprintln!("error: interrupted twice: containers paused or stopped for the export are left so; check `docker ps -a`");
                std::process::exit(130);
            }
            eprintln!("interrupting: stopping at the next entry and putting the containers back (again to quit now)");
        }
    });
}

/// Whether an interrupt arrived (see `defer_interrupts`).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

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
        interrupted()
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
