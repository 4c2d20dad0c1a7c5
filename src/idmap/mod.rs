//! Shifting ids between what a container sees and what the host stores,
//! for a dockerd started with `--userns-remap`.
//!
//! A remapped daemon runs every container in a user namespace whose ids
//! 0..N are host ids taken from the remap user's subordinate ranges
//! (`/etc/subuid`, `/etc/subgid`, see `subid`): a file the container owns
//! as uid 0 is stored as uid 100000. A bundle holds ids as the container
//! sees them, so export from a remapped subtree subtracts the range
//! (`Direction::ToContainer`) and import into one adds it
//! (`Direction::ToHost`); a plain daemon's ids are already the container's.
//!
//! Ids live in three places of a file: its owner, the entries of its POSIX
//! ACLs (`system.posix_acl_access`, `system.posix_acl_default`: the kernel
//! hands them to the initial namespace with host ids), and the root id of
//! a v3 `security.capability` (namespaced file capabilities, Linux 4.14+).
//! An id the other side cannot represent is an error naming it, never
//! clamped to `nobody`: the caller adds the file and stops.
//!
//! Never touches a file: it only transforms values.

pub mod subid;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dataroot::RemapRoot;

/// One subordinate range: container ids `container..container+count` are
/// host ids `host..host+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub count: u32,
}

impl IdRange {
    fn to_host(self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.container)?;
        (off < self.count).then(|| self.host + off)
    }

    fn to_container(self, id: u32) -> Option<u32> {
        let off = id.checked_sub(self.host)?;
        (off < self.count).then(|| self.container + off)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `count` is never 0 (checked by `IdMap::new`).
        write!(
            f,
            "{}-{} (container {}-{})",
            self.host,
            self.host as u64 + self.count as u64 - 1,
            self.container,
            self.container as u64 + self.count as u64 - 1
        )
    }
}

/// The uid and gid ranges of one remapped daemon, as dockerd builds them:
/// each user's ranges concatenated in file order, container id 0 first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    /// Where the ranges come from, for messages and the bundle header:
    /// `user dockremap in /etc/subuid and /etc/subgid`, or the option.
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid userns-remap ranges ({origin}): {detail}")]
pub struct InvalidRanges {
    origin: String,
    detail: String,
}

impl IdMap {
    /// Concatenates `(start, count)` ranges in order, container id 0 first,
    /// as dockerd's idtools does; refuses empty or overflowing ranges.
    pub fn new(
        uids: &[(u32, u32)],
        gids: &[(u32, u32)],
        origin: String,
    ) -> Result<IdMap, InvalidRanges> {
        let concat = |what: &str, ranges: &[(u32, u32)]| -> Result<Vec<IdRange>, InvalidRanges> {
            let bad = |detail: String| InvalidRanges {
                origin: origin.clone(),
                detail,
            };
            if ranges.is_empty() {
                return Err(bad(format!("no {what} range")));
            }
            let mut container = 0u64;
            let mut out = Vec::with_capacity(ranges.len());
            for &(host, count) in ranges {
                let limit = 1u64 << 32;
                let fits = count > 0
                    && host as u64 + count as u64 <= limit
                    && container + count as u64 <= limit;
                if !fits {
                    return Err(bad(format!(
                        "{what} range {host}:{count} is empty or reaches past id 2^32-1"
                    )));
                }
                out.push(IdRange {
                    container: container as u32,
                    host,
                    count,
                });
                container += count as u64;
            }
            Ok(out)
        };
        Ok(IdMap {
            uids: concat("uid", uids)?,
            gids: concat("gid", gids)?,
            origin: origin.clone(),
        })
    }

    /// One range of `count` ids for both uids and gids, starting at the
    /// remapped root (`--userns-remap UID:GID --userns-remap-size COUNT`).
    pub fn single(root: RemapRoot, count: u32) -> Result<IdMap, InvalidRanges> {
        IdMap::new(
            &[(root.uid, count)],
            &[(root.gid, count)],
            format!("--userns-remap {root} --userns-remap-size {count}"),
        )
    }

    /// The host ids of container root (what names the data-root subtree).
    pub fn root(&self) -> RemapRoot {
        RemapRoot {
            uid: self.uids.first().map_or(0, |r| r.host),
            gid: self.gids.first().map_or(0, |r| r.host),
        }
    }

