//! The subordinate id files, `/etc/subuid` and `/etc/subgid`, read the way
//! dockerd's idtools reads them for `--userns-remap`: lines
//! `user:start:count` (the user by name or by uid; blank lines and `#`
//! comments skipped), every range of the user concatenated in file order,
//! the first one holding container root.
//!
//! The data-root subtree `<uid>.<gid>/` names the remapped root only, not
//! the user: the daemon's remap user is the one whose first subuid range
//! starts at that uid (`dockremap` for `--userns-remap=default`).
//!
//! Reads only those two files, bounded (`MAX_SUBID_FILE`), and never
//! writes.

use std::path::{Path, PathBuf};

use super::IdMap;
use crate::dataroot::regular_file::{self, RegularFileError};
use crate::dataroot::RemapRoot;

pub const SUBUID: &str = "/etc/subuid";
pub const SUBGID: &str = "/etc/subgid";
/// Largest subid file read: a line is ~25 bytes, so about 40,000 users.
pub const MAX_SUBID_FILE: u64 = 1 << 20;

const SIZE_FIX: &str = "pass the range with --userns-remap-size COUNT (dockerd gives dockremap 65536 ids), or run on the host whose daemon uses this subtree";

#[derive(Debug, thiserror::Error)]
pub enum SubidError {
    #[error("cannot read `{path}` ({source}) for the userns-remap range: {SIZE_FIX}")]
    Read {
        path: PathBuf,
        source: RegularFileError,
    },
    #[error("`{path}` line {line} is not `user:start:count` (dockerd refuses it too): `{text}`")]
    Malformed {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("no user in `{path}` has a first range starting at {uid}, the remapped root uid of --userns-remap {root}: {SIZE_FIX}")]
    NoRemapUser {
        path: PathBuf,
        uid: u32,
        root: RemapRoot,
    },
    #[error("user `{user}` (first range at {uid} in `{subuid}`) has no range in `{path}`: add one (usermod --add-subgids START-END {user}), or {SIZE_FIX}")]
    NoGidRange {
        path: PathBuf,
        subuid: PathBuf,
        user: String,
        uid: u32,
    },
    #[error("user `{user}`'s first range in `{path}` starts at {start}, but --userns-remap {root} says container root is gid {gid}: pass --userns-remap {uid}:{start}, or fix `{path}`")]
    GidMismatch {
        path: PathBuf,
        user: String,
        start: u32,
        gid: u32,
        uid: u32,
        root: RemapRoot,
    },
    #[error(transparent)]
    Invalid(#[from] super::InvalidRanges),
}

/// One line of a subid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubidEntry {
    pub user: String,
    pub start: u32,
    pub count: u32,
}

/// Parses a subid file's text; `path` is for messages.
pub fn parse(text: &str, path: &Path) -> Result<Vec<SubidEntry>, SubidError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || SubidError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            text: line.chars().take(200).collect(),
        };
        let mut parts = line.split(':');
        let (Some(user), Some(start), Some(count), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        if user.is_empty() {
            return Err(malformed());
        }
        out.push(SubidEntry {
            user: user.to_string(),
            start: start.parse().map_err(|_| malformed())?,
            count: count.parse().map_err(|_| malformed())?,
        });
    }
    Ok(out)
}

/// The user whose first range starts at `uid` (in file order).
pub fn remap_user(entries: &[SubidEntry], uid: u32) -> Option<&str> {
    let mut seen: Vec<&str> = Vec::new();
    for e in entries {
        if seen.contains(&e.user.as_str()) {
            continue;
        }
        if e.start == uid {
            return Some(&e.user);
        }
        seen.push(&e.user);
    }
    None
}

/// Every `(start, count)` of `user`, in file order.
pub fn ranges_of(entries: &[SubidEntry], user: &str) -> Vec<(u32, u32)> {
    entries
        .iter()
        .filter(|e| e.user == user)
        .map(|e| (e.start, e.count))
        .collect()
}

/// The mapping of the daemon whose remapped root is `root`, from the two
/// files' texts.
pub fn map_from_texts(
    root: RemapRoot,
    (subuid_path, subuid): (&Path, &str),
    (subgid_path, subgid): (&Path, &str),
) -> Result<IdMap, SubidError> {
    let uids = parse(subuid, subuid_path)?;
    let gids = parse(subgid, subgid_path)?;
    let user = remap_user(&uids, root.uid).ok_or_else(|| SubidError::NoRemapUser {
        path: subuid_path.to_path_buf(),
        uid: root.uid,
        root,
    })?;
    let uid_ranges = ranges_of(&uids, user);
    // dockerd looks a user up by name, then by uid: the other spelling
    // of the same user may be the one in /etc/subgid.
    let mut gid_ranges = ranges_of(&gids, user);
    if gid_ranges.is_empty() {
        if let Some(other) = other_spelling(user) {
            gid_ranges = ranges_of(&gids, &other);
        }
    }
    let Some(&(gid_start, _)) = gid_ranges.first() else {
        return Err(SubidError::NoGidRange {
            path: subgid_path.to_path_buf(),
            subuid: subuid_path.to_path_buf(),
            user: user.to_string(),
            uid: root.uid,
        });
    };
    if gid_start != root.gid {
        return Err(SubidError::GidMismatch {
            path: subgid_path.to_path_buf(),
            user: user.to_string(),
            start: gid_start,
            gid: root.gid,
            uid: root.uid,
            root,
        });
    }
    let origin = format!(
        "user {user} in {} and {}",
        subuid_path.display(),
        subgid_path.display()
    );
    Ok(IdMap::new(&uid_ranges, &gid_ranges, origin)?)
}

/// The mapping of the daemon whose remapped root is `root`, from
/// `/etc/subuid` and `/etc/subgid`.
pub fn map_from_files(root: RemapRoot) -> Result<IdMap, SubidError> {
    let read = |path: &str| -> Result<String, SubidError> {
        let bytes = regular_file::read(Path::new(path), MAX_SUBID_FILE).map_err(|source| {
            SubidError::Read {
                path: path.into(),
                source,
            }
        })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    let (uids, gids) = (read(SUBUID)?, read(SUBGID)?);
    map_from_texts(root, (Path::new(SUBUID), &uids), (Path::new(SUBGID), &gids))
}

/// A user's name for its uid, or its uid for its name (from the passwd
/// database).
fn other_spelling(user: &str) -> Option<String> {
    use nix::unistd::{Uid, User};
    match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok()?.map(|u| u.name),
        Err(_) => User::from_name(user)
            .ok()?
            .map(|u| u.uid.as_raw().to_string()),
    }
}
