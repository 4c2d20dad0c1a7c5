//! A Docker data-root on disk: the only code that knows the paths under it.
//!
//! With `--userns-remap`, dockerd keeps its state in `<data-root>/<uid>.<gid>/`
//! instead of `<data-root>/`; `DataRoot` resolves that once so every other
//! module asks it for paths and never joins them itself. Nothing here writes,
//! except the two modules that say so: `metadata::write` and
//! `config_rewrite`.

pub mod bolt_check;
pub mod config_rewrite;
pub mod containers;
pub mod device;
pub mod metadata;
pub mod mountinfo;
pub mod opts;
pub mod regular_file;
pub mod volumes;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::idmap::IdMap;

/// The files of a container's directory that volmig reads and carries:
/// its config (mount points, state) and its host config (binds, tmpfs).
pub const CONTAINER_FILES: [&str; 2] = ["config.v2.json", "hostconfig.json"];

/// dockerd's `RestrictedNamePattern`, `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`: the
/// rule for volume names at create and for checkpoint names. A name that
/// passes is one plain path component (no `/`, no `..`, at least two
/// characters).
pub fn is_restricted_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// A `--userns-remap` root: the uid and gid that container root maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemapRoot {
    pub uid: u32,
    pub gid: u32,
}

impl RemapRoot {
    /// The subtree name dockerd uses: `<uid>.<gid>`.
    pub fn dir_name(self) -> String {
        format!("{}.{}", self.uid, self.gid)
    }

    fn from_dir_name(name: &str) -> Option<RemapRoot> {
        let (uid, gid) = name.split_once('.')?;
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(uid) || !all_digits(gid) {
            return None;
        }
        Some(RemapRoot {
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
        })
    }
}

impl fmt::Display for RemapRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// `--userns-remap` given as `UID:GID` (what the data-root subtree encodes).
#[derive(Debug, thiserror::Error)]
#[error("invalid --userns-remap `{0}`: expected UID:GID as numbers, e.g. 100000:100000 (the `<uid>.<gid>` directory under the data-root)")]
pub struct InvalidRemapRoot(String);

impl FromStr for RemapRoot {
    type Err = InvalidRemapRoot;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let dotted = text.replacen(':', ".", 1);
        RemapRoot::from_dir_name(&dotted).ok_or_else(|| InvalidRemapRoot(text.to_string()))
    }
}

/// Why a data-root cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum DataRootError {
    #[error("data-root `{path}` does not exist: pass the daemon's --data-root with --data-root DIR or VOLMIG_DATA_ROOT")]
    NotFound { path: PathBuf },
    #[error(
        "data-root `{path}` is not a directory: pass the daemon's --data-root with --data-root DIR"
    )]
    NotADirectory { path: PathBuf },
    #[error("cannot read data-root `{path}`: {source} (run as root, or check the permissions)")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("data-root `{root}` has no userns-remap subtree `{subtree}` for --userns-remap {remap}{found}")]
    RemapSubtreeMissing {
        root: PathBuf,
        subtree: String,
        remap: RemapRoot,
        found: String,
    },
}

/// An opened data-root: the directory given and the effective root `R`
/// (the userns-remap subtree when one is selected).
#[derive(Debug, Clone)]
pub struct DataRoot {
    given: PathBuf,
    effective: PathBuf,
    remap: Option<RemapRoot>,
    remap_subtrees: Vec<RemapRoot>,
    /// The remapped daemon's id ranges, when known (export and import
    /// shift volume data ids by them: `crate::idmap`).
    id_map: Option<IdMap>,
}

impl DataRoot {
    /// Opens `path` as dockerd's `--data-root`, selecting the subtree of
    /// `remap` when given. Fails only when nothing there can be read.
    pub fn open(path: &Path, remap: Option<RemapRoot>) -> Result<DataRoot, DataRootError> {
        let meta = fs::metadata(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => DataRootError::NotFound {
                path: path.to_path_buf(),
            },
            _ => DataRootError::Unreadable {
                path: path.to_path_buf(),
                source,
            },
        })?;
        if !meta.is_dir() {
            return Err(DataRootError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        // Absolute and without symlinks: dockerd computes every path from
        // its --data-root, and stored paths are compared against these.
        let path = &fs::canonicalize(path).map_err(|source| DataRootError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let remap_subtrees =
            find_remap_subtrees(path).map_err(|source| DataRootError::Unreadable {
                path: path.to_path_buf(),
                source,
            })?;
        let effective = match remap {
            None => path.to_path_buf(),
            Some(remap) => {
                let sub = path.join(remap.dir_name());
                if !sub.is_dir() {
                    let found = if remap_subtrees.is_empty() {
                        String::from(
                            ": this data-root holds no userns-remap subtree; drop --userns-remap",
                        )
                    } else {
                        let names: Vec<String> =
                            remap_subtrees.iter().map(|r| r.to_string()).collect();
                        format!(": it holds {}; pass one of them", names.join(", "))
                    };
                    return Err(DataRootError::RemapSubtreeMissing {
                        root: path.to_path_buf(),
                        subtree: remap.dir_name(),
                        remap,
                        found,
                    });
                }
                sub
            }
        };
        Ok(DataRoot {
            given: path.to_path_buf(),
            effective,
            remap,
            remap_subtrees,
            id_map: None,
        })
    }

    /// The same data-root with the remapped daemon's id ranges.
    pub fn with_id_map(mut self, map: Option<IdMap>) -> DataRoot {
        self.id_map = map;
        self
    }

    /// The id ranges of the remapped daemon using this subtree, if known.
    pub fn id_map(&self) -> Option<&IdMap> {
        self.id_map.as_ref()
    }

    /// The directory given as `--data-root`.
    pub fn given(&self) -> &Path {
        &self.given
    }

    /// `R`: where dockerd keeps containers and volumes for this daemon.
    pub fn path(&self) -> &Path {
        &self.effective
    }

    pub fn remap(&self) -> Option<RemapRoot> {
        self.remap
    }

    /// The `<uid>.<gid>/` subtrees found directly under the given data-root.
    pub fn remap_subtrees(&self) -> &[RemapRoot] {
        &self.remap_subtrees
    }

    pub fn volumes_dir(&self) -> PathBuf {
        self.effective.join("volumes")
    }

    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name)
    }