    /// Whether a host uid and gid are both seen by the container.
    pub fn maps_host_owner(&self, uid: u32, gid: u32) -> bool {
        self.uids.iter().any(|r| r.to_container(uid).is_some())
            && self.gids.iter().any(|r| r.to_container(gid).is_some())
    }

    fn ranges(&self, kind: IdKind) -> &[IdRange] {
        match kind {
            IdKind::Uid | IdKind::AclUser | IdKind::CapRoot => &self.uids,
            IdKind::Gid | IdKind::AclGroup => &self.gids,
        }
    }
}

/// Which way ids go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Export from a remapped subtree: host ids become the container's.
    ToContainer,
    /// Import into a remapped subtree: the container's ids become host ids.
    ToHost,
}

/// Where in a file an id sits, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Uid,
    Gid,
    AclUser,
    AclGroup,
    CapRoot,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::Uid => "owner uid",
            IdKind::Gid => "group gid",
            IdKind::AclUser => "ACL user entry uid",
            IdKind::AclGroup => "ACL group entry gid",
            IdKind::CapRoot => "file capability root uid",
        })
    }
}

/// An id that cannot be shifted, or an xattr that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} {id} is outside the userns-remap range {ranges} ({origin}): the container sees it as nobody; chown it into the range (container id N is host id {first}+N) and export again")]
    NotSeenByContainer {
        kind: IdKind,
        id: u32,
        ranges: String,
        first: u32,
        origin: String,
    },
    #[error("{kind} {id} has no host id in the target's userns-remap range {ranges} ({origin}): give the daemon's remap user a larger range (usermod --add-subuids/--add-subgids, then restart dockerd), or chown it below {count} in the source and export again")]
    NoHostId {
        kind: IdKind,
        id: u32,
        ranges: String,
        count: u64,
        origin: String,
    },
    #[error("its xattr `{name}` is not a POSIX ACL in the kernel's format ({detail})")]
    BadAcl { name: &'static str, detail: String },
}

/// The xattrs that carry ids.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";
pub const CAPABILITY: &[u8] = b"security.capability";

/// `include/uapi/linux/posix_acl_xattr.h`: a 4-byte version, then 8-byte
/// entries (tag u16, perm u16, id u32), little-endian.
const ACL_VERSION: u32 = 2;
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// `include/uapi/linux/capability.h`: `magic_etc` holds the revision in
/// its top byte; v2 is 20 bytes, v3 (namespaced) 24 with the root uid last.
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 0x0000_0001;
const XATTR_CAPS_SZ_2: usize = 20;
const XATTR_CAPS_SZ_3: usize = 24;

/// An id mapping applied one way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdShift {
    pub map: IdMap,
    pub direction: Direction,
}

impl IdShift {
    pub fn new(map: IdMap, direction: Direction) -> IdShift {
        IdShift { map, direction }
    }

    /// One id of `kind`, shifted.
    pub fn id(&self, kind: IdKind, id: u32) -> Result<u32, IdError> {
        let ranges = self.map.ranges(kind);
        let shifted = ranges.iter().find_map(|r| match self.direction {
            Direction::ToContainer => r.to_container(id),
            Direction::ToHost => r.to_host(id),
        });
        shifted.ok_or_else(|| {
            let text = ranges
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let origin = self.map.origin.clone();
            match self.direction {
                Direction::ToContainer => IdError::NotSeenByContainer {
                    kind,
                    id,
                    ranges: text,
                    first: ranges.first().map_or(0, |r| r.host),
                    origin,
                },
                Direction::ToHost => IdError::NoHostId {
                    kind,
                    id,
                    ranges: text,
                    count: ranges.iter().map(|r| r.count as u64).sum(),
                    origin,
                },
            }
        })
    }

    /// A file's owner, ACLs and capability, shifted in place; on an error
    /// nothing is changed.
    pub fn apply(
        &self,
        uid: &mut u32,
        gid: &mut u32,
        xattrs: &mut [(Vec<u8>, Vec<u8>)],
    ) -> Result<(), IdError> {
        let new_uid = self.id(IdKind::Uid, *uid)?;
        let new_gid = self.id(IdKind::Gid, *gid)?;
        let mut values = Vec::new();
        for (i, (name, value)) in xattrs.iter().enumerate() {
            if let Some(v) = self.xattr(name, value)? {
                values.push((i, v));
            }
        }
        *uid = new_uid;
        *gid = new_gid;
        for (i, v) in values {
            xattrs[i].1 = v;
        }
        Ok(())
    }

