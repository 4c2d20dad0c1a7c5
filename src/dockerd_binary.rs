//! The dockerd installed on this host, when no daemon answers: which binary
//! would run, and the release it says it is (`dockerd --version`).
//!
//! A prediction made with the daemon stopped is for the daemon that will
//! start next, and that is the installed binary, not the newest behaviour
//! volmig models. The binary is run with nothing but `--version`, with
//! stdin closed, in its own process group, for at most `TIMEOUT`, and at
//! most `MAX_OUTPUT` bytes of its output are read: a wrapper script that
//! hangs or floods stdout cannot hold volmig up.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::daemon_version::DaemonVersion;

/// How long `dockerd --version` may take (it prints at once).
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// How much of its output is read (it prints one short line).
pub const MAX_OUTPUT: u64 = 4096;
/// Where distributions install dockerd, searched after `$PATH` (root's
/// PATH in cron or a minimal shell often lacks the sbin directories).
pub const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/usr/local/bin", "/sbin"];

/// An installed dockerd and the release it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstalledDockerd {
    pub path: PathBuf,
    /// Its first output line, e.g. `Docker version 20.10.24+dfsg1, build 5d6db84`.
    pub output: String,
    /// The release as printed: `20.10.24+dfsg1`.
    pub release: String,
    #[serde(skip)]
    pub version: DaemonVersion,
}

/// Why no installed dockerd gave a version.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    #[error("lookup disabled (VOLMIG_DOCKERD is empty)")]
    Disabled,
    #[error("no dockerd in $PATH, {}", EXTRA_DIRS.join(", "))]
    NotFound,
    #[error("`{} --version` could not run: {reason}", path.display())]
    Failed { path: PathBuf, reason: String },
    #[error("`{} --version` printed `{output}`, which names no release", path.display())]
    Unparsed { path: PathBuf, output: String },
}

/// Where to look: `VOLMIG_DOCKERD`'s value (a path, or empty for none) and
/// `$PATH`, passed in by the caller.
pub struct Lookup<'a> {
    pub override_path: Option<&'a OsStr>,
    pub path_var: Option<&'a OsStr>,
}

/// Finds dockerd and asks it its version.
pub fn installed(lookup: &Lookup) -> Result<InstalledDockerd, LookupError> {
    let path = match lookup.override_path {
        Some(p) if p.is_empty() => return Err(LookupError::Disabled),
        Some(p) => PathBuf::from(p),
        None => find_on_path(lookup.path_var).ok_or(LookupError::NotFound)?,
    };
    let output = run_version(&path).map_err(|reason| LookupError::Failed {
        path: path.clone(),
        reason,
    })?;
    let unparsed = || LookupError::Unparsed {
        path: path.clone(),
        output: output.clone(),
    };
    let release = release_of(&output).ok_or_else(unparsed)?;
    let version = release.parse().map_err(|_| unparsed())?;
    Ok(InstalledDockerd {
        release: release.to_string(),
        path,
        output,
        version,
    })
}

/// The first executable `dockerd` in `$PATH`, then in `EXTRA_DIRS`.
fn find_on_path(path_var: Option<&OsStr>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_var
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.extend(EXTRA_DIRS.iter().map(PathBuf::from));
    dirs.iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join("dockerd"))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `20.10.24+dfsg1` from `Docker version 20.10.24+dfsg1, build 5d6db84`.
fn release_of(output: &str) -> Option<&str> {
    let rest = output.trim().strip_prefix("Docker version ")?;
    let release = rest.split([',', ' ']).next()?.trim();
    (!release.is_empty()).then_some(release)
}

