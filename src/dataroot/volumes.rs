//! `volumes/`: what is on disk for the local driver to scan, read without
//! any judgement. `crate::scan` applies dockerd's rules to it.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::opts::{VolumeOptions, MAX_OPTS_JSON};
use super::regular_file::{self, RegularFileError};
use super::DataRoot;

/// A volume name dockerd accepts at create: `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`.
/// dockerd checks it only at create; the scan loads any directory name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeName(String);

#[derive(Debug, thiserror::Error)]
#[error("invalid volume name `{0}`: dockerd accepts only [a-zA-Z0-9][a-zA-Z0-9_.-]+ (at least two characters)")]
pub struct InvalidVolumeName(pub String);

impl VolumeName {
    pub fn new(name: &str) -> Result<VolumeName, InvalidVolumeName> {
        if super::is_restricted_name(name) {
            Ok(VolumeName(name.to_string()))
        } else {
            Err(InvalidVolumeName(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An anonymous volume's name: 64 lowercase hex digits.
    pub fn is_anonymous(&self) -> bool {
        self.0.len() == 64
            && self
                .0
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

impl std::fmt::Display for VolumeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Owner and mode of a volume's `_data` (in `scan --json`: `uid`, `gid`
/// and `mode` as octal text, e.g. `0755`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DataDir {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits incl. setuid/setgid/sticky.
    #[serde(serialize_with = "serialize_mode")]
    pub mode: u32,
    #[serde(skip)]
    pub is_dir: bool,
}

fn serialize_mode<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// The state of a volume's `opts.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptsFile {
    Absent,
    Options(VolumeOptions),
    /// Exists but could not be read: dockerd warns and loads no options.
    Unreadable(String),
    /// Read but does not decode: dockerd does not start. Go's error text.
    Invalid(String),
    /// A FIFO or device: dockerd's plain read blocks forever or never
    /// ends, so the daemon never finishes starting.
    Blocking(String),
}

/// What kind of entry sits directly under `volumes/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeDirKind {
    Directory,
    Symlink,
    Other,
}

/// One entry of `volumes/`.
#[derive(Debug, Clone)]
pub struct VolumeDirEntry {
    /// The directory name (lossily UTF-8 for display).
    pub name: String,
    pub path: PathBuf,
    pub kind: VolumeDirKind,
    /// `_data`, when the entry is a directory and `_data` exists.
    pub data: Option<DataDir>,
    pub opts: OptsFile,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumesDirError {
    /// dockerd creates `volumes/` at start; a missing one is not a problem.
    #[error("`{path}` is not a directory: dockerd cannot create its volume directory there and will not start")]
    NotADirectory { path: PathBuf },
    #[error("cannot read `{path}`: {source}")]
    Unreadable { path: PathBuf, source: io::Error },
}

/// Lists `volumes/` as the local driver sees it. `Ok(None)` when there is
/// no `volumes/` at all (dockerd will create an empty one).
pub fn list_volume_dir(root: &DataRoot) -> Result<Option<Vec<VolumeDirEntry>>, VolumesDirError> {
    let dir = root.volumes_dir();
    let unreadable = |source| VolumesDirError::Unreadable {
        path: dir.clone(),
        source,
    };
    match fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
        Ok(m) if !m.is_dir() => return Err(VolumesDirError::NotADirectory { path: dir }),
        Ok(_) => {}
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(&dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let file_type = entry.file_type().map_err(unreadable)?;
        let kind = if file_type.is_dir() {
            VolumeDirKind::Directory
        } else if file_type.is_symlink() {
            VolumeDirKind::Symlink
        } else {
            VolumeDirKind::Other
        };
        let path = entry.path();
        let (data, opts) = if kind == VolumeDirKind::Directory {
            (read_data_dir(&path), read_opts(&path))
        } else {
            (None, OptsFile::Absent)
        };
        entries.push(VolumeDirEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            path,
            kind,
            data,
            opts,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(entries))
}

fn read_data_dir(volume_dir: &std::path::Path) -> Option<DataDir> {
    let meta = fs::symlink_metadata(volume_dir.join("_data")).ok()?;
    Some(DataDir {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
        is_dir: meta.is_dir(),
    })
}

fn read_opts(volume_dir: &std::path::Path) -> OptsFile {
    match regular_file::read(&volume_dir.join("opts.json"), MAX_OPTS_JSON) {
        Err(RegularFileError::NotFound) => OptsFile::Absent,
        Err(e) if e.blocks_a_plain_read() => OptsFile::Blocking(e.to_string()),
        Err(e) => OptsFile::Unreadable(e.to_string()),
        Ok(bytes) => match VolumeOptions::decode(&bytes) {
            Ok(opts) => OptsFile::Options(opts),
            Err(go_error) => OptsFile::Invalid(go_error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_dockerds_create_rule() {
        for good in ["data1", "my_vol.2-x", "ab", &"a".repeat(64)] {
            assert!(VolumeName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "a", "-x", ".x", "_x", "a/b", "a b", "..", "ünï"] {
            assert!(VolumeName::new(bad).is_err(), "{bad}");
        }
        let anon = VolumeName::new(&"ab12".repeat(16)).unwrap();
        assert!(anon.is_anonymous());
        assert!(!VolumeName::new("data1").unwrap().is_anonymous());
    }

    #[test]
    fn lists_dirs_symlinks_and_opts_states() {
        let tmp = tempfile::tempdir().unwrap();
        let vols = tmp.path().join("volumes");
        fs::create_dir_all(vols.join("plain/_data")).unwrap();
        fs::create_dir_all(vols.join("withopts/_data")).unwrap();
        fs::write(
            vols.join("withopts/opts.json"),
            br#"{"MountType":"tmpfs","MountDevice":"tmpfs"}"#,
        )
        .unwrap();
        fs::create_dir_all(vols.join("bad")).unwrap();
        fs::write(vols.join("bad/opts.json"), b"").unwrap();
        fs::write(vols.join("metadata.db"), b"").unwrap();
        std::os::unix::fs::symlink("plain", vols.join("link")).unwrap();
        let root = DataRoot::open(tmp.path(), None).unwrap();
        let entries = list_volume_dir(&root).unwrap().unwrap();
        let by_name = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
        assert!(by_name("plain").data.unwrap().is_dir);
        assert_eq!(by_name("plain").opts, OptsFile::Absent);
        assert!(matches!(by_name("withopts").opts, OptsFile::Options(_)));
        assert_eq!(
            by_name("bad").opts,
            OptsFile::Invalid("unexpected end of JSON input".into())
        );
        assert!(by_name("bad").data.is_none());
        assert_eq!(by_name("link").kind, VolumeDirKind::Symlink);
        assert_eq!(by_name("metadata.db").kind, VolumeDirKind::Other);
    }

    #[test]
    fn missing_volumes_dir_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        let root = DataRoot::open(tmp.path(), None).unwrap();
        assert!(list_volume_dir(&root).unwrap().is_none());
    }
}
