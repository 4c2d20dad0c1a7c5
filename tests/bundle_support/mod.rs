//! Shared by the `bundle_*` tests: snapshots of trees with every attribute
//! a migration must carry, their comparison (hardlink structure included),
//! shell pipelines around the binary, and raw tar surgery to turn a valid
//! bundle into a hostile one that reaches exactly the check under test.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use sha2::{Digest, Sha256};

use volmig::bundle::{
    sums_line, BundleHeader, EntryKind, EntryMeta, Trailer, VolumeSummary, SUMS_PATH, TRAILER_PATH,
};
use volmig::dataroot::metadata::{write_records, VolumeRecord};

use crate::common::{volume_mount, FakeDataRoot};

/// A container ID as dockerd makes them (the reader wants 64 hex digits).
pub const APP_ID: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
pub const DB_ID: &str = "d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2d2";

/// One path of a tree: everything that must arrive unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub size: u64,
    /// A regular file's content, byte for byte.
    pub content: Option<Content>,
    /// A symlink's target, byte for byte.
    pub link: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A tree: relative path (bytes, "" for the root) -> node, plus the inode
/// of each path (for the hardlink structure).
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Node>,
    pub inodes: BTreeMap<Vec<u8>, (u64, u64)>,
}

/// File content compared byte for byte (the trees here are a few MiB,
/// and hashing them in a debug build would cost more than the import),
/// shown by its length and first bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Content(pub Vec<u8>);

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = &self.0[..self.0.len().min(16)];
        write!(
            f,
            "{} bytes {:?}...",
            self.0.len(),
            String::from_utf8_lossy(head)
        )
    }
}

/// Walks `root` without following symlinks and records every attribute.
pub fn tree(root: &Path) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).follow_links(false) {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let m = fs::symlink_metadata(e.path()).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_file() {
            'f'
        } else if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_fifo() {
            'p'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            's'
        };
        let node = Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            size: if kind == 'f' { m.size() } else { 0 },
            content: (kind == 'f').then(|| Content(fs::read(e.path()).unwrap())),
            link: (kind == 'l').then(|| {
                fs::read_link(e.path())
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            rdev: if kind == 'c' || kind == 'b' {
                m.rdev()
            } else {
                0
            },
            xattrs: volmig::fileattrs::read_xattrs(e.path()).unwrap(),
        };
        inodes.insert(rel.clone(), (m.dev(), m.ino()));
        nodes.insert(rel, node);
    }
    Tree { nodes, inodes }
}

impl Tree {
    /// Sets of paths sharing one inode (only those with more than one).
    pub fn hardlink_groups(&self) -> BTreeSet<BTreeSet<Vec<u8>>> {
        let mut by_inode: BTreeMap<(u64, u64), BTreeSet<Vec<u8>>> = BTreeMap::new();
        for (path, ino) in &self.inodes {
            if self.nodes[path].kind != 'd' {
                by_inode.entry(*ino).or_default().insert(path.clone());
            }
        }
        by_inode.into_values().filter(|g| g.len() > 1).collect()
    }

    pub fn get(&self, rel: &[u8]) -> &Node {
        self.nodes
            .get(rel)
            .unwrap_or_else(|| panic!("no `{}` in the tree", String::from_utf8_lossy(rel)))
    }
}

/// Asserts two trees are equal on every attribute, naming each difference.
pub fn assert_same_tree(source: &Path, target: &Path) {
    let a = tree(source);
    let b = tree(target);
    let mut diffs = Vec::new();
    for (path, na) in &a.nodes {
        let show = String::from_utf8_lossy(path);
        match b.nodes.get(path) {
            None => diffs.push(format!("`{show}` missing in the target")),
            Some(nb) if nb != na => {
                diffs.push(format!("`{show}`:\n  source {na:?}\n  target {nb:?}"))
            }
            Some(_) => {}
        }
    }
    for path in b.nodes.keys().filter(|p| !a.nodes.contains_key(*p)) {
        diffs.push(format!(
            "`{}` only in the target",
            String::from_utf8_lossy(path)
        ));
    }
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n{}",
        target.display(),
        source.display(),
        diffs.join("\n")
    );
    assert_eq!(
        a.hardlink_groups(),
        b.hardlink_groups(),
        "hardlink structure differs"
    );
}

