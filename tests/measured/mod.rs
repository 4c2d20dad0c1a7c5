//! Runs the binary as a child and measures it: exit code, output, and the
//! child's own peak RSS (`wait4`'s rusage, so parallel tests do not mix
//! their children up), with a timeout that turns a hang into a failure.
#![allow(dead_code)]

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every hostile input must be handled in less memory than this.
pub const RSS_LIMIT_KIB: i64 = 64 * 1024;

#[derive(Debug)]
pub struct Measured {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub max_rss_kib: i64,
    pub elapsed: Duration,
}

impl Measured {
    /// Asserts the run ended with one of volmig's exit codes (never a
    /// panic's 101 or a signal) within the memory limit.
    pub fn assert_sane(&self, what: &str) -> &Self {
        assert!(
            matches!(self.code, Some(0..=2)),
            "{what}: exit {:?} (101 is a panic)\nstderr: {}",
            self.code,
            self.stderr
        );
        assert!(
            self.max_rss_kib < RSS_LIMIT_KIB,
            "{what}: peak RSS {} KiB is over {} KiB",
            self.max_rss_kib,
            RSS_LIMIT_KIB
        );
        self
    }
}

/// The binary under test.
pub fn volmig(data_root: &Path) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("volmig"));
    cmd.env_remove("VOLMIG_DATA_ROOT")
        .env_remove("DOCKER_HOST")
        // No daemon answers on this socket: the tests stay offline.
        .arg("-H")
        .arg("unix:///nonexistent/volmig-test.sock")
        .arg("--data-root")
        .arg(data_root);
    cmd
}

/// Runs `cmd` with no stdin, killing it after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Measured {
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&o).unwrap())
        .stderr(File::create(&e).unwrap());
    let start = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: rusage is plain data, filled by the kernel.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; `child` is never waited on
        // through std, so the pid is not reused meanwhile.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let _ = tx.send((r, status, usage.ru_maxrss));
    });
    let (r, status, rss) = match rx.recv_timeout(timeout) {
        Ok(done) => done,
        Err(_) => {
            // SAFETY: kill of our own, not yet reaped, child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv();
            panic!("{cmd:?} did not finish within {timeout:?} (a hang)");
        }
    };
    drop(child);
    assert_eq!(r, pid, "wait4 failed");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        stdout: fs::read_to_string(&o).unwrap_or_default(),
        stderr: fs::read_to_string(&e).unwrap_or_default(),
        max_rss_kib: rss,
        elapsed: start.elapsed(),
    }
}