/// Runs `PATH --version`, bounded in time and output; its first line.
fn run_version(path: &Path) -> Result<String, String> {
    let mut child = spawn(path).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + TIMEOUT;
    let Some(stdout) = child.stdout.take() else {
        kill(&mut child);
        return Err("no stdout".into());
    };
    let (tx, rx) = mpsc::channel();
    // A reader thread: a blocking read cannot be given a deadline. After
    // a kill the pipe closes and the thread ends; if a grandchild that left
    // the group keeps it open, the thread is abandoned, not waited for.
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.take(MAX_OUTPUT).read_to_end(&mut bytes);
        let _ = tx.send(bytes);
    });
    let bytes = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(bytes) => bytes,
        Err(_) => {
            kill(&mut child);
            return Err(format!("no answer within {} s", TIMEOUT.as_secs()));
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                kill(&mut child);
                return Err(format!("did not exit within {} s", TIMEOUT.as_secs()));
            }
            Err(e) => {
                kill(&mut child);
                return Err(e.to_string());
            }
        }
    };
    if !status.success() {
        return Err(format!("it exited with {status}"));
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Starts `PATH --version`. ETXTBSY (a binary being written, e.g. by a
/// package upgrade, or a test's script while another thread forks) is
/// retried a few times.
fn spawn(path: &Path) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        let spawned = Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .env("LC_ALL", "C")
            // Its own group: a timeout kills whatever the script started too.
            .process_group(0)
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Kills the child's process group (it leads it) and reaps the child.
fn kill(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `$PATH` and `$VOLMIG_DOCKERD` of this process.
pub fn from_env() -> (Option<OsString>, Option<OsString>) {
    (std::env::var_os("VOLMIG_DOCKERD"), std::env::var_os("PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("dockerd");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn lookup(path: &Path) -> Result<InstalledDockerd, LookupError> {
        installed(&Lookup {
            override_path: Some(path.as_os_str()),
            path_var: None,
        })
    }

    #[test]
    fn reads_the_release_dockerd_prints() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(
            dir.path(),
            "echo 'Docker version 20.10.24+dfsg1, build 5d6db84'",
        );
        let found = lookup(&path).unwrap();
        assert_eq!(found.version, DaemonVersion::new(20, 10, 24));
        assert_eq!(found.release, "20.10.24+dfsg1");
        assert_eq!(found.output, "Docker version 20.10.24+dfsg1, build 5d6db84");
    }

    #[test]
    fn is_found_on_path_first() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "echo 'Docker version 24.0.7, build 311b9ff'");
        let found = installed(&Lookup {
            override_path: None,
            path_var: Some(dir.path().as_os_str()),
        })
        .unwrap();
        assert_eq!(found.path, dir.path().join("dockerd"));
        assert_eq!(found.version, DaemonVersion::new(24, 0, 7));
    }

    #[test]
    fn a_hanging_binary_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // The sleep is a grandchild holding stdout open: the group is killed.
        let path = script(dir.path(), "sleep 30; echo 'Docker version 1.0.0'");
        let started = Instant::now();
        let err = lookup(&path).unwrap_err();
        assert!(
            started.elapsed() < TIMEOUT + Duration::from_secs(2),
            "{err}"
        );
        assert!(err.to_string().contains("within 3 s"), "{err}");
    }

    #[test]
    fn a_flood_of_output_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "yes 'Docker version 20.10.24, build x'");
        let started = Instant::now();
        // Only MAX_OUTPUT bytes are read; then `yes` dies of SIGPIPE.
        let result = lookup(&path);
        assert!(started.elapsed() < TIMEOUT + Duration::from_secs(2));
        assert!(
            matches!(result, Err(LookupError::Failed { .. }) | Ok(_)),
            "{result:?}"
        );
    }

    #[test]
    fn garbage_and_failures_say_what_was_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = script(dir.path(), "echo 'hello'");
        assert!(matches!(lookup(&path), Err(LookupError::Unparsed { .. })));
        let path = script(dir.path(), "exit 3");
        let err = lookup(&path).unwrap_err().to_string();
        assert!(err.contains("dockerd --version` could not run"), "{err}");
        let err = lookup(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(err, LookupError::Failed { .. }), "{err}");
        let disabled = installed(&Lookup {
            override_path: Some(OsStr::new("")),
            path_var: None,
        });
        assert!(matches!(disabled, Err(LookupError::Disabled)));
    }
}
