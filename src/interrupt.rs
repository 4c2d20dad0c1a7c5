//! Interrupts (SIGINT, SIGTERM, SIGHUP) as the library sees them: a flag
//! that long work polls between steps, and critical sections during which
//! the process must not be ended by a repeated signal.
//!
//! The CLI installs the one signal handler (a thread that waits for the
//! signals, see `cli::signals`) and calls `request`; the library never
//! touches signal dispositions. Import polls `requested` while it stages
//! (and then rolls back and removes its staging), and holds a `Critical`
//! while it commits: a signal then lets the commit finish first.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

/// The first signal that arrived (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);
/// How many critical sections are open.
static CRITICAL: AtomicUsize = AtomicUsize::new(0);

/// Records that `signal` asked the process to stop. Returns whether one
/// had already arrived (the user insists).
pub fn request(signal: i32) -> bool {
    REQUESTED
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
}

/// The signal that asked to stop, if one did.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Whether a critical section is open: a forced exit must wait.
pub fn in_critical() -> bool {
    CRITICAL.load(Ordering::SeqCst) > 0
}

/// While alive, the process is inside work that must not be cut short by
/// a signal (a commit). Only SIGKILL or a power cut can end it then, and
/// those are what the import journal is for.
pub struct Critical(());

impl Critical {
    pub fn enter() -> Critical {
        CRITICAL.fetch_add(1, Ordering::SeqCst);
        Critical(())
    }
}

impl Drop for Critical {
    fn drop(&mut self) {
        CRITICAL.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The conventional exit status of a process ended by `signal`.
pub fn exit_status(signal: i32) -> u8 {
    (128 + signal.clamp(1, 127)) as u8
}

/// `SIGINT`, `SIGTERM`, ... for messages.
pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}
