//! Step 5 of a delta import: the new base of each volume (what the next
//! round's delta applies onto), written into `<staging>/bases/` while
//! what landed is checked against the tree the delta says it makes.
//!
//! Work proportional to the delta, not to the volume: the base merged
//! with the operations gives every entry of the new tree, but only what
//! the operations could have changed is looked at on the target:
//! - each entry an operation wrote, by its stat;
//! - each directory above an operation's path: its stat (its ctime moved,
//!   its mtime was put back) and its listing, which must name exactly the
//!   entries the tree has there (nothing left over, nothing missing);
//! - each entry sharing an inode with one an operation replaced, patched,
//!   deleted or linked to (its ctime and link count moved).
//!
//! Every other entry keeps the stat its base recorded: step 3 found the
//! target exactly so moments before, under volmig's lock. A change made
//! there meanwhile by another process is not missed for good: the next
//! round's check compares every entry, ctime and inode included, with
//! this base, and refuses a delta onto a target that moved.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::apply;
use super::base::{self, NewEntries};
use super::ops::{Before, DeltaJournal, Op, OpKind};
use crate::beneath::DirFd;
use crate::bundle::{BundleHeader, EntryKind};
use crate::dataroot::metadata::VolumeRecord;
use crate::dataroot::DataRoot;
use crate::import::base::walk::{self, Landed};
use crate::manifest::{self, Entry, ManifestHeader, ManifestWriter, TreeDigest};

