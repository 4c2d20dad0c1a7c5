//! The bundle: one PAX tar carrying containers' mount points and the
//! volumes they reference, written and read in one pass.
//!
//! Layout, in this order (paths sorted depth-first, so the same volume
//! always gives the same bytes):
//!
//! 1. `volmig-bundle/header.json`: format, tool, source, the containers
//!    with their mount points, the volumes with driver, labels, options and
//!    the attributes of `_data` itself. Every later entry must fall under
//!    something the header names.
//! 2. `containers/<id>/config.v2.json`, `hostconfig.json` and, with
//!    `--checkpoint`, `checkpoints/<name>/...`.
//! 3. `volumes/<name>/opts.json` and `volumes/<name>/_data/...`: every file
//!    kind, owners, modes, nanosecond mtimes and xattrs (`SCHILY.xattr.*`),
//!    hardlinks as links, sparse files in GNU sparse 1.0 PAX form.
//! 4. `volmig-bundle/SHA256SUMS`: `sha256sum -c` compatible, one line per
//!    regular file (after `tar -xf`, it checks the extracted tree).
//! 5. `volmig-bundle/trailer.json`: counts, the digest of SHA256SUMS, a
//!    digest over every entry's metadata, each volume's content digest.
//!
//! A bundle is trusted only once the trailer has matched: truncation (no
//! trailer), a flipped byte (a file digest) or altered metadata (the
//! entries digest) all fail before anything is committed.

mod entry_kind;
pub use entry_kind::EntryKind;
pub mod delta;
mod hashing;
mod large;
pub mod layout;
pub mod limits;
mod patch;
pub mod reader;
pub mod since;
mod tally;
mod tar_entry;
mod ustar;
mod walk;
pub mod writer;

use crate::fileattrs::FileAttrs;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dataroot::metadata::VolumeRecord;

/// Copy size for moving file data: small enough to stay in L2 between the
/// copies and the hash (measured: 1 MiB buffers doubled the CPU cost).
pub const IO_CHUNK: usize = 128 * 1024;

/// The format this build writes and reads.
pub const FORMAT: &str = "volmig-bundle/1";
pub const HEADER_PATH: &str = "volmig-bundle/header.json";
pub const SUMS_PATH: &str = "volmig-bundle/SHA256SUMS";
pub const TRAILER_PATH: &str = "volmig-bundle/trailer.json";

/// The first entry: what the bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    pub format: String,
    pub tool: String,
    pub source_host: String,
    pub source_data_root: String,
    pub containers: Vec<BundleContainer>,
    pub volumes: Vec<BundleVolume>,
    /// Present when the source was userns-remapped: its volume data ids
    /// were shifted to the containers' view (absent in older bundles,
    /// whose ids are as they were on disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<crate::idmap::ShiftNote>,
    /// Present when the export wrote a manifest (`--manifest-out`) or is
    /// a delta (`--since`): a later round names this one by `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<Round>,
}

