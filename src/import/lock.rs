//! One import (or recovery) at a time per data-root: an exclusive flock on
//! `<R>/volmig.lock`, held from before the bundle is read until the import
//! has committed and cleaned up.
//!
//! It is volmig's own lock, independent of metadata.db's (which dockerd
//! holds while it runs): two imports must never stage, judge conflicts or
//! commit at the same time, and whoever holds this lock knows that every
//! other staging directory belongs to a dead process (no PID guesswork:
//! `kill(pid, 0)` is wrong across PID namespaces and after PID reuse).
//! The kernel drops the lock when its holder dies, SIGKILL included.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

/// Largest holder description read back from the lock file.
const MAX_HOLDER: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another volmig import is running on this data-root ({holder}; lock `{path}`): wait for it to finish, or re-run with --wait")]
    Held { path: PathBuf, holder: String },
    #[error("cannot lock `{path}`: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("interrupted while waiting for `{path}`")]
    Interrupted { path: PathBuf },
}

/// The held lock; released when dropped (or when the process dies).
pub struct ImportLock {
    _file: Flock<File>,
}

impl ImportLock {
    /// Takes the lock. With `wait`, polls until the holder releases it (a
    /// signal ends the wait); otherwise fails at once, naming the holder.
    pub fn acquire(path: &Path, wait: bool) -> Result<ImportLock, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        loop {
            // # Security
            // O_NOFOLLOW: a symlink planted as the lock file must not make
            // us truncate whatever it points at.
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(io_err)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut locked) => {
                    describe_holder(&mut locked).map_err(io_err)?;
                    return Ok(ImportLock { _file: locked });
                }
                Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                    if !wait {
                        return Err(LockError::Held {
                            path: path.to_path_buf(),
                            holder: read_holder(&mut file),
                        });
                    }
                    if crate::interrupt::requested().is_some() {
                        return Err(LockError::Interrupted {
                            path: path.to_path_buf(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((_, errno)) => return Err(io_err(io::Error::from(errno))),
            }
        }
    }
}

/// Whether an import holds the lock now (read only: a missing lock file
/// is not created).
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    matches!(
        Flock::lock(file, FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// Writes who holds the lock into it, for the message a second import
/// prints.
fn describe_holder(file: &mut File) -> io::Result<()> {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = format!(
        "pid {} on {host}, started at unix time {since}\n",
        std::process::id()
    );
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(text.as_bytes())
}

fn read_holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.take(MAX_HOLDER).read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "holder unknown".into()
    } else {
        text.chars().filter(|c| !c.is_control()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volmig.lock");
        let _first = ImportLock::acquire(&path, false).unwrap();
        let err = match ImportLock::acquire(&path, false) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a second lock must fail"),
        };
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("--wait"), "{err}");
    }

    #[test]
    fn the_lock_is_free_again_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volmig.lock");
        drop(ImportLock::acquire(&path, false).unwrap());
        assert!(ImportLock::acquire(&path, false).is_ok());
    }

    #[test]
    fn a_symlink_as_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("volmig.lock");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(ImportLock::acquire(&path, false).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