/// The new base of each volume into `<staging>/bases/`: the expected
/// tree, entry by entry, with the stat of what landed where the delta
/// changed it (a file missing or changed fails the import, rolled back).
pub fn write_bases(
    root: &DataRoot,
    staging: &Path,
    header: &BundleHeader,
    journal: &DeltaJournal,
    new: &NewEntries,
    patch_chunks: &BTreeMap<u64, Vec<[u8; 32]>>,
    records: &BTreeMap<String, Option<VolumeRecord>>,
) -> Result<(), String> {
    let dir = staging.join("bases");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    for v in &header.volumes {
        let path = dir.join(format!("{}.manifest", v.name));
        let mut out = ManifestWriter::create(
            &path,
            &ManifestHeader {
                format: manifest::FORMAT.into(),
                chunk_size: manifest::CHUNK,
                bundle: journal.round.clone(),
                side: "target".into(),
                host: host.clone(),
                data_root: root.given().display().to_string(),
                record: records.get(&v.name).cloned().flatten(),
            },
        )
        .map_err(|e| e.to_string())?;
        out.volume(&v.name).map_err(|e| e.to_string())?;
        let ops: Vec<&Op> = journal.ops.iter().filter(|o| o.vol == v.name).collect();
        let data = DirFd::open(&root.volume_data_dir(&v.name)).map_err(|e| e.to_string())?;
        let mut landed = TouchedTree::new(root, &v.name, data, &ops)?;
        let mut tree = TreeDigest::default();
        base::merge_result(
            root,
            &v.name,
            journal.adds(&v.name),
            &ops,
            new,
            patch_chunks,
            &mut |mut e, written| {
                landed.check(&mut e, written)?;
                tree.add(&e);
                out.entry(&e).map_err(|e| e.to_string())
            },
        )?;
        landed.finish()?;
        out.end(&v.name, tree.entries(), &tree.hex())
            .map_err(|e| e.to_string())?;
        out.finish().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A directory of the target whose listing is being matched with the
/// tree's entries there.
struct Listing {
    rel: Vec<u8>,
    dir: DirFd,
    /// Names not met yet, in byte order.
    names: std::iter::Peekable<std::vec::IntoIter<CString>>,
}

impl Listing {
    /// The next name before `before` (to the end, with `None`) that is no
    /// socket: a bundle never carries one (export names and skips them),
    /// and neither does a base.
    fn extra(&mut self, before: Option<&[u8]>) -> Option<CString> {
        while let Some(n) = self
            .names
            .next_if(|n| before.is_none_or(|b| n.as_bytes() < b))
        {
            let socket = apply::stat_in(&self.dir, &n)
                .ok()
                .flatten()
                .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
            if !socket {
                return Some(n);
            }
        }
        None
    }
}

/// The target of one volume, looked at where the delta touched it.
struct TouchedTree<'a> {
    root: &'a DataRoot,
    vol: &'a str,
    data: DirFd,
    /// Every directory above an operation's path (`_data` itself is the
    /// empty path).
    above: BTreeSet<Vec<u8>>,
    /// Inodes whose other links moved with an operation, sorted.
    shared: Vec<u64>,
    /// The listings open, outermost first.
    open: Vec<Listing>,
}

impl<'a> TouchedTree<'a> {
    fn new(
        root: &'a DataRoot,
        vol: &'a str,
        data: DirFd,
        ops: &[&Op],
    ) -> Result<TouchedTree<'a>, String> {
        let mut above = BTreeSet::new();
        let mut shared = Vec::new();
        for op in ops {
            let rel = op.rel();
            match &op.kind {
                OpKind::Opts => continue,
                // Patched in place, or one more link: the inode stays,
                // found by its path now.
                OpKind::Patch { .. } => shared.extend(inode_at(&data, &rel)),
                OpKind::Link { target } => shared.extend(inode_at(&data, &base::rel_of(target))),
                _ => {}
            }
            if let Some(Before::Aside { ino }) = op.before {
                shared.push(ino);
            }
            let mut p = rel.as_slice();
            while let Some(parent) = parent_of(p) {
                if !above.insert(parent.to_vec()) {
                    break;
                }
                p = parent;
            }
        }
        shared.sort_unstable();
        shared.dedup();
        Ok(TouchedTree {
            root,
            vol,
            data,
            above,
            shared,
            open: Vec::new(),
        })
    }

    fn shown(&self, rel: &[u8]) -> String {
        base::shown(self.root, self.vol, rel)
    }

    fn left_over(&self, l: &Listing, name: &CString) -> String {
        let mut rel = l.rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        format!(
            "`{}` is on the target and not in the delta's tree",
            self.shown(&rel)
        )
    }

    /// Closes the listings `rel` is not in: each must be used up.
    fn close_until(&mut self, rel: &[u8]) -> Result<(), String> {
        while let Some(l) = self.open.last_mut() {
            if parent_of(rel).is_some_and(|p| within(p, &l.rel)) {
                return Ok(());
            }
            if let Some(name) = l.extra(None) {
                let l = self.open.pop().ok_or("no listing")?;
                return Err(self.left_over(&l, &name));
            }
            self.open.pop();
        }
        Ok(())
    }

    /// Checks entry `e` of the expected tree (`written`: by an operation)
    /// where the delta may have changed it, and gives it the stat that
    /// landed there.
    fn check(&mut self, e: &mut Entry, written: bool) -> Result<(), String> {
        self.close_until(&e.path)?;
        let (root, vol) = (self.root, self.vol);
        let shown = |rel: &[u8]| base::shown(root, vol, rel);
        let name = e.path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let listed = match (self.open.last_mut(), parent_of(&e.path)) {
            (Some(l), Some(p)) if l.rel == p => {
                if let Some(extra) = l.extra(Some(name)) {
                    return Err(self.left_over(self.open.last().ok_or("no listing")?, &extra));
                }
                if l.names.next_if(|n| n.as_bytes() == name).is_none() {
                    return Err(format!("`{}` did not land", shown(&e.path)));
                }
                true
            }
            _ => false,
        };
        let above = self.above.contains(&e.path);
        let shared = !written && e.ino.is_some_and(|i| self.shared.binary_search(&i).is_ok());
        if written && !listed && !e.path.is_empty() {
            // An operation's parent is always listed: a bug, not input.
            return Err(format!(
                "`{}` was written outside the delta's directories",
                shown(&e.path)
            ));
        }
        if !(written || above || shared) {
            return Ok(());
        }
        let st = match (listed, self.open.last()) {
            (true, Some(l)) => {
                let name =
                    CString::new(name).map_err(|_| format!("`{}`: a NUL byte", shown(&e.path)))?;
                apply::stat_in(&l.dir, &name)
            }
            _ => apply::stat_beneath(&self.data, &e.path),
        }
        .map_err(|err| format!("`{}`: {err}", shown(&e.path)))?
        .ok_or_else(|| format!("`{}` did not land", shown(&e.path)))?;
        let landed = Landed::of(e.path.clone(), &st);
        if let Some(what) = landed.differs(e, false) {
            return Err(format!(
                "`{}` did not land as the delta says: {what}",
                shown(&e.path)
            ));
        }
        e.ctime = Some(landed.ctime);
        e.ino = Some(landed.ino);
        if above && e.kind == EntryKind::Dir {
            let dir = match (listed, self.open.last()) {
                (true, Some(l)) => l.dir.open_dir(Path::new(OsStr::from_bytes(name))),
                _ if e.path.is_empty() => self.data.open_dir(Path::new(".")),
                _ => self.data.open_dir(Path::new(OsStr::from_bytes(&e.path))),
            }
            .map_err(|err| err.to_string())?;
            let names = walk::list(&dir).map_err(|err| format!("`{}`: {err}", shown(&e.path)))?;
            self.open.push(Listing {
                rel: e.path.clone(),
                dir,
                names: names.into_iter().peekable(),
            });
        }
        Ok(())
    }

    /// The tree ended: every listing left must be used up.
    fn finish(&mut self) -> Result<(), String> {
        while let Some(mut l) = self.open.pop() {
            if let Some(name) = l.extra(None) {
                return Err(self.left_over(&l, &name));
            }
        }
        Ok(())
    }
}