/// A pre-copy round (`docs/incremental.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    /// Unique to this export: its manifest's `bundle`.
    pub id: String,
    /// A delta: the round it applies onto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleContainer {
    pub id: String,
    pub name: String,
    pub mounts: Vec<BundleMount>,
    /// The checkpoint carried, if any.
    pub checkpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleMount {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The volume name for volume mounts.
    pub name: String,
    pub source: String,
    pub rw: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleVolume {
    pub name: String,
    pub anonymous: bool,
    /// The volume's metadata.db record (driver, labels, create options);
    /// `None` when the source had none.
    pub record: Option<VolumeRecord>,
    /// Whether `volumes/<name>/opts.json` is carried.
    pub opts_json: bool,
    /// Owner, mode, mtime and xattrs of `_data` itself (postgres refuses a
    /// data directory that is not 999:999 0700); for a bind volume whose
    /// data is carried, of the device's directory (what the container
    /// sees at its mount point).
    pub data: DataAttrs,
    /// Set when the volume's options mount a device over `_data`: where
    /// its data lives, and whether the bundle carries it.
    /// (Boxed: a header may list a million volumes, most without one.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<Box<BundleDevice>>,
}

/// A volume whose data is not in `_data` (opts.json mounts a device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleDevice {
    /// `bind`, `network`, `tmpfs`, `block-device`, `incomplete` or `other`
    /// (`dataroot::device::DataLocation::word`).
    pub location: String,
    /// opts.json's `MountDevice` on the source.
    pub device: String,
    /// Whether `volumes/<name>/_data/...` holds the device's tree (a bind
    /// volume exported with `--bind-data carry`), to be laid down at the
    /// device path; otherwise `_data` is carried as the empty mountpoint.
    pub data_carried: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataAttrs {
    pub uid: u32,
    pub gid: u32,
    /// Octal, e.g. "0755".
    pub mode: String,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// xattr name -> hex value.
    pub xattrs: BTreeMap<String, String>,
}

/// The last entry: what was written, to check what was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub format: String,
    /// Entries between the header and SHA256SUMS.
    pub entries: u64,
    /// Regular files among them.
    pub files: u64,
    /// Bytes of regular file content (logical size, holes included).
    pub bytes: u64,
    /// SHA-256 of the header entry.
    pub header_sha256: String,
    /// SHA-256 of the SHA256SUMS entry.
    pub sums_sha256: String,
    /// SHA-256 over every entry's description (path, type, mode, owner,
    /// mtime, size, content digest, link, device, xattrs).
    pub entries_sha256: String,
    pub volumes: BTreeMap<String, VolumeSummary>,
    /// With a `round` in the header: each volume's tree digest
    /// (`crate::manifest::TreeDigest`; for a delta, of the volume once the
    /// delta is applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trees: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSummary {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// SHA-256 over the descriptions of the volume's entries, with paths
    /// relative to `volumes/<name>/`: equal digests, equal volumes.
    pub digest: String,
}

/// Everything about one entry except its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The bundle path, e.g. `volumes/data1/_data/a.txt` (no trailing `/`).
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// Logical size of a regular file (holes included).
    pub size: u64,
    /// Symlink target (any bytes: it is data) or hardlink target (a bundle path).
    pub link: Option<Vec<u8>>,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// Sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data segments of a sparse file.
    pub sparse: Option<Vec<(u64, u64)>>,
    /// In a delta bundle: a deletion or a patch (`delta`).
    pub delta: Option<delta::DeltaMark>,
}

impl EntryMeta {
    /// The entry of a file read from disk (the only conversion that way):
    /// `kind` is its bundle kind (a hardlink, or the file's own), `link` a
    /// symlink's target or a hardlink's bundle path.
    pub fn of_file(
        path: Vec<u8>,
        kind: EntryKind,
        attrs: FileAttrs,
        link: Option<Vec<u8>>,
    ) -> EntryMeta {
        EntryMeta {
            path,
            kind,
            mode: attrs.mode,
            uid: attrs.uid,
            gid: attrs.gid,
            mtime: attrs.mtime,
            mtime_nsec: attrs.mtime_nsec,
            size: if kind == EntryKind::File {
                attrs.size
            } else {
                0
            },
            link,
            rdev_major: attrs.rdev_major,
            rdev_minor: attrs.rdev_minor,
            xattrs: attrs.xattrs,
            sparse: None,
            delta: None,
        }
    }

    /// The attributes the entry gets on disk (the only conversion this
    /// way); what only a stat has (device, inode, links, ctime) is unset.
    pub fn file_attrs(&self) -> FileAttrs {
        FileAttrs {
            kind: self.kind.file_kind(),
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            mtime_nsec: self.mtime_nsec,
            size: self.size,
            rdev_major: self.rdev_major,
            rdev_minor: self.rdev_minor,
            nlink: 1,
            dev: 0,
            ino: 0,
            ctime: (0, 0),
            xattrs: self.xattrs.clone(),
        }
    }

    /// The canonical description hashed into the entries digest and the
    /// volume digest; `rel` is the path as it should appear there.
    pub fn describe(&self, rel: &[u8], sha256: Option<&[u8; 32]>) -> Vec<u8> {
        let tail = self.describe_tail(sha256);
        let mut d = Vec::with_capacity(rel.len() + tail.len() + 2);
        d.push(self.kind.tag());
        d.push(0);
        d.extend_from_slice(rel);
        d.push(0);
        d.extend_from_slice(&tail);
        d
    }

