//! The harness of the end-to-end tests: a private dockerd 20.10 per test
//! (`PrivateDaemon`), started and stopped by the test itself, one such test
//! at a time (`serial`), and the volmig binary under test.
//!
//! Recipe (the one of `scripts/make-fixtures`): `mount --make-rshared /`
//! once, then `dockerd --data-root R --exec-root E --pidfile P -H unix://S
//! --bridge=none --iptables=false --ip-masq=false --storage-driver=vfs`,
//! talked to with `/usr/bin/docker` (the 20.10 client: `/usr/local/bin/docker`
//! is another one), images from `docker import` of a busybox tar (no
//! registry). A daemon is stopped by the pid the harness started, never by
//! name; everything mounted under its directories is unmounted afterwards.
//!
//! A private sshd on a loopback port (`sshd::LocalSshd`) carries
//! `volmig migrate --via 'ssh HOST'` between two such daemons.

pub mod source;
pub mod sshd;
pub mod tree;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The docker.io 20.10 client (never the one earlier on PATH).
pub const DOCKER: &str = "/usr/bin/docker";
/// Every directory of the e2e tests lives below this (short: the daemon's
/// unix socket path is limited to 108 bytes).
pub const BASE: &str = "/var/tmp/volmig-e2e";
/// How long a daemon gets to answer `docker version`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Set to 1 (at build time: build.rs) to skip every e2e test: each is
/// marked `#[cfg_attr(volmig_skip_e2e, ignore = ...)]` and counted as
/// skipped.
pub const SKIP_ENV: &str = "VOLMIG_SKIP_E2E";
/// Another dockerd binary to test against (default: `dockerd` on PATH).
pub const DOCKERD_ENV: &str = "VOLMIG_E2E_DOCKERD";

/// One test with private daemons at a time: every test of tests/ runs in
/// one process (tests/tests.rs), and two such tests side by side would
/// share the e2e source (`source::source`), the 2 cores their daemons'
/// starts and timeouts count on, and, for `e2e_userns`, the dockremap
/// user that a remapped daemon adds to /etc/subuid. The other tests run
/// beside them: they build their own worlds in temporary directories.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a test that starts a private dockerd calls first: waits for the
/// tests with daemons before it (`ONE_AT_A_TIME`), then fails at once,
/// loudly, when a daemon cannot be had here. Keep the guard for the whole
/// test (declared before its daemons, it is dropped after them).
pub fn serial() -> MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_daemon_prerequisites();
    guard
}

/// Fails the test at once, loudly, when a private daemon cannot be had here.
fn require_daemon_prerequisites() {
    let why = |msg: String| -> ! {
        panic!(
            "e2e: a private dockerd cannot be had: {msg}\n\
             (scripts/test installs docker.io and busybox-static; set {SKIP_ENV}=1 to skip these tests)"
        )
    };
    if unsafe { libc::geteuid() } != 0 {
        why("not running as root (dockerd needs root)".into());
    }
    if std::env::var_os(DOCKERD_ENV).is_none() && which("dockerd").is_none() {
        why("`dockerd` is not on PATH (Debian package docker.io)".into());
    }
    if !Path::new(DOCKER).is_file() {
        why(format!("{DOCKER} is missing (Debian package docker.io)"));
    }
    if !Path::new("/bin/busybox").is_file() {
        why("/bin/busybox is missing (Debian package busybox-static)".into());
    }
}

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// `mount --make-rshared /` once per process, as on a systemd host (dockerd's
/// rslave binds need it). It cannot be undone safely and is left in place.
pub fn make_root_shared() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("mount")
            .args(["--make-rshared", "/"])
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "mount --make-rshared / failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        remove_stale_dirs_once();
    });
}

/// `remove_stale_dirs` once per process (before the first daemon or sshd
/// of this run makes its directory).
fn remove_stale_dirs_once() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(remove_stale_dirs);
}

/// Directories of earlier runs whose test process is gone, whose daemon (a
/// dockerd or an sshd, by the pidfile `pid` in the directory) is gone and
/// under which nothing is mounted: removed. Anything else is left alone
/// (it may belong to a run in progress).
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(BASE) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 || alive(pid) {
            continue;
        }
        let dir = entry.path();
        let daemon_alive = fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .is_some_and(alive);
        if daemon_alive || !mounts_under(&dir).is_empty() {
            eprintln!(
                "e2e: leaving {} alone (a daemon or mounts remain)",
                dir.display()
            );
            continue;
        }
        let _ = fs::remove_dir_all(&dir);
    }
}