/// Everything under a data-root except the root directory's own mtime
/// (creating and removing `volmig-staging` beside `volumes/` touches it).
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut t = tree(root).nodes;
    if let Some(n) = t.get_mut(&b""[..]) {
        n.mtime = 0;
        n.mtime_nsec = 0;
    }
    t
}

/// Asserts a refused import left the target as it was: same snapshot, no
/// staging directory, no new volume directory.
pub fn assert_unchanged(root: &Path, before: &BTreeMap<Vec<u8>, Node>) {
    assert!(
        !root.join("volmig-staging").exists(),
        "volmig-staging left behind in {}",
        root.display()
    );
    let after = snapshot(root);
    let added: Vec<String> = after
        .keys()
        .filter(|k| !before.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(added.is_empty(), "new paths in the target: {added:?}");
    for (k, v) in before {
        assert_eq!(
            after.get(k),
            Some(v),
            "`{}` changed in the target",
            String::from_utf8_lossy(k)
        );
    }
}

/// The binary under test, for shell pipelines.
pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("volmig")
}

/// Runs `sh -c script` and returns its output.
pub fn sh(script: &str) -> Output {
    std::process::Command::new("sh")
        // No installed dockerd: predictions are for `current`, as in `volmig()`.
        .env("VOLMIG_DOCKERD", "")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap()
}

/// Single-quotes a path for `sh`.
pub fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a file with a given mtime.
pub fn write_at(path: &Path, content: &[u8], mtime: (i64, u32)) {
    fs::write(path, content).unwrap();
    volmig::fileattrs::set_mtime(path, mtime.0, mtime.1).unwrap();
}