/// The directory a `_data`-relative path is in (`None` for `_data`).
fn parent_of(rel: &[u8]) -> Option<&[u8]> {
    if rel.is_empty() {
        return None;
    }
    Some(match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => &rel[..i],
        None => &[],
    })
}

/// Whether `rel` is `dir` or beneath it.
fn within(rel: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || rel == dir || (rel.starts_with(dir) && rel.get(dir.len()) == Some(&b'/'))
}

/// The inode at `rel` now, if there is one.
fn inode_at(data: &DirFd, rel: &[u8]) -> Option<u64> {
    apply::stat_beneath(data, rel)
        .ok()
        .flatten()
        .map(|st| st.st_ino)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A data-root with volume `v`: `a`, `sub/b`, `sub/c`, `far/l` (a
    /// hardlink of `a`).
    fn target() -> (tempfile::TempDir, DataRoot) {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("volumes/v/_data");
        fs::create_dir_all(data.join("sub")).unwrap();
        fs::create_dir_all(data.join("far")).unwrap();
        fs::write(data.join("a"), b"a").unwrap();
        fs::write(data.join("sub/b"), b"b").unwrap();
        fs::write(data.join("sub/c"), b"c").unwrap();
        fs::hard_link(data.join("a"), data.join("far/l")).unwrap();
        let root = DataRoot::open(t.path(), None).unwrap();
        (t, root)
    }

    /// The entry of `rel` as it is now.
    fn entry(root: &DataRoot, rel: &str) -> Entry {
        let m = fs::symlink_metadata(root.volume_data_dir("v").join(rel)).unwrap();
        Entry {
            path: rel.as_bytes().to_vec(),
            kind: match m.is_dir() {
                true => EntryKind::Dir,
                false => EntryKind::File,
            },
            size: if m.is_dir() { 0 } else { m.len() },
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec() as u32),
            ctime: Some((m.ctime(), m.ctime_nsec() as u32)),
            ino: Some(m.ino()),
            xattrs: None,
            content: None,
            link: None,
            rdev: None,
            chunks: Vec::new(),
        }
    }

    /// Puts the mtimes of `_data` and its directories back as `before`
    /// had them, as a delta's apply does.
    fn put_back(root: &DataRoot, before: &[Entry]) {
        for e in before.iter().filter(|e| e.kind == EntryKind::Dir) {
            let p = root
                .volume_data_dir("v")
                .join(std::str::from_utf8(&e.path).unwrap());
            let t = std::time::UNIX_EPOCH + std::time::Duration::new(e.mtime.0 as u64, e.mtime.1);
            fs::File::open(p).unwrap().set_modified(t).unwrap();
        }
    }

    /// Checks the tree `a`, `far`, `far/l`, `sub`, `sub/b`, `sub/c` with
    /// `ops` written, the entries as `before` had them.
    fn check(root: &DataRoot, ops: &[Op], before: &[Entry]) -> Result<Vec<Entry>, String> {
        put_back(root, before);
        let data = DirFd::open(&root.volume_data_dir("v")).unwrap();
        let ops: Vec<&Op> = ops.iter().collect();
        let mut landed = TouchedTree::new(root, "v", data, &ops)?;
        let mut out = Vec::new();
        for e in before {
            let mut e = e.clone();
            let written = ops.iter().any(|o| o.rel() == e.path);
            landed.check(&mut e, written)?;
            out.push(e);
        }
        landed.finish()?;
        Ok(out)
    }

    const TREE: [&str; 7] = ["", "a", "far", "far/l", "sub", "sub/b", "sub/c"];

    #[test]
    fn what_an_operation_wrote_gets_its_new_stat_and_the_rest_keeps_the_base() {
        let (_t, root) = target();
        let before: Vec<Entry> = TREE.iter().map(|r| entry(&root, r)).collect();
        // `sub/b` rewritten (a new inode), as a Put would.
        let data = root.volume_data_dir("v");
        fs::remove_file(data.join("sub/b")).unwrap();
        fs::write(data.join("sub/b"), b"b").unwrap();
        // What the delta says it is (its stat is the source's).
        let mut expected = before.clone();
        expected[5] = Entry {
            ctime: None,
            ino: None,
            ..entry(&root, "sub/b")
        };
        let op = Op::new("v", b"sub/b", 1, OpKind::Put);
        let after = check(&root, &[op], &expected).unwrap();
        assert_eq!(after[5], entry(&root, "sub/b"), "the new stat is recorded");
        // `sub` and `_data` are above it: their stat is taken again.
        assert_eq!(after[4].ctime, entry(&root, "sub").ctime);
        assert_ne!(after[4].ctime, before[4].ctime);
        // `far/l` is in a directory no operation touched: the base's stat.
        assert_eq!(after[3], before[3]);
    }

    #[test]
    fn an_entry_left_over_in_a_touched_directory_fails_the_check() {
        let (_t, root) = target();
        let before: Vec<Entry> = TREE.iter().map(|r| entry(&root, r)).collect();
        fs::write(root.volume_data_dir("v").join("sub/intruder"), b"x").unwrap();
        let op = Op::new("v", b"sub/b", 1, OpKind::Put);
        let err = check(&root, &[op], &before).unwrap_err();
        assert!(
            err.contains("sub/intruder") && err.contains("not in the delta's tree"),
            "{err}"
        );
        // Last in its directory: found when the listing closes.
        fs::remove_file(root.volume_data_dir("v").join("sub/intruder")).unwrap();
        fs::write(root.volume_data_dir("v").join("sub/zz"), b"x").unwrap();
        let op = Op::new("v", b"sub/b", 1, OpKind::Put);
        let err = check(&root, &[op], &before).unwrap_err();
        assert!(err.contains("sub/zz"), "{err}");
    }

    #[test]
    fn a_socket_in_a_touched_directory_is_passed_over_as_bases_do() {
        let (_t, root) = target();
        let before: Vec<Entry> = TREE.iter().map(|r| entry(&root, r)).collect();
        let _s = std::os::unix::net::UnixListener::bind(root.volume_data_dir("v").join("sub/s"))
            .unwrap();
        let op = Op::new("v", b"sub/b", 1, OpKind::Put);
        check(&root, &[op], &before).unwrap();
    }

    #[test]
    fn an_entry_missing_or_changed_where_the_delta_wrote_fails_the_check() {
        let (_t, root) = target();
        let before: Vec<Entry> = TREE.iter().map(|r| entry(&root, r)).collect();
        let data = root.volume_data_dir("v");
        // An untouched sibling gone from a touched directory.
        fs::remove_file(data.join("sub/c")).unwrap();
        let op = Op::new("v", b"sub/b", 1, OpKind::Put);
        let err = check(&root, &[op], &before).unwrap_err();
        assert!(
            err.contains("sub/c") && err.contains("did not land"),
            "{err}"
        );
        // What the operation wrote, not as the delta says.
        fs::write(data.join("sub/c"), b"c").unwrap();
        let mut expected = before.clone();
        expected[6] = entry(&root, "sub/c");
        fs::write(data.join("sub/b"), b"longer").unwrap();
        let op = Op::new("v", b"sub/b", 1, OpKind::Put);
        let err = check(&root, &[op], &expected).unwrap_err();
        assert!(
            err.contains("sub/b") && err.contains("bytes on disk"),
            "{err}"
        );
    }

    #[test]
    fn a_link_in_an_untouched_directory_of_an_inode_moved_aside_is_stat_again() {
        let (_t, root) = target();
        let before: Vec<Entry> = TREE.iter().map(|r| entry(&root, r)).collect();
        let data = root.volume_data_dir("v");
        // `a` replaced: its old inode, which `far/l` shares, moved aside.
        let old = before[1].ino.unwrap();
        fs::rename(data.join("a"), root.path().join("aside")).unwrap();
        fs::write(data.join("a"), b"a").unwrap();
        let mut expected = before.clone();
        expected[1] = entry(&root, "a");
        let mut op = Op::new("v", b"a", 1, OpKind::Put);
        op.before = Some(Before::Aside { ino: old });
        let after = check(&root, &[op], &expected).unwrap();
        assert_eq!(after[3].ctime, entry(&root, "far/l").ctime);
        assert_ne!(
            after[3].ctime, before[3].ctime,
            "the rename moved its ctime"
        );
    }

    #[test]
    fn parents_and_containment() {
        assert_eq!(parent_of(b""), None);
        assert_eq!(parent_of(b"a"), Some(&b""[..]));
        assert_eq!(parent_of(b"a/b/c"), Some(&b"a/b"[..]));
        assert!(within(b"a/b", b""));
        assert!(within(b"a/b", b"a"));
        assert!(within(b"a", b"a"));
        assert!(!within(b"ab", b"a"));
        assert!(!within(b"a", b"a/b"));
    }
}
