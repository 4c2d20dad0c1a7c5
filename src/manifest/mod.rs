//! Manifests: what a bundle carried, entry by entry, with the stat that
//! tells a later round what changed since and the chunk digests that tell
//! which parts of a large file did. The format and its rules are
//! `docs/incremental.md`; this module is their one home.
//!
//! A manifest is a zstd-compressed stream of JSON lines (`io`), written
//! and read one entry at a time: a million entries never need to be in
//! memory together.

pub mod chunks;
pub mod from_bundle;
pub mod io;

use std::io::Write as _;

use sha2::{Digest, Sha256};

use crate::bundle::{hex, EntryKind, EntryMeta};

pub use chunks::{ChunkHasher, Chunked};
pub use io::{ManifestError, ManifestReader, ManifestWriter, Record};

/// The format this build writes and reads.
pub const FORMAT: &str = "volmig-manifest/1";
/// The size of the chunks of a large file's digest and of a delta's
/// patches. 256 KiB, not 1 MiB: a database writes pages of 4 to 16 KiB
/// at any 4 KiB-aligned offset, so a 1 MiB write touches two chunks of
/// 1 MiB (the delta carried 2 MiB for it) but five of 256 KiB (1.25 MiB).
/// Finer costs more digests: 32 bytes per 256 KiB in memory for a file
/// being compared, about 35 bytes compressed in the manifest (2 GiB:
/// 8,192 digests, 0.3 MB); and rsync's own blocks are ~sqrt(size), 45 KiB
/// for 2 GiB, but it sends a digest per block over the wire every round.
pub const CHUNK: u64 = 256 << 10;
/// Chunk digests kept for one file: 64 GiB of content (8 MiB of
/// digests, `Option<[u8; 32]>` each; a few lists are alive at once, and
/// peak RSS must stay under 64 MiB). A longer file gets a content digest
/// but no chunk list, and travels whole when it changes.
pub const MAX_CHUNKS: u64 = 1 << 18;

/// A new round id: unique to one export (time, process, 16 random bytes).
pub fn new_round_id(host: &str, data_root: &str) -> String {
    use std::io::Read as _;
    let mut random = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut random));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(host.as_bytes());
    h.update([0]);
    h.update(data_root.as_bytes());
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(random);
    hex(&h.finalize()[..16])
}

/// What the manifest's first line says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestHeader {
    pub format: String,
    pub chunk_size: u64,
    /// The round id (`BundleHeader::round`) of the bundle this manifest
    /// describes: a delta names its base by it.
    pub bundle: String,
    /// `source` (written by export: stat of the source), `target`
    /// (recorded by import: stat of what it laid down) or `bundle`
    /// (recovered from a bundle by `inspect --manifest`: no stat).
    pub side: String,
    pub host: String,
    pub data_root: String,
    /// A recorded base: the volume's metadata.db record as that round's
    /// import wrote it (told from a later round's record while a running
    /// dockerd keeps metadata.db from being read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::dataroot::metadata::VolumeRecord>,
}

/// One entry of a volume's `_data` tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to `_data`; empty for `_data` itself.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    /// Stat of the side that wrote the manifest; absent in a manifest
    /// made from a bundle (such an entry always counts as changed).
    pub ctime: Option<(i64, u32)>,
    pub ino: Option<u64>,
    /// SHA-256 over the xattrs (names and values, sorted); `None`: none.
    pub xattrs: Option<[u8; 32]>,
    /// Regular files: the content digest (`chunks`).
    pub content: Option<[u8; 32]>,
    /// Symlink target, or the `_data`-relative path a hardlink names.
    pub link: Option<Vec<u8>>,
    /// Devices: (major, minor).
    pub rdev: Option<(u32, u32)>,
    /// A file of more than one chunk: its chunk digests (`None`: zeros);
    /// empty when not recorded.
    pub chunks: Vec<Option<[u8; 32]>>,
}

impl Entry {
    /// The entry for a bundle entry `meta` at `rel` (relative to `_data`),
    /// with a regular file's content digest and chunks.
    pub fn from_meta(rel: &[u8], meta: &EntryMeta, chunked: Option<Chunked>) -> Entry {
        let (content, chunks) = match chunked {
            Some(c) => (Some(c.content), c.chunks),
            None => (None, Vec::new()),
        };
        let device = matches!(meta.kind, EntryKind::Char | EntryKind::Block);
        Entry {
            path: rel.to_vec(),
            kind: meta.kind,
            size: meta.size,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: (meta.mtime, meta.mtime_nsec),
            ctime: None,
            ino: None,
            xattrs: xattrs_digest(&meta.xattrs),
            content,
            link: meta.link.clone(),
            rdev: device.then_some((meta.rdev_major, meta.rdev_minor)),
            chunks,
        }
    }

    /// Whether `self` (from a walk now) and `base` (a manifest of before)
    /// describe the same entry by stat: kind, size, mode, owner, mtime,
    /// ctime and inode. False when either has no ctime or inode.
    pub fn same_stat(&self, base: &Entry) -> bool {
        self.kind == base.kind
            && self.size == base.size
            && self.mode == base.mode
            && self.uid == base.uid
            && self.gid == base.gid
            && self.mtime == base.mtime
            && self.ctime.is_some()
            && self.ctime == base.ctime
            && self.ino.is_some()
            && self.ino == base.ino
    }