/// A source with two containers: `app` mounting volumes `appdata` and
/// `shared` (opts.json, labels), and `db` mounting `pgdata` (999:999 0700)
/// and `shared`. Small, so hostile and policy tests run fast.
pub fn small_source() -> FakeDataRoot {
    let mut src = FakeDataRoot::new();
    let root = src.path();
    src.volume(
        "appdata",
        &[
            ("com.docker.compose.project", "shop"),
            ("com.docker.compose.volume", "appdata"),
        ],
    )
    .volume("shared", &[("tier", "cache")])
    .volume("pgdata", &[])
    .opts_json(
        "shared",
        r#"{"MountType":"tmpfs","MountOpts":"size=1m","MountDevice":"tmpfs","Quota":{"Size":0}}"#,
    )
    .container(
        APP_ID,
        "app",
        &[
            volume_mount("appdata", "/data", &root),
            volume_mount("shared", "/cache", &root),
        ],
    )
    .container(
        DB_ID,
        "db",
        &[
            volume_mount("pgdata", "/var/lib/postgresql/data", &root),
            volume_mount("shared", "/cache", &root),
        ],
    )
    .write_db();
    // dockerd records the create options beside the labels.
    let record = |name: &str, labels: &[(&str, &str)], options: &[(&str, &str)]| {
        let map = |kv: &[(&str, &str)]| {
            Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            labels: map(labels),
            options: map(options),
        }
    };
    write_records(
        &root.join("volumes/metadata.db"),
        &[
            record(
                "appdata",
                &[
                    ("com.docker.compose.project", "shop"),
                    ("com.docker.compose.volume", "appdata"),
                ],
                &[],
            ),
            record(
                "shared",
                &[("tier", "cache")],
                &[("type", "tmpfs"), ("o", "size=1m"), ("device", "tmpfs")],
            ),
            record("pgdata", &[], &[]),
        ],
    )
    .unwrap();
    let v = root.join("volumes");
    let opts = v.join("shared/opts.json");
    fs::set_permissions(&opts, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    write_at(
        &v.join("appdata/_data/a.txt"),
        b"alpha\n",
        (1_600_000_000, 1),
    );
    write_at(
        &v.join("appdata/_data/b.txt"),
        b"bravo\n",
        (1_600_000_000, 2),
    );
    fs::create_dir(v.join("appdata/_data/sub")).unwrap();
    write_at(
        &v.join("appdata/_data/sub/c.txt"),
        &vec![b'c'; 3000],
        (1_600_000_000, 3),
    );
    write_at(
        &v.join("shared/_data/s.txt"),
        b"shared\n",
        (1_600_000_000, 4),
    );
    write_at(
        &v.join("pgdata/_data/PG_VERSION"),
        b"16\n",
        (1_600_000_000, 5),
    );
    let pg = v.join("pgdata/_data");
    for p in [pg.join("PG_VERSION"), pg.clone()] {
        std::os::unix::fs::lchown(&p, Some(999), Some(999)).unwrap();
    }
    fs::set_permissions(&pg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    src
}

/// Exports `containers` of `src` to `out` (extra args before `-o`).
pub fn export_to(src: &FakeDataRoot, containers: &[&str], extra: &[&str], out: &Path) {
    let o = src
        .volmig()
        .arg("export")
        .args(containers)
        .args(extra)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "export failed: {}", stderr(&o));
}

/// An empty target data-root (`volumes/` and `containers/` only).
pub fn empty_target() -> FakeDataRoot {
    FakeDataRoot::new()
}

// ---------------------------------------------------------------------
// Tar surgery: a bundle as a list of entries that can be edited and
// written back as a standard PAX tar.

/// One logical entry: its resolved path and link, the ustar header as read,
/// its other PAX records (mtime, xattrs, sparse keys) and its raw data.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub header: tar::Header,
    pub pax: Vec<(String, Vec<u8>)>,
    pub data: Vec<u8>,
}

impl RawEntry {
    /// A plain file entry (mode 0644, owner root, mtime 0).
    pub fn file(path: &[u8], data: &[u8]) -> RawEntry {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        RawEntry {
            path: path.to_vec(),
            link: None,
            header: h,
            pax: Vec::new(),
            data: data.to_vec(),
        }
    }

    pub fn dir(path: &[u8]) -> RawEntry {
        let mut e = RawEntry::file(path, b"");
        e.header.set_entry_type(tar::EntryType::Directory);
        e.header.set_mode(0o755);
        e
    }

    pub fn symlink(path: &[u8], target: &[u8]) -> RawEntry {
        let mut e = RawEntry::file(path, b"");
        e.header.set_entry_type(tar::EntryType::Symlink);
        e.header.set_mode(0o777);
        e.link = Some(target.to_vec());
        e
    }

    pub fn hardlink(path: &[u8], target: &[u8]) -> RawEntry {
        let mut e = RawEntry::file(path, b"");
        e.header.set_entry_type(tar::EntryType::Link);
        e.link = Some(target.to_vec());
        e
    }
}

/// Splits a (raw, uncompressed) bundle into its entries.
pub fn parse_entries(bytes: &[u8]) -> Vec<RawEntry> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let mut pax = Vec::new();
        let mut path = e.path_bytes().into_owned();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                let key = x.key().unwrap().to_string();
                if key == "path" || key == "linkpath" || key == "hdrcharset" {
                    continue;
                }
                if key == "GNU.sparse.name" {
                    path = x.value_bytes().to_vec();
                }
                pax.push((key, x.value_bytes().to_vec()));
            }
        }
        let link = e.link_name_bytes().map(|l| l.into_owned());
        let header = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(RawEntry {
            path,
            link,
            header,
            pax,
            data,
        });
    }
    out
}