    /// The path dockerd recomputes for a local volume, whatever Source says.
    pub fn volume_data_dir(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("_data")
    }

    pub fn metadata_db(&self) -> PathBuf {
        self.volumes_dir().join("metadata.db")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.effective.join("containers")
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// dockerd's default checkpoint location for a container.
    pub fn checkpoint_dir(&self, id: &str, checkpoint: &str) -> PathBuf {
        self.checkpoints_dir(id).join(checkpoint)
    }

    /// The directory of a container's checkpoints.
    pub fn checkpoints_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("checkpoints")
    }

    pub fn container_config(&self, id: &str) -> PathBuf {
        self.container_dir(id).join(CONTAINER_FILES[0])
    }

    /// One of a container's `CONTAINER_FILES`.
    pub fn container_file(&self, id: &str, file: &str) -> PathBuf {
        self.container_dir(id).join(file)
    }

    /// Managed plugins (`plugins/<id>/config.json`).
    pub fn plugins_dir(&self) -> PathBuf {
        self.effective.join("plugins")
    }

    pub fn volume_opts(&self, name: &str) -> PathBuf {
        self.volume_dir(name).join("opts.json")
    }

    /// Where imports stage their work: beside `volumes/` on the same
    /// filesystem (a commit is a rename), never inside it (dockerd takes
    /// every directory there for a volume).
    pub fn staging_dir(&self) -> PathBuf {
        self.effective.join("volmig-staging")
    }

    /// Where import records, per volume, the base a later delta applies
    /// onto (`docs/incremental.md`): beside `volumes/`, never inside it
    /// (dockerd takes every directory there for a volume, and a file
    /// there is one of its own).
    pub fn bases_dir(&self) -> PathBuf {
        self.effective.join("volmig-bases")
    }

    /// The recorded base of volume `name` (a `volmig-manifest/1`). `name`
    /// is a volume name: one plain path component.
    pub fn base_manifest(&self, name: &str) -> PathBuf {
        self.bases_dir().join(format!("{name}.manifest"))
    }

    /// What volmig's import lock is taken on: the data-root directory
    /// itself (see `import::lock`).
    pub fn import_lock(&self) -> PathBuf {
        self.effective.clone()
    }
}

fn find_remap_subtrees(path: &Path) -> io::Result<Vec<RemapRoot>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        if let Some(remap) = entry
            .file_name()
            .to_str()
            .and_then(RemapRoot::from_dir_name)
        {
            found.push(remap);
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remap_parses_both_spellings() {
        let r: RemapRoot = "100000:100000".parse().unwrap();
        assert_eq!(r.dir_name(), "100000.100000");
        let r: RemapRoot = "231072.231072".parse().unwrap();
        assert_eq!(r.to_string(), "231072:231072");
        assert!("root".parse::<RemapRoot>().is_err());
        assert!("1:".parse::<RemapRoot>().is_err());
    }

    #[test]
    fn open_detects_remap_subtrees_and_selects_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("100000.100000/volumes")).unwrap();
        fs::create_dir_all(dir.path().join("volumes")).unwrap();
        let root = DataRoot::open(dir.path(), None).unwrap();
        assert_eq!(
            root.remap_subtrees(),
            &[RemapRoot {
                uid: 100000,
                gid: 100000
            }]
        );
        assert_eq!(root.path(), dir.path());

        let root = DataRoot::open(dir.path(), Some("100000:100000".parse().unwrap())).unwrap();
        assert_eq!(root.path(), dir.path().join("100000.100000"));

        let err = DataRoot::open(dir.path(), Some("5:5".parse().unwrap())).unwrap_err();
        assert!(err.to_string().contains("holds 100000:100000"), "{err}");
    }

    #[test]
    fn open_names_the_missing_path() {
        let err = DataRoot::open(Path::new("/nonexistent/volmig"), None).unwrap_err();
        assert!(err
            .to_string()
            .contains("`/nonexistent/volmig` does not exist"));
    }
}
