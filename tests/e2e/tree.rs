//! A tree compare on every attribute a volume carries: type, mode (with
//! setuid/setgid/sticky), uid/gid, mtime to the nanosecond, size, content,
//! symlink target, device number, xattrs (incl. POSIX ACLs and
//! security.capability), sparseness, and hardlink structure.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest, Sha256};

/// What is compared of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, i64),
    pub size: u64,
    pub content: Option<String>,
    pub link: Option<OsString>,
    pub rdev: u64,
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
    /// A large file with far fewer blocks than bytes.
    pub sparse: bool,
    pub nlink: u64,
    /// For a file with several links: the first of its paths (sorted).
    pub link_group: Option<OsString>,
}

/// Every path below `root` (and `root` itself as ""), by relative path bytes.
pub type Tree = BTreeMap<OsString, Attrs>;

pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<OsString>> = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.unwrap_or_else(|e| panic!("walking {}: {e}", root.display()));
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().as_os_str().to_os_string();
        let md = fs::symlink_metadata(path).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_fifo() {
            "fifo"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_socket() {
            "socket"
        } else {
            "other"
        };
        let content = ft.is_file().then(|| content_digest(path, md.size()));
        if !ft.is_dir() && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .push(rel.clone());
        }
        tree.insert(
            rel.clone(),
            Attrs {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: (md.mtime(), md.mtime_nsec()),
                size: if ft.is_dir() { 0 } else { md.size() },
                content,
                link: ft
                    .is_symlink()
                    .then(|| fs::read_link(path).unwrap().into_os_string()),
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    md.rdev()
                } else {
                    0
                },
                xattrs: xattrs(path),
                sparse: ft.is_file() && md.size() >= 1 << 20 && md.blocks() * 512 < md.size() / 2,
                nlink: if ft.is_dir() { 0 } else { md.nlink() },
                link_group: None,
            },
        );
    }
    for paths in inodes.values() {
        let first = paths.iter().min().unwrap().clone();
        for p in paths {
            tree.get_mut(p).unwrap().link_group = Some(first.clone());
        }
    }
    tree
}

/// SHA-256 of a file's bytes, where runs of zeros (holes or written zeros,
/// in 4 KiB blocks) count by position only: equal for equal contents
/// whatever the allocation, and fast on large sparse files (holes are
/// skipped with SEEK_DATA/SEEK_HOLE, not read).
fn content_digest(path: &Path, size: u64) -> String {
    const BLOCK: usize = 4096;
    let mut f = fs::File::open(path).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut h = Sha256::new();
    h.update(size.to_le_bytes());
    let mut buf = vec![0u8; BLOCK];
    let mut pos: u64 = 0;
    while pos < size {
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            break; // only a hole is left
        }
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { size } else { hole as u64 };
        let mut off = data as u64;
        f.seek(SeekFrom::Start(off)).unwrap();
        while off < end {
            let want = BLOCK.min((end - off) as usize);
            f.read_exact(&mut buf[..want]).unwrap();
            if buf[..want].iter().any(|&b| b != 0) {
                h.update(off.to_le_bytes());
                h.update(&buf[..want]);
            }
            off += want as u64;
        }
        pos = end;
    }
    format!("{:x}", h.finalize())
}

/// Every extended attribute of `path` (not following a symlink).
pub fn xattrs(path: &Path) -> BTreeMap<OsString, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut out = BTreeMap::new();
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n <= 0 {
        return out;
    }
    let mut names = vec![0u8; n as usize];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    names.truncate(n as usize);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        assert!(len >= 0, "lgetxattr {} {:?}", path.display(), cname);
        let mut value = vec![0u8; len as usize];
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        value.truncate(len.max(0) as usize);
        out.insert(OsString::from_vec(name.to_vec()), value);
    }
    out
}

/// Every difference between two snapshots, one line each ("" when equal).
pub fn diff(expected: &Tree, actual: &Tree) -> String {
    let mut out = String::new();
    for (path, a) in expected {
        let show = Path::new(path).display();
        match actual.get(path) {
            None => writeln!(out, "missing: {show:?} ({})", a.kind).unwrap(),
            Some(b) if a != b => {
                let mut fields = Vec::new();
                macro_rules! cmp {
                    ($f:ident) => {
                        if a.$f != b.$f {
                            fields.push(format!("{}: {:?} -> {:?}", stringify!($f), a.$f, b.$f));
                        }
                    };
                }
                cmp!(kind);
                if a.mode != b.mode {
                    fields.push(format!("mode: {:o} -> {:o}", a.mode, b.mode));
                }
                cmp!(uid);
                cmp!(gid);
                cmp!(mtime);
                cmp!(size);
                cmp!(content);
                cmp!(link);
                cmp!(rdev);
                cmp!(xattrs);
                cmp!(sparse);
                cmp!(nlink);
                cmp!(link_group);
                writeln!(out, "differs: {show:?}: {}", fields.join("; ")).unwrap();
            }
            Some(_) => {}
        }
    }
    for (path, b) in actual {
        if !expected.contains_key(path) {
            writeln!(
                out,
                "unexpected: {:?} ({})",
                Path::new(path).display(),
                b.kind
            )
            .unwrap();
        }
    }
    out
}