    /// The part of the description after the path: the same under every
    /// name the entry is described by (bundle path, volume-relative path).
    pub fn describe_tail(&self, sha256: Option<&[u8; 32]>) -> Vec<u8> {
        use std::io::Write as _;
        let mut d = Vec::with_capacity(160);
        // Writing into a Vec cannot fail.
        let _ = write!(
            d,
            "{:o}\0{}\0{}\0{}.{:09}\0{}\0",
            self.mode, self.uid, self.gid, self.mtime, self.mtime_nsec, self.size
        );
        if let Some(digest) = sha256 {
            push_hex(&mut d, digest);
        }
        d.push(0);
        if let Some(link) = &self.link {
            d.extend_from_slice(link);
        }
        d.push(0);
        let _ = write!(
            d,
            "{}:{}\0{}\0",
            self.rdev_major,
            self.rdev_minor,
            self.xattrs.len()
        );
        for (name, value) in &self.xattrs {
            d.extend_from_slice(name);
            d.push(0);
            push_hex(&mut d, value);
            d.push(0);
        }
        d.extend_from_slice(delta::DeltaMark::describe(self.delta.as_ref()).as_bytes());
        d.push(b'\n');
        d
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    // Only ASCII hex digits were pushed.
    String::from_utf8(s).unwrap_or_default()
}

/// Appends lowercase hex of `bytes` (hot: three times per file exported).
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
}

/// Bytes from lowercase or uppercase hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One SHA256SUMS line, escaped as GNU sha256sum does for names with a
/// backslash or newline.
pub fn sums_line(sha256: &[u8; 32], path: &[u8]) -> Vec<u8> {
    let needs_escape = path.iter().any(|&b| b == b'\\' || b == b'\n' || b == b'\r');
    let mut line = Vec::with_capacity(path.len() + 68);
    if needs_escape {
        line.push(b'\\');
    }
    push_hex(&mut line, sha256);
    line.extend_from_slice(b"  ");
    for &b in path {
        match b {
            b'\\' if needs_escape => line.extend_from_slice(b"\\\\"),
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            _ => line.push(b),
        }
    }
    line.push(b'\n');
    line
}

/// A PAX `mtime`: a decimal number of seconds. A timespec counts its
/// nanoseconds forward from `sec`, so -1.25 s is (sec -2, nsec 750000000)
/// and must be written `-1.250000000`: `-2.750000000` means -2.75 s, and
/// GNU tar would restore a pre-1970 time off by up to a second.
pub fn pax_time(sec: i64, nsec: u32) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

/// Parses a PAX time (see `pax_time`) into a timespec; digits beyond the
/// nanosecond are dropped. `None` for anything but `[-]digits[.digits]`.
pub fn parse_pax_time(text: &str) -> Option<(i64, u32)> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) {
        return None;
    }
    let whole: i64 = int.parse().ok()?;
    let nsec: u32 = frac
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect::<String>()
        .parse()
        .ok()?;
    match (negative, nsec) {
        (false, _) => Some((whole, nsec)),
        (true, 0) => Some((-whole, 0)),
        (true, _) => Some((-whole - 1, 1_000_000_000 - nsec)),
    }
}

/// Feeds `n` zero bytes (a sparse file's holes) to a hasher.
pub fn hash_zeros(h: &mut Sha256, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// A running SHA-256 with a final hex result.
#[derive(Default, Clone)]
pub struct RunningDigest(Sha256);

impl RunningDigest {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Feeds `EntryMeta::describe(rel, ..)` given its tail, without
    /// building it.
    pub fn update_description(&mut self, kind: EntryKind, rel: &[u8], tail: &[u8]) {
        self.0.update([kind.tag(), 0]);
        self.0.update(rel);
        self.0.update([0]);
        self.0.update(tail);
    }
    pub fn hex(self) -> String {
        hex(&self.0.finalize())
    }
}

/// Where a bundle path belongs, per the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place<'a> {
    Header,
    Sums,
    Trailer,
    /// `containers/<id>` itself or a file under it.
    Container {
        id: &'a str,
        rel: &'a [u8],
    },
    /// `volumes/<name>` itself (the volume directory).
    VolumeDir {
        name: &'a str,
    },
    /// `volumes/<name>/opts.json`.
    VolumeOpts {
        name: &'a str,
    },
    /// `volumes/<name>/_data` (empty `rel`) or below it.
    VolumeData {
        name: &'a str,
        rel: &'a [u8],
    },
}