fn alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Mount points at or below `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(m))))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort();
    out.dedup();
    out.reverse();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: u8| (b'0'..=b'7').contains(&c);
        if b[i] == b'\\' && i + 4 <= b.len() && b[i + 1..i + 4].iter().all(|&c| octal(c)) {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, &c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Unmounts everything at or below `dir`; true when nothing is left.
pub fn umount_under(dir: &Path) -> bool {
    for _ in 0..10 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return true;
        }
        for m in mounts {
            let c = std::ffi::CString::new(m.as_os_str().as_bytes()).unwrap();
            unsafe {
                if libc::umount2(c.as_ptr(), 0) != 0 {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
    mounts_under(dir).is_empty()
}

/// Removes a directory tree that must hold no mount point.
pub fn remove_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    assert!(
        umount_under(dir),
        "cannot unmount everything under {}: {:?}",
        dir.display(),
        mounts_under(dir)
    );
    fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("cannot remove {}: {e}", dir.display()));
}

/// Why a daemon did not come up.
#[derive(Debug)]
pub struct StartFailure {
    /// dockerd's exit code when it exited, None when it hung.
    pub exit_code: Option<i32>,
    /// What this start wrote into the daemon log.
    pub log: String,
}

/// A dockerd started by this test process, on a data-root of its own
/// (`<dir>/root`) or on one it was given. Dropping it stops the daemon,
/// unmounts everything it left and removes its directory (but never a
/// data-root it was given).
pub struct PrivateDaemon {
    pub name: String,
    /// `/var/tmp/volmig-e2e/<name>-<pid>`: exec-root, socket, pidfile, log.
    pub dir: PathBuf,
    /// The data-root.
    pub root: PathBuf,
    child: Option<Child>,
    /// Byte offset in the log where the current (last) start began.
    log_start: u64,
}

impl PrivateDaemon {
    /// Starts a daemon on a new, empty data-root `<dir>/root`; panics with
    /// the log tail when it does not answer. The daemon gets SIGTERM when
    /// the thread that started it ends (PR_SET_PDEATHSIG): start it on the
    /// thread that uses it, not on a helper thread.
    pub fn start(name: &str) -> PrivateDaemon {
        let mut d = PrivateDaemon::new(name, None);
        d.start_again();
        d
    }

    /// Starts a daemon on an existing data-root (left in place on drop).
    pub fn start_on(name: &str, root: &Path) -> PrivateDaemon {
        let mut d = PrivateDaemon::new(name, Some(root));
        d.start_again();
        d
    }

    /// Prepares the directories without starting anything.
    pub fn new(name: &str, root: Option<&Path>) -> PrivateDaemon {
        make_root_shared();
        let dir = Path::new(BASE).join(format!("{name}-{}", std::process::id()));
        assert!(
            !dir.exists(),
            "{} exists: two daemons named {name} in one run",
            dir.display()
        );
        fs::create_dir_all(dir.join("exec")).unwrap();
        fs::write(dir.join("daemon.json"), "{}\n").unwrap();
        let root = match root {
            Some(r) => r.to_path_buf(),
            None => dir.join("root"),
        };
        fs::create_dir_all(&root).unwrap();
        PrivateDaemon {
            name: name.to_string(),
            dir,
            root,
            child: None,
            log_start: 0,
        }
    }

    /// Replaces the daemon.json its next start reads, e.g.
    /// `{"userns-remap": "default"}`.
    pub fn set_config(&self, json: &str) {
        fs::write(self.dir.join("daemon.json"), json).unwrap();
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.join("sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.sock().display())
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// (Re)starts the daemon on the same data-root; panics when it does not
    /// come up, with the reason and the log tail.
    pub fn start_again(&mut self) {
        if let Err(f) = self.try_start() {
            panic!(
                "e2e: dockerd `{}` did not come up ({}) on {}; daemon log of this start:\n{}",
                self.name,
                match f.exit_code {
                    Some(c) => format!("it exited with {c}"),
                    None => format!("no answer within {}s", START_TIMEOUT.as_secs()),
                },
                self.root.display(),
                tail(&f.log, 40)
            );
        }
    }

    /// Starts the daemon; `Err` when it exits before answering (or hangs,
    /// then it is stopped again).
    pub fn try_start(&mut self) -> Result<(), StartFailure> {
        assert!(self.child.is_none(), "daemon {} already runs", self.name);
        let log_path = self.log_path();
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        self.log_start = log.seek(SeekFrom::End(0)).unwrap();
        let ns = format!("volmig-e2e-{}", std::process::id());
        let dockerd = std::env::var_os(DOCKERD_ENV)
            .map(PathBuf::from)
            .or_else(|| which("dockerd"))
            .unwrap_or_else(|| "dockerd".into());
        let mut cmd = Command::new(dockerd);
        cmd.arg("--config-file")
            .arg(self.dir.join("daemon.json"))
            .arg("--data-root")
            .arg(&self.root)
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("pid"))
            .arg("-H")
            .arg(self.host())
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
            ])
            // Our own containerd namespaces: even a system containerd
            // would keep these containers apart from anyone else's.
            .arg("--containerd-namespace")
            .arg(&ns)
            .arg("--containerd-plugins-namespace")
            .arg(format!("{ns}-plugins"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap());
        // If this test process dies, the daemon gets SIGTERM.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("e2e: a private dockerd cannot be had: cannot run dockerd: {e}")
        });
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                self.cleanup_after_exit();
                return Err(StartFailure {
                    exit_code: status.code(),
                    log: self.log_since_start(),
                });
            }
            let ok = self
                .docker()
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                println!(
                    "e2e: dockerd {} up in {:.1}s",
                    self.name,
                    t0.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if t0.elapsed() > START_TIMEOUT {
                let log = self.log_since_start();
                self.stop();
                return Err(StartFailure {
                    exit_code: None,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What the daemon wrote to its log since its last start.
    pub fn log_since_start(&self) -> String {
        let mut f = match fs::File::open(self.log_path()) {
            Ok(f) => f,
            Err(_) => return String::new(),
        };
        f.seek(SeekFrom::Start(self.log_start)).unwrap();
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    }

    /// `docker` (the 20.10 client) talking to this daemon only.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_HOST", self.host())
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", self.dir.join("client"));
        cmd
    }

    /// Runs `docker ARGS`, panics unless it succeeds; returns stdout.
    pub fn dk(&self, args: &[&str]) -> String {
        let out = self.docker().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `docker ARGS` and returns what happened.
    pub fn dk_output(&self, args: &[&str]) -> Output {
        self.docker().args(args).output().unwrap()
    }

    /// Imports a busybox image named `tag` from a tar holding /bin/busybox
    /// and its applet links; `volume` adds `VOLUME <volume>` to the image.
    pub fn load_busybox_image(&self, tag: &str, volume: Option<&str>) {
        let tar = busybox_rootfs_tar();
        let mut args = vec![
            "import".to_string(),
            "-c".into(),
            "ENV PATH=/bin".into(),
            "-c".into(),
            "CMD [\"sh\"]".into(),
        ];
        if let Some(v) = volume {
            args.push("-c".into());
            args.push(format!("VOLUME {v}"));
        }
        args.push(tar.display().to_string());
        args.push(tag.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.dk(&args);
    }

    /// SIGTERM to the daemon this harness started, SIGKILL after 30 s; then
    /// its containerd if it outlived it, then every mount under its
    /// directory and its data-root.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let t0 = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if t0.elapsed() > STOP_TIMEOUT => {
                        eprintln!(
                            "e2e: dockerd {} ({pid}) ignored SIGTERM for {}s: SIGKILL",
                            self.name,
                            STOP_TIMEOUT.as_secs()
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            println!(
                "e2e: dockerd {} stopped in {:.1}s",
                self.name,
                t0.elapsed().as_secs_f64()
            );
        }
        self.cleanup_after_exit();
    }

    /// After dockerd exited: its own containerd (only if it still runs on
    /// our exec-root), then the mounts.
    fn cleanup_after_exit(&mut self) {
        let exec = self.dir.join("exec").join("containerd");
        if let Some(pid) = fs::read_to_string(exec.join("containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let ours = || {
                fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| contains(&c, exec.as_os_str().as_bytes()))
            };
            if ours() {
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let t0 = Instant::now();
                while ours() && t0.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if ours() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let a = umount_under(&self.root);
        let b = umount_under(&self.dir);
        if !(a && b) {
            eprintln!(
                "e2e: mounts remain after dockerd {} stopped: {:?} {:?}",
                self.name,
                mounts_under(&self.root),
                mounts_under(&self.dir)
            );
        }
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        self.stop();
        let keep = std::env::var_os("VOLMIG_E2E_KEEP").is_some();
        if keep {
            eprintln!("e2e: VOLMIG_E2E_KEEP: leaving {}", self.dir.display());
            return;
        }
        if mounts_under(&self.dir).is_empty() && mounts_under(&self.root).is_empty() {
            // An own data-root is inside `dir`; a given one is left alone.
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("e2e: NOT removing {}: mounts remain", self.dir.display());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The busybox rootfs tar (made once per process).
fn busybox_rootfs_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = Path::new(BASE).join(format!("img-{}", std::process::id()));
        let r = dir.join("rootfs");
        for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for a in [
            "sh", "ash", "sleep", "ls", "cat", "echo", "mkdir", "touch", "chown", "chmod", "ln",
            "mkfifo", "mknod", "true", "false", "id", "stat", "rm", "cp", "mv", "test", "[",
            "find", "grep", "env", "printf", "readlink", "wc", "head", "dd", "truncate", "sync",
        ] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).unwrap();
        }
        fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
        let tar = dir.join("rootfs.tar");
        let out = Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--numeric-owner",
                "--owner=0",
                "--group=0",
                "-C",
            ])
            .arg(&r)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        register_exit_cleanup(dir);
        tar
    })
    .clone()
}

/// Directories removed when the test process exits (after every test).
static EXIT_CLEANUP: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

pub fn register_exit_cleanup(dir: PathBuf) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| unsafe {
        libc::atexit(exit_cleanup);
    });
    EXIT_CLEANUP
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(dir);
}

extern "C" fn exit_cleanup() {
    let _ = std::panic::catch_unwind(|| {
        if std::env::var_os("VOLMIG_E2E_KEEP").is_some() {
            return;
        }
        let dirs = std::mem::take(&mut *EXIT_CLEANUP.lock().unwrap_or_else(|e| e.into_inner()));
        for d in dirs {
            if umount_under(&d) {
                let _ = fs::remove_dir_all(&d);
            }
        }
        // The base itself, when this run left it empty.
        let _ = fs::remove_dir(BASE);
    });
}

/// A socket no daemon listens on: volmig's default daemon for the tests,
/// so that it never probes a daemon they did not start (e.g. the host's
/// /var/run/docker.sock). Tests that want their daemon pass `-H`.
pub const NO_DAEMON: &str = "unix:///var/tmp/volmig-e2e/no-daemon.sock";

/// The volmig binary under test, with no data-root from the environment.
pub fn volmig() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("volmig"));
    cmd.env_remove("VOLMIG_DATA_ROOT")
        .env("DOCKER_HOST", NO_DAEMON);
    cmd
}

/// `volmig --data-root ROOT ARGS`: exit code, stdout, stderr.
pub fn volmig_run(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = volmig()
        .arg("--data-root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `volmig --data-root ROOT --json ARGS`: exit code and document.
pub fn volmig_json(root: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = volmig_run(root, &all);
    let doc = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!("volmig {args:?}: stdout is not JSON ({e}):\n{out}\nstderr:\n{err}")
    });
    (code, doc)
}

/// The first `Error response from daemon: ` text of a docker command's stderr.
pub fn daemon_error(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("Error response from daemon: "))
        .map(str::to_string)
}

/// After a `volmig migrate` of container `app`: it is stopped on the
/// source, and the target has `volume` with `label` (as docker's JSON
/// shows it, `"k":"v"`), from which a container of `image` reads
/// `marker` in `/data/marker`.
pub fn assert_migrated(
    src: &PrivateDaemon,
    dst: &PrivateDaemon,
    volume: &str,
    label: &str,
    image: &str,
    marker: &str,
) {
    assert_eq!(
        src.dk(&["inspect", "-f", "{{.State.Running}}", "app"])
            .trim(),
        "false"
    );
    let labels = dst.dk(&["volume", "inspect", "-f", "{{json .Labels}}", volume]);
    assert!(labels.contains(label), "{labels}");
    let mount = format!("{volume}:/data");
    let shown = dst.dk(&["run", "--rm", "-v", &mount, image, "cat", "/data/marker"]);
    assert_eq!(shown, marker);
}

/// `volmig --json migrate app --via VIA ... --pause` from `src`'s
/// data-root to `dst`'s, each daemon named by its socket, the target
/// running the binary under test.
pub fn migrate_command(src: &PrivateDaemon, dst: &PrivateDaemon, via: &str) -> Command {
    let volmig = env!("CARGO_BIN_EXE_volmig");
    let mut cmd = Command::new(volmig);
    cmd.arg("--data-root")
        .arg(&src.root)
        .arg("-H")
        .arg(src.host())
        .arg("--json")
        .arg("migrate")
        .arg("app")
        .arg("--via")
        .arg(via)
        .arg("--target-data-root")
        .arg(&dst.root)
        .arg("--target-host")
        .arg(dst.host())
        .arg("--target-volmig")
        .arg(volmig)
        .arg("--pause");
    cmd
}