    /// Whether the two describe the same entry in everything the tree
    /// digest covers (stat of the side aside).
    pub fn same_description(&self, other: &Entry) -> bool {
        describe(self) == describe(other)
    }
}

/// SHA-256 over sorted xattrs, `None` when there are none.
pub fn xattrs_digest(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<[u8; 32]> {
    if xattrs.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for (name, value) in xattrs {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name);
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    }
    Some(h.finalize().into())
}

/// The canonical description of an entry that the tree digest covers:
/// kind, path, mode, owner, mtime, size, content, link, device, xattrs.
pub fn describe(e: &Entry) -> Vec<u8> {
    let mut d = Vec::with_capacity(e.path.len() + 200);
    d.push(kind_tag(e.kind));
    d.push(0);
    d.extend_from_slice(&e.path);
    d.push(0);
    // Writing into a Vec cannot fail.
    let _ = write!(
        d,
        "{:o}\0{}\0{}\0{}.{:09}\0{}\0",
        e.mode, e.uid, e.gid, e.mtime.0, e.mtime.1, e.size
    );
    if let Some(c) = &e.content {
        d.extend_from_slice(hex(c).as_bytes());
    }
    d.push(0);
    if let Some(l) = &e.link {
        d.extend_from_slice(l);
    }
    d.push(0);
    if let Some((maj, min)) = e.rdev {
        let _ = write!(d, "{maj}:{min}");
    }
    d.push(0);
    if let Some(x) = &e.xattrs {
        d.extend_from_slice(hex(x).as_bytes());
    }
    d.push(b'\n');
    d
}

/// A volume's tree digest, fed its entries in bundle order.
#[derive(Default, Clone)]
pub struct TreeDigest {
    h: Sha256,
    entries: u64,
}

impl TreeDigest {
    pub fn add(&mut self, e: &Entry) {
        self.h.update(describe(e));
        self.entries += 1;
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn hex(self) -> String {
        hex(&self.h.finalize())
    }
}

/// The one-letter kind of the manifest's `k`.
pub fn kind_tag(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::File => b'f',
        EntryKind::Dir => b'd',
        EntryKind::Symlink => b'l',
        EntryKind::Hardlink => b'h',
        EntryKind::Fifo => b'p',
        EntryKind::Char => b'c',
        EntryKind::Block => b'b',
    }
}

pub fn kind_from_tag(tag: &str) -> Option<EntryKind> {
    Some(match tag {
        "f" => EntryKind::File,
        "d" => EntryKind::Dir,
        "l" => EntryKind::Symlink,
        "h" => EntryKind::Hardlink,
        "p" => EntryKind::Fifo,
        "c" => EntryKind::Char,
        "b" => EntryKind::Block,
        _ => return None,
    })
}

/// Bundle order of two `_data`-relative paths: depth-first, names in
/// byte order (a directory's entries come right after it, before its
/// next sibling), so that `a/b` < `a-b` although `-` < `/`.
pub fn path_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let mut ai = a.split(|&c| c == b'/');
    let mut bi = b.split(|&c| c == b'/');
    if a.is_empty() || b.is_empty() {
        return a.len().cmp(&b.len());
    }
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Equal => continue,
                other => return other,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_order_depth_first_like_the_bundle() {
        let mut paths: Vec<&[u8]> = vec![b"a-b", b"a/b", b"", b"a", b"a/b/c", b"b", b"a/a"];
        paths.sort_by(|a, b| path_order(a, b));
        let want: Vec<&[u8]> = vec![b"", b"a", b"a/a", b"a/b", b"a/b/c", b"a-b", b"b"];
        assert_eq!(paths, want);
    }

    #[test]
    fn descriptions_differ_in_every_attribute() {
        let base = Entry {
            path: b"x".to_vec(),
            kind: EntryKind::File,
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: (1, 2),
            ctime: Some((3, 4)),
            ino: Some(5),
            xattrs: None,
            content: Some([1; 32]),
            link: None,
            rdev: None,
            chunks: Vec::new(),
        };
        let mut variants = vec![];
        let mut v = base.clone();
        v.mode = 0o600;
        variants.push(v);
        let mut v = base.clone();
        v.uid = 1;
        variants.push(v);
        let mut v = base.clone();
        v.mtime = (1, 3);
        variants.push(v);
        let mut v = base.clone();
        v.content = Some([2; 32]);
        variants.push(v);
        let mut v = base.clone();
        v.xattrs = Some([0; 32]);
        variants.push(v);
        let mut v = base.clone();
        v.kind = EntryKind::Symlink;
        variants.push(v);
        for v in variants {
            assert!(!v.same_description(&base), "{v:?}");
        }
        let mut stat_only = base.clone();
        stat_only.ctime = Some((9, 9));
        assert!(stat_only.same_description(&base));
        assert!(!stat_only.same_stat(&base));
    }
}
