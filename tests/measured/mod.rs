//! Runs the binary as a child and measures it: exit code, output, and the
//! child's own peak RSS (`wait4`'s rusage, so parallel tests do not mix
//! their children up), with a timeout that turns a hang into a failure.

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
    /// CPU time (user and system) of the child and what it waited for:
    /// what a bound on work checks, whatever else the machine runs (wall
    /// time on 2 shared cores is not).
    pub cpu: Duration,
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

/// The binary measured: `VOLMIG_BIN` (another build, e.g. the one before
/// a fix), else the release build, made here once if it is not up to date.
/// The bounds are the shipped build's: a debug build's own code pages add
/// some 10 MiB to every peak RSS (65.8 MiB against 55.4 for the largest
/// header), which no input causes.
pub fn volmig(data_root: &Path) -> Command {
    let bin = match std::env::var_os("VOLMIG_BIN") {
        Some(bin) => std::path::PathBuf::from(bin),
        None => release_build().to_path_buf(),
    };
    let mut cmd = Command::new(bin);
    cmd.env_remove("VOLMIG_DATA_ROOT")
        .env_remove("DOCKER_HOST")
        .env("VOLMIG_DOCKERD", "")
        // No daemon answers on this socket: the tests stay offline.
        .arg("-H")
        .arg("unix:///nonexistent/volmig-test.sock")
        .arg("--data-root")
        .arg(data_root);
    cmd
}

/// GNU time, when installed: it forks the child from its own small
/// process. A child spawned straight from the test inherits the test
/// process's peak RSS across exec (Linux keeps `maxrss` over execve), and
/// a test binary that has printed a backtrace is 150 MB; then `wait4`'s
/// figure is only an upper bound.
const GNU_TIME: &str = "/usr/bin/time";

/// Runs `cmd` with no stdin, killing it after `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> Measured {
    let out = tempfile::tempdir().unwrap();
    let (o, e, rss_file) = (
        out.path().join("out"),
        out.path().join("err"),
        out.path().join("rss"),
    );
    let mut cmd = if Path::new(GNU_TIME).exists() {
        let mut timed = Command::new(GNU_TIME);
        timed.arg("-f").arg("%M").arg("-o").arg(&rss_file);
        timed.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => timed.env(k, v),
                None => timed.env_remove(k),
            };
        }
        timed
    } else {
        cmd
    };
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
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
        let cpu = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        let _ = tx.send((
            r,
            status,
            usage.ru_maxrss,
            cpu(usage.ru_utime) + cpu(usage.ru_stime),
        ));
    });
    let (r, status, rss, cpu) = match rx.recv_timeout(timeout) {
        Ok(done) => done,
        Err(_) => {
            // SAFETY: kills the process group of our own, not yet
            // reaped, child (GNU time and volmig under it).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = rx.recv();
            let args: Vec<_> = cmd.get_args().collect();
            eprintln!("measured: {args:?}: killed after {timeout:?}");
            panic!("{cmd:?} did not finish within {timeout:?} (a hang)");
        }
    };
    drop(child);
    assert_eq!(r, pid, "wait4 failed");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let measured = Measured {
        code,
        stdout: fs::read_to_string(&o).unwrap_or_default(),
        stderr: fs::read_to_string(&e).unwrap_or_default(),
        max_rss_kib: fs::read_to_string(&rss_file)
            .ok()
            .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(rss),
        elapsed: start.elapsed(),
        cpu,
    };
    // One line per run, for `cargo test -- --nocapture` (the figures of
    // the README's limits and of a before/after comparison).
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .skip_while(|a| !a.starts_with("--data-root"))
        .skip(2)
        .collect();
    eprintln!(
        "measured: {}: exit {:?}, peak RSS {} KiB, {:.2?} ({:.2?} CPU)",
        args.join(" "),
        measured.code,
        measured.max_rss_kib,
        measured.elapsed,
        measured.cpu
    );
    measured
}

/// `cargo build --release --bin volmig`, once per test process (cargo
/// makes it a no-op when the build is up to date); its binary beside the
/// debug one that cargo built for the tests.
fn release_build() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let debug = assert_cmd::cargo::cargo_bin("volmig");
        let target = debug
            .parent()
            .and_then(Path::parent)
            .expect("the debug binary lies in <target>/debug");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--bin", "volmig"])
            .arg("--target-dir")
            .arg(target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build --release failed: {status}");
        target.join("release/volmig")
    })
}