/// Why a bundle path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("absolute path")]
    Absolute,
    #[error("`..` or `.` component")]
    Traversal,
    #[error("empty path component")]
    Empty,
    #[error("not described by the header")]
    Undescribed,
}

/// The header's containers and volumes by ID and name: classifying each
/// entry by a scan of the header made `inspect --check` quadratic (80,000
/// volumes: 57 s).
pub struct HeaderIndex<'a> {
    header: &'a BundleHeader,
    containers: HashMap<&'a str, &'a BundleContainer>,
    volumes: HashMap<&'a str, &'a BundleVolume>,
}

impl<'a> HeaderIndex<'a> {
    pub fn new(header: &'a BundleHeader) -> HeaderIndex<'a> {
        HeaderIndex {
            header,
            containers: header
                .containers
                .iter()
                .map(|c| (c.id.as_str(), c))
                .collect(),
            volumes: header
                .volumes
                .iter()
                .map(|v| (v.name.as_str(), v))
                .collect(),
        }
    }

    pub fn header(&self) -> &'a BundleHeader {
        self.header
    }

    pub fn volume(&self, name: &str) -> Option<&'a BundleVolume> {
        self.volumes.get(name).copied()
    }
}

/// Classifies a bundle path (see `classify_in`).
pub fn classify<'a>(path: &'a [u8], header: &'a BundleHeader) -> Result<Place<'a>, PathError> {
    classify_in(path, &HeaderIndex::new(header))
}