    /// The shifted value of one xattr, or `None` when it carries no id.
    pub fn xattr(&self, name: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, IdError> {
        match name {
            ACL_ACCESS => self.acl("system.posix_acl_access", value).map(Some),
            ACL_DEFAULT => self.acl("system.posix_acl_default", value).map(Some),
            CAPABILITY => self.capability(value),
            _ => Ok(None),
        }
    }

    fn acl(&self, name: &'static str, value: &[u8]) -> Result<Vec<u8>, IdError> {
        let bad = |detail: String| IdError::BadAcl { name, detail };
        if value.len() < 4 || (value.len() - 4) % 8 != 0 {
            return Err(bad(format!(
                "{} bytes is not a 4-byte header and 8-byte entries",
                value.len()
            )));
        }
        let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if version != ACL_VERSION {
            return Err(bad(format!("version {version}, not {ACL_VERSION}")));
        }
        let mut out = value.to_vec();
        for entry in out[4..].chunks_exact_mut(8) {
            let tag = u16::from_le_bytes([entry[0], entry[1]]);
            let kind = match tag {
                ACL_USER => IdKind::AclUser,
                ACL_GROUP => IdKind::AclGroup,
                // USER_OBJ, GROUP_OBJ, MASK, OTHER: no id (ACL_UNDEFINED_ID).
                _ => continue,
            };
            let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
            entry[4..8].copy_from_slice(&self.id(kind, id)?.to_le_bytes());
        }
        Ok(out)
    }

    /// `security.capability`: a v3 value's root uid is shifted. What the
    /// kernel shows is kept as it shows it (security/commoncap.c): a v3
    /// whose root is container root reads as v2 inside the container, so
    /// export writes it as v2; and a v2 written into a remapped volume
    /// becomes v3 with the remapped root, as a `setcap` in the container
    /// makes it: a v2 would grant its capabilities to host processes too.
    fn capability(&self, value: &[u8]) -> Result<Option<Vec<u8>>, IdError> {
        if value.len() < 4 {
            return Ok(None);
        }
        let magic = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        let revision = magic & VFS_CAP_REVISION_MASK;
        let effective = magic & VFS_CAP_FLAGS_EFFECTIVE;
        match (revision, value.len(), self.direction) {
            (VFS_CAP_REVISION_3, XATTR_CAPS_SZ_3, direction) => {
                let root = u32::from_le_bytes([value[20], value[21], value[22], value[23]]);
                let shifted = self.id(IdKind::CapRoot, root)?;
                if direction == Direction::ToContainer && shifted == 0 {
                    let mut v2 = value[..XATTR_CAPS_SZ_2].to_vec();
                    v2[..4].copy_from_slice(&(VFS_CAP_REVISION_2 | effective).to_le_bytes());
                    return Ok(Some(v2));
                }
                let mut out = value.to_vec();
                out[20..24].copy_from_slice(&shifted.to_le_bytes());
                Ok(Some(out))
            }
            (VFS_CAP_REVISION_2, XATTR_CAPS_SZ_2, Direction::ToHost) => {
                let root = self.id(IdKind::CapRoot, 0)?;
                let mut v3 = value.to_vec();
                v3[..4].copy_from_slice(&(VFS_CAP_REVISION_3 | effective).to_le_bytes());
                v3.extend_from_slice(&root.to_le_bytes());
                Ok(Some(v3))
            }
            // v2 read from a remapped volume: no id in it. Anything else
            // the kernel would not have stored.
            _ => Ok(None),
        }
    }
}

/// What a bundle header records about the ids it holds (absent: read from
/// a plain daemon, ids as they were on disk).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftNote {
    /// Always `container`: volume data ids are as the container sees them.
    pub ids: String,
    /// The source's remapped root (`UID:GID`) and its ranges, subtracted.
    pub remap_root: String,
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    pub origin: String,
}

impl ShiftNote {
    pub fn of(map: &IdMap) -> ShiftNote {
        ShiftNote {
            ids: "container".into(),
            remap_root: map.root().to_string(),
            uids: map.uids.clone(),
            gids: map.gids.clone(),
            origin: map.origin.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