fn pax_block(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (key, value) in records {
        let rest = 3 + key.len() + value.len();
        let mut len = rest + 1;
        while len.to_string().len() + rest > len {
            len += 1;
        }
        data.extend_from_slice(format!("{len} {key}=").as_bytes());
        data.extend_from_slice(value);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.as_ustar_mut().unwrap().name[..9].copy_from_slice(b"PaxHeader");
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// Writes entries back as a PAX tar: paths and link names go raw into the
/// ustar fields when they fit, else into PAX records (no validation at
/// all: hostile names are the point).
pub fn write_entries(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = e.header.clone();
        let mut pax = e.pax.clone();
        let sparse = pax.iter().any(|(k, _)| k == "GNU.sparse.name");
        {
            let u = h.as_ustar_mut().unwrap();
            u.name = [0; 100];
            u.prefix = [0; 155];
            u.linkname = [0; 100];
            let shown: &[u8] = if sparse {
                b"GNUSparseFile.0/x"
            } else {
                &e.path
            };
            if shown.len() <= 100 {
                u.name[..shown.len()].copy_from_slice(shown);
            } else {
                u.name.copy_from_slice(&shown[..100]);
                pax.push(("path".into(), e.path.clone()));
            }
            if let Some(link) = &e.link {
                if link.len() <= 100 {
                    u.linkname[..link.len()].copy_from_slice(link);
                } else {
                    pax.push(("linkpath".into(), link.clone()));
                }
            }
        }
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        if !pax.is_empty() {
            out.extend_from_slice(&pax_block(&pax));
        }
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Index of the entry with this path.
pub fn position(entries: &[RawEntry], path: &[u8]) -> usize {
    entries
        .iter()
        .position(|e| e.path == path)
        .unwrap_or_else(|| panic!("no entry `{}`", String::from_utf8_lossy(path)))
}

/// Where to insert an entry that sorts after every `_data` entry of
/// `volume` (names starting with `zz`): just before its opts.json, or its
/// next sibling.
pub fn after_data_of(entries: &[RawEntry], volume: &str) -> usize {
    let prefix = format!("volumes/{volume}/_data");
    entries
        .iter()
        .rposition(|e| e.path.starts_with(prefix.as_bytes()))
        .unwrap()
        + 1
}

pub fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Describes `e` as the reader does (path, kind, mode, owner, mtime, size,
/// link, device, xattrs, sparse map) and returns it with the digest of its
/// logical content (regular files only).
fn describe_entry(e: &RawEntry) -> (EntryMeta, Option<[u8; 32]>) {
    let h = &e.header;
    let kind = EntryKind::from_tar_type(h.entry_type())
        .unwrap_or_else(|| panic!("entry type {:?}", h.entry_type()));
    let pax = |key: &str| {
        e.pax
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    let (mtime, mtime_nsec) = match pax("mtime") {
        Some(t) => volmig::bundle::parse_pax_time(&t).unwrap(),
        None => (h.mtime().unwrap() as i64, 0),
    };
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = e
        .pax
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("SCHILY.xattr.")
                .map(|n| (n.as_bytes().to_vec(), v.clone()))
        })
        .collect();
    xattrs.sort();
    let mut path = e.path.clone();
    if path.len() > 1 && path.last() == Some(&b'/') {
        path.pop();
    }
    let mut meta = EntryMeta {
        path,
        kind,
        mode: h.mode().unwrap() & 0o7777,
        uid: h.uid().unwrap() as u32,
        gid: h.gid().unwrap() as u32,
        mtime,
        mtime_nsec,
        size: if kind == EntryKind::File {
            e.data.len() as u64
        } else {
            0
        },
        link: e.link.clone(),
        rdev_major: h.device_major().ok().flatten().unwrap_or(0),
        rdev_minor: h.device_minor().ok().flatten().unwrap_or(0),
        xattrs,
        sparse: None,
        delta: None,
    };
    if kind != EntryKind::File {
        return (meta, None);
    }
    let Some(real) = pax("GNU.sparse.realsize") else {
        return (meta, Some(Sha256::digest(&e.data).into()));
    };
    // GNU sparse 1.0: decimal map padded to 512 bytes, then the data.
    let text = String::from_utf8_lossy(&e.data);
    let mut numbers = text.split('\n').map(|n| n.parse::<u64>());
    let count = numbers.next().unwrap().unwrap();
    let segments: Vec<(u64, u64)> = (0..count)
        .map(|_| {
            (
                numbers.next().unwrap().unwrap(),
                numbers.next().unwrap().unwrap(),
            )
        })
        .collect();
    let map_len = 2 * count as usize + 1;
    let map_bytes: usize = text.split('\n').take(map_len).map(|l| l.len() + 1).sum();
    let mut data = &e.data[map_bytes.div_ceil(512) * 512..];
    let mut h = Sha256::new();
    let mut pos = 0u64;
    for &(off, len) in &segments {
        h.update(vec![0u8; (off - pos) as usize]);
        h.update(&data[..len as usize]);
        data = &data[len as usize..];
        pos = off + len;
    }
    meta.size = real.parse().unwrap();
    h.update(vec![0u8; (meta.size - pos) as usize]);
    meta.sparse = Some(segments);
    (meta, Some(h.finalize().into()))
}

/// Rewrites SHA256SUMS and the trailer so that they match the entries:
/// a hostile bundle that only the streaming checks can stop, as an
/// attacker who computes digests would write it.
pub fn reseal(entries: &mut [RawEntry]) {
    let header: BundleHeader = serde_json::from_slice(&entries[0].data).unwrap();
    let sums_at = position(entries, SUMS_PATH.as_bytes());
    let trailer_at = position(entries, TRAILER_PATH.as_bytes());
    let mut sums = Vec::new();
    let mut all = Sha256::new();
    let (mut count, mut files, mut bytes) = (0u64, 0u64, 0u64);
    let mut volumes: BTreeMap<String, (Sha256, VolumeSummary)> = header
        .volumes
        .iter()
        .map(|v| (v.name.clone(), (Sha256::new(), VolumeSummary::default())))
        .collect();
    for e in &entries[1..sums_at] {
        let (meta, digest) = describe_entry(e);
        count += 1;
        all.update(meta.describe(&meta.path, digest.as_ref()));
        if let Some(d) = &digest {
            files += 1;
            bytes += meta.size;
            sums.extend_from_slice(&sums_line(d, &meta.path));
        }
        for (name, (h, s)) in volumes.iter_mut() {
            let base = format!("volumes/{name}");
            let inside = meta.path == base.as_bytes()
                || meta.path.starts_with(format!("{base}/").as_bytes());
            if !inside {
                continue;
            }
            let rel_start = (base.len() + 1).min(meta.path.len());
            h.update(meta.describe(&meta.path[rel_start..], digest.as_ref()));
            s.entries += 1;
            if digest.is_some() {
                s.files += 1;
                s.bytes += meta.size;
            }
        }
    }
    let hex = |d: &[u8]| volmig::bundle::hex(d);
    let trailer = Trailer {
        format: volmig::bundle::FORMAT.into(),
        entries: count,
        files,
        bytes,
        header_sha256: hex(&Sha256::digest(&entries[0].data)),
        sums_sha256: hex(&Sha256::digest(&sums)),
        entries_sha256: hex(&all.finalize()),
        volumes: volumes
            .into_iter()
            .map(|(name, (h, mut s))| {
                s.digest = hex(&h.finalize());
                (name, s)
            })
            .collect(),
        trees: None,
    };
    entries[sums_at].data = sums;
    entries[trailer_at].data = serde_json::to_vec_pretty(&trailer).unwrap();
}

/// Debian's strace, for the fault-injection tests (scripts/test installs it).
pub fn strace() -> PathBuf {
    let path = PathBuf::from("/usr/bin/strace");
    assert!(
        path.exists(),
        "strace is needed for the fault-injection tests: apt-get install strace (scripts/test does)"
    );
    path
}
