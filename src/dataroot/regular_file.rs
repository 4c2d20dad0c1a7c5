//! Reading the small files dockerd keeps under a data-root (`opts.json`,
//! `config.v2.json`, `hostconfig.json`, `metadata.db`) without trusting
//! what sits at their path.
//!
//! # Security
//! A FIFO at one of these paths blocks a plain `open`/`read` forever, and
//! `/dev/zero` (or a symlink to it, or a sparse 1 TiB file) is read until
//! memory runs out: `scan` and `verify` hung or ate 24 GB. So the path is
//! `lstat`ed first and refused unless it is a regular file (a device is
//! never opened: opening one can have side effects), then opened with
//! `O_NOFOLLOW | O_NONBLOCK` (a swap to a FIFO or a symlink in between
//! neither blocks nor is followed) and `fstat`ed again, and at most
//! `limit` bytes are read, whatever the file grows to meanwhile.
//! Symlinks are refused rather than followed, as export never follows one:
//! dockerd would follow it, so `verify` reports such a file as unreadable.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file under the data-root was not read.
#[derive(Debug, thiserror::Error)]
pub enum RegularFileError {
    #[error("does not exist")]
    NotFound,
    /// Not a regular file: never opened for reading.
    #[error("is a {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    #[error("is {size} bytes, more than the {limit} bytes volmig reads")]
    TooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    Io(#[source] io::Error),
}

impl RegularFileError {
    /// A FIFO or device: what dockerd's own plain read would block on or
    /// read without end.
    pub fn blocks_a_plain_read(&self) -> bool {
        matches!(
            self,
            RegularFileError::NotRegular {
                kind: "fifo" | "character device" | "block device"
            }
        )
    }
}

fn kind_of(file_type: fs::FileType) -> &'static str {
    if file_type.is_file() {
        "regular file"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

fn io_error(e: io::Error) -> RegularFileError {
    if e.kind() == io::ErrorKind::NotFound {
        RegularFileError::NotFound
    } else {
        RegularFileError::Io(e)
    }
}

/// Opens `path` for reading only if it is a regular file of at most
/// `limit` bytes; returns the file and its size.
pub fn open(path: &Path, limit: u64) -> Result<(File, u64), RegularFileError> {
    let kind = kind_of(fs::symlink_metadata(path).map_err(io_error)?.file_type());
    if kind != "regular file" {
        return Err(RegularFileError::NotRegular { kind });
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW met a symlink swapped in after the lstat.
            Some(libc::ELOOP) => RegularFileError::NotRegular { kind: "symlink" },
            _ => io_error(e),
        })?;
    let meta = file.metadata().map_err(RegularFileError::Io)?;
    let kind = kind_of(meta.file_type());
    if kind != "regular file" {
        return Err(RegularFileError::NotRegular { kind });
    }
    if meta.len() > limit {
        return Err(RegularFileError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    Ok((file, meta.len()))
}

/// Reads a whole regular file of at most `limit` bytes (see `open`).
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, RegularFileError> {
    let (file, size) = open(path, limit)?;
    // The size is bounded by `limit`; a file that grows after the fstat
    // is cut at limit + 1 bytes and refused.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(RegularFileError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(RegularFileError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("opts.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read(&fifo, 1024).unwrap_err();
        assert!(
            matches!(err, RegularFileError::NotRegular { kind: "fifo" }),
            "{err}"
        );
        assert!(err.blocks_a_plain_read());
    }

    #[test]
    fn dev_zero_and_symlinks_to_it_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(
            matches!(
                err,
                RegularFileError::NotRegular {
                    kind: "character device"
                }
            ),
            "{err}"
        );
        let link = dir.path().join("config.v2.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read(&link, 1024).unwrap_err();
        assert!(
            matches!(err, RegularFileError::NotRegular { kind: "symlink" }),
            "{err}"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("metadata.db");
        File::create(&big).unwrap().set_len(1 << 40).unwrap();
        let err = read(&big, 1 << 20).unwrap_err();
        assert!(
            matches!(err, RegularFileError::TooLarge { size, .. } if size == 1 << 40),
            "{err}"
        );
        fs::write(&big, b"{}").unwrap();
        assert_eq!(read(&big, 2).unwrap(), b"{}");
        assert!(matches!(
            read(&dir.path().join("absent"), 2),
            Err(RegularFileError::NotFound)
        ));
        assert!(matches!(
            read(dir.path(), 2),
            Err(RegularFileError::NotRegular { kind: "directory" })
        ));
    }
}