/// Classifies a bundle path, refusing any that could escape its place.
///
/// # Security
/// Path traversal (CVE-2001-1267 style `../`, absolute names): every
/// component must be a plain name, and the first two must name a container
/// or volume the header lists, so nothing lands outside its own directory.
pub fn classify_in<'a>(path: &'a [u8], index: &HeaderIndex<'a>) -> Result<Place<'a>, PathError> {
    if path.first() == Some(&b'/') {
        return Err(PathError::Absolute);
    }
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" => return Err(PathError::Empty),
            b"." | b".." => return Err(PathError::Traversal),
            _ => {}
        }
    }
    match path {
        p if p == HEADER_PATH.as_bytes() => return Ok(Place::Header),
        p if p == SUMS_PATH.as_bytes() => return Ok(Place::Sums),
        p if p == TRAILER_PATH.as_bytes() => return Ok(Place::Trailer),
        _ => {}
    }
    let mut parts = path.splitn(3, |&b| b == b'/');
    let top = parts.next().unwrap_or_default();
    let name = std::str::from_utf8(parts.next().ok_or(PathError::Undescribed)?)
        .map_err(|_| PathError::Undescribed)?;
    let rest: &[u8] = parts.next().unwrap_or_default();
    match top {
        b"containers" => {
            let c = index.containers.get(name).ok_or(PathError::Undescribed)?;
            Ok(Place::Container {
                id: &c.id,
                rel: rest,
            })
        }
        b"volumes" => {
            let v = index.volume(name).ok_or(PathError::Undescribed)?;
            let name = v.name.as_str();
            if rest.is_empty() {
                Ok(Place::VolumeDir { name })
            } else if rest == b"opts.json" {
                Ok(Place::VolumeOpts { name })
            } else if rest == b"_data" {
                Ok(Place::VolumeData { name, rel: b"" })
            } else if let Some(rel) = rest.strip_prefix(b"_data/") {
                Ok(Place::VolumeData { name, rel })
            } else {
                Err(PathError::Undescribed)
            }
        }
        _ => Err(PathError::Undescribed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BundleHeader {
        BundleHeader {
            format: FORMAT.into(),
            tool: "t".into(),
            source_host: "h".into(),
            source_data_root: "/r".into(),
            containers: vec![BundleContainer {
                id: "abc".into(),
                name: "web".into(),
                mounts: vec![],
                checkpoint: None,
            }],
            volumes: vec![BundleVolume {
                name: "data1".into(),
                anonymous: false,
                record: None,
                opts_json: false,
                data: DataAttrs {
                    uid: 0,
                    gid: 0,
                    mode: "0755".into(),
                    mtime: 0,
                    mtime_nsec: 0,
                    xattrs: BTreeMap::new(),
                },
                device: None,
            }],
            userns: None,
            round: None,
        }
    }

    #[test]
    fn classifies_described_paths() {
        let h = header();
        assert_eq!(
            classify(b"volumes/data1/_data/a/b", &h),
            Ok(Place::VolumeData {
                name: "data1",
                rel: b"a/b"
            })
        );
        assert_eq!(
            classify(b"volumes/data1/_data", &h),
            Ok(Place::VolumeData {
                name: "data1",
                rel: b""
            })
        );
        assert_eq!(
            classify(b"volumes/data1/opts.json", &h),
            Ok(Place::VolumeOpts { name: "data1" })
        );
        assert_eq!(
            classify(b"volumes/data1", &h),
            Ok(Place::VolumeDir { name: "data1" })
        );
        assert_eq!(
            classify(b"containers/abc/config.v2.json", &h),
            Ok(Place::Container {
                id: "abc",
                rel: b"config.v2.json"
            })
        );
        assert_eq!(classify(HEADER_PATH.as_bytes(), &h), Ok(Place::Header));
    }

    #[test]
    fn refuses_escapes_and_undescribed_paths() {
        let h = header();
        assert_eq!(classify(b"/etc/passwd", &h), Err(PathError::Absolute));
        assert_eq!(
            classify(b"volumes/data1/_data/../../../etc", &h),
            Err(PathError::Traversal)
        );
        assert_eq!(
            classify(b"volumes/data1/_data/./x", &h),
            Err(PathError::Traversal)
        );
        assert_eq!(classify(b"volumes/data1//x", &h), Err(PathError::Empty));
        assert_eq!(
            classify(b"volumes/other/_data/x", &h),
            Err(PathError::Undescribed)
        );
        assert_eq!(
            classify(b"volumes/data1/evil", &h),
            Err(PathError::Undescribed)
        );
        assert_eq!(
            classify(b"containers/zzz/config.v2.json", &h),
            Err(PathError::Undescribed)
        );
        assert_eq!(classify(b"etc/cron.d/x", &h), Err(PathError::Undescribed));
        assert_eq!(
            classify(b"volumes/metadata.db", &h),
            Err(PathError::Undescribed)
        );
    }

    #[test]
    fn sums_lines_match_sha256sum() {
        let d = [0xab; 32];
        assert_eq!(
            sums_line(&d, b"a b"),
            format!("{}  a b\n", "ab".repeat(32)).into_bytes()
        );
        assert_eq!(
            sums_line(&d, b"a\nb"),
            format!("\\{}  a\\nb\n", "ab".repeat(32)).into_bytes()
        );
    }

    #[test]
    fn pax_times_count_pre_1970_fractions_backwards() {
        assert_eq!(pax_time(1_600_000_000, 5), "1600000000.000000005");
        assert_eq!(pax_time(-2, 750_000_000), "-1.250000000");
        assert_eq!(pax_time(-1, 1), "-0.999999999");
        assert_eq!(pax_time(-86_400, 0), "-86400.000000000");
        for (sec, nsec) in [(0, 0), (5, 1), (-2, 750_000_000), (-1, 1), (-86_400, 0)] {
            assert_eq!(parse_pax_time(&pax_time(sec, nsec)), Some((sec, nsec)));
        }
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("1.1234567891"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time("-0.5"), Some((-1, 500_000_000)));
        for bad in ["", "-", ".5", "1.-5", "+1", "1e3", "99999999999999999999"] {
            assert_eq!(parse_pax_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn checkpoint_names_are_single_plain_components() {
        for good in ["cp1", "pre-upgrade.2024_01", "A0"] {
            assert!(crate::dataroot::is_restricted_name(good), "{good}");
        }
        for bad in ["", "a", "..", ".x", "../x", "a/b", "-x", "a b", "é1"] {
            assert!(!crate::dataroot::is_restricted_name(bad), "{bad}");
        }
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(unhex(&hex(b"\x00\xff\x10")).unwrap(), b"\x00\xff\x10");
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
