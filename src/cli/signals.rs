//! The one handler of SIGINT, SIGTERM and SIGHUP, installed by `main`
//! before any thread starts (threads inherit the blocked mask, so only the
//! waiting thread here ever receives them).
//!
//! Commands that only read (scan, verify, inspect) end at once, as if the
//! signal had its default action. Commands that must clean up (export puts
//! paused containers back and removes its `.partial`; import removes its
//! staging, or finishes its commit first) ask for `poll`: the signal then
//! sets `crate::interrupt`'s flag, which the library polls between steps.
//! A second signal ends the process at once, unless a commit is under way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::sys::signal::{SigSet, Signal};

use crate::interrupt;

static POLLED: AtomicBool = AtomicBool::new(false);
/// What to say at the first signal, and at a second one that quits.
static MESSAGES: Mutex<(&str, &str)> = Mutex::new(("", ""));

pub fn install() {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        while let Ok(signal) = set.wait() {
            let signal = signal as i32;
            let again = interrupt::request(signal);
            let status = i32::from(interrupt::exit_status(signal));
            if !POLLED.load(Ordering::SeqCst) {
                std::process::exit(status);
            }
            let (first, force) = *MESSAGES.lock().unwrap_or_else(|p| p.into_inner());
            let name = interrupt::signal_name(signal);
            if !again {
                eprintln!("{name}: {first} (again to quit now)");
            } else if interrupt::in_critical() {
                eprintln!("{name}: the commit is finishing first; volmig stops right after it");
            } else {
                eprintln!("error: {name} twice: {force}");
                std::process::exit(status);
            }
        }
    });
}

/// From now on a signal is polled (see the module doc): `first` says what
/// happens next, `force` what a second signal leaves behind.
pub fn poll(first: &'static str, force: &'static str) {
    *MESSAGES.lock().unwrap_or_else(|p| p.into_inner()) = (first, force);
    POLLED.store(true, Ordering::SeqCst);
}
