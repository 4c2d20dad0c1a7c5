//! Undoing a delta's operations (`rollback`): in reverse, each undo step
//! checking what is there so that it can run again after a crash of its
//! own, then the volumes recorded as their base again.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use nix::fcntl::OFlag;

use super::{
    io_err, nix_err, num, open_dir, rename, restore_touched, stat_at, sync, At, Staging, Volumes,
};
use crate::dataroot::DataRoot;
use crate::import::delta::ops::{Added, Before, DeltaJournal, Op, OpKind};
use crate::manifest::CHUNK;

/// Undoes every operation in reverse, whatever part of them was done.
pub fn rollback(root: &DataRoot, staging: &Staging, journal: &DeltaJournal) -> Result<(), String> {
    // An added volume leaves `volumes/`; its operations built it in
    // staging, which goes with the import: nothing of them to undo.
    take_back_added(root, staging, &journal.added)?;
    let mut vols = Volumes::new(root, staging, &journal.added);
    for op in journal.ops.iter().rev().filter(|o| !journal.adds(&o.vol)) {
        undo_one(&mut vols, staging, op).map_err(|e| {
            format!(
                "undoing `{}`: {e}",
                crate::import::delta::base::shown(root, &op.vol, &op.rel())
            )
        })?;
    }
    for op in journal.ops.iter().rev().filter(|o| !journal.adds(&o.vol)) {
        if let (OpKind::Dir { .. }, Some(Before::InPlace { attrs, .. })) = (&op.kind, &op.before) {
            let dir = open_dir(&mut vols, op)?;
            attrs
                .restore(dir.file())
                .map_err(io_err(dir.path().display()))?;
        }
    }
    restore_touched(&mut vols, &journal.touched)?;
    sync(root)?;
    let changed: BTreeSet<&str> = journal
        .ops
        .iter()
        .filter(|o| !matches!(o.kind, OpKind::Opts) && !journal.adds(&o.vol))
        .map(|o| o.vol.as_str())
        .collect();
    for vol in changed {
        record_base_again(root, vol)?;
    }
    Ok(())
}

/// After a rollback, volume `vol` is its base again, but not by stat: an
/// entry moved aside and back, a file whose bytes or attributes were put
/// back, a directory whose mtime was, all have new ctimes, and the base
/// would refuse every delta as made for another target. Each entry of
/// the base is checked against the target (kind, size, mode, owner,
/// mtime: what the rollback restores) and recorded again with the
/// target's ctime and inode, beside the base, then renamed over it.
/// Idempotent: a crash meanwhile leaves the old base, or the new one,
/// and the journal still `applying`.
fn record_base_again(root: &DataRoot, vol: &str) -> Result<(), String> {
    use crate::manifest::{ManifestReader, ManifestWriter, Record, TreeDigest};
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.base_manifest(vol);
    let dir = root.bases_dir();
    let tmp = dir.join(format!(".{vol}.manifest.volmig-tmp"));
    let mut base = ManifestReader::open(&path).map_err(|e| e.to_string())?;
    let header = base.header().clone();
    match base.next().map_err(|e| e.to_string())? {
        Some(Record::Volume(v)) if v.volume == vol => {}
        _ => {
            return Err(format!(
                "`{}` does not describe volume `{vol}`",
                path.display()
            ))
        }
    }
    let wrote = (|| -> Result<(), String> {
        // A leftover of a killed run is replaced: we hold the import lock.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(tmp.display())(e)),
            _ => {}
        }
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(io_err(tmp.display()))?;
        let mut out = ManifestWriter::new(file, &tmp, &header).map_err(|e| e.to_string())?;
        out.volume(vol).map_err(|e| e.to_string())?;
        let mut walk = crate::import::base::walk::LandedWalk::open(&root.volume_data_dir(vol))
            .map_err(|e| e.to_string())?;
        let mut tree = TreeDigest::default();
        let not_back = |rel: &[u8], what: String| {
            format!(
                "`{}` is not as its base has it after the rollback: {what}",
                crate::import::delta::base::shown(root, vol, rel)
            )
        };
        while let Some(Record::Entry(mut e)) = base.next().map_err(|e| e.to_string())? {
            let Some(l) = walk.next().map_err(|e| e.to_string())? else {
                return Err(not_back(&e.path, "it is missing".into()));
            };
            if l.path != e.path {
                return Err(not_back(&l.path, "it is not in the base".into()));
            }
            if let Some(what) = l.differs(&e, false) {
                return Err(not_back(&l.path, what));
            }
            e.ctime = Some(l.ctime);
            e.ino = Some(l.ino);
            tree.add(&e);
            out.entry(&e).map_err(|e| e.to_string())?;
        }
        if let Some(l) = walk.next().map_err(|e| e.to_string())? {
            return Err(not_back(&l.path, "it is not in the base".into()));
        }
        out.end(vol, tree.entries(), &tree.hex())
            .map_err(|e| e.to_string())?;
        out.finish().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(io_err(path.display()))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir.display()))
    })();
    wrote.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn undo_one(vols: &mut Volumes<'_>, staging: &Staging, op: &Op) -> Result<(), String> {
    let Some(at) = vols.locate(op)? else {
        // Its directory is gone: undone already (an undo of a created
        // directory removes it after its entries).
        return Ok(());
    };
    let n = num(op.n);
    let now = stat_at(&at)?;
    let in_undo = std::fs::symlink_metadata(staging.undo_path(op.n)).is_ok();
    let old_ino = match op.before {
        Some(Before::Aside { ino }) => Some(ino),
        _ => None,
    };
    let put_back = |at: &At| -> Result<(), String> {
        if in_undo && old_ino.is_some() {
            rename((&staging.undo, &n), (at.parent.file(), &at.name))?;
        }
        Ok(())
    };
    match &op.kind {
        OpKind::Put | OpKind::Opts | OpKind::Link { .. } => {
            if let Some(st) = &now {
                if Some(st.st_ino) != old_ino {
                    if op.staged_ino.is_some() && Some(st.st_ino) == op.staged_ino {
                        rename((at.parent.file(), &at.name), (&staging.staged, &n))?;
                    } else {
                        nix::unistd::unlinkat(
                            Some(at.parent.file().as_raw_fd()),
                            at.name.as_c_str(),
                            nix::unistd::UnlinkatFlags::NoRemoveDir,
                        )
                        .map_err(nix_err("unlink"))?;
                    }
                } else {
                    return Ok(());
                }
            }
            put_back(&at)
        }
        OpKind::Delete => {
            if now.is_none() && in_undo {
                rename((&staging.undo, &n), (at.parent.file(), &at.name))?;
            }
            Ok(())
        }
        OpKind::Dir { .. } => {
            if matches!(op.before, Some(Before::InPlace { .. })) {
                return Ok(());
            }
            if let Some(st) = &now {
                if Some(st.st_ino) != old_ino && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    nix::unistd::unlinkat(
                        Some(at.parent.file().as_raw_fd()),
                        at.name.as_c_str(),
                        nix::unistd::UnlinkatFlags::RemoveDir,
                    )
                    .map_err(nix_err("rmdir"))?;
                } else {
                    return Ok(());
                }
            }
            put_back(&at)
        }
        OpKind::Patch { .. } => {
            let Some(Before::InPlace { attrs, size }) = &op.before else {
                return Ok(());
            };
            let file = at
                .parent
                .open_file(
                    Path::new(OsStr::from_bytes(at.name.as_bytes())),
                    OFlag::O_WRONLY,
                )
                .map_err(|e| e.to_string())?;
            restore_old_bytes(&file, *size, &staging.undo_path(op.n))?;
            attrs.restore(&file).map_err(io_err("a patched file"))
        }
    }
}

/// Puts back what `save_old_bytes` saved, at the old size.
fn restore_old_bytes(file: &File, old_size: u64, from: &Path) -> Result<(), String> {
    file.set_len(old_size).map_err(io_err("truncate"))?;
    let mut saved = io::BufReader::new(File::open(from).map_err(io_err(from.display()))?);
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let mut head = [0u8; 16];
        match saved.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", from.display())),
        }
        let off = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(head[8..].try_into().unwrap_or_default());
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            saved
                .read_exact(&mut buf[..n])
                .map_err(io_err(from.display()))?;
            file.write_all_at(&buf[..n], off + done)
                .map_err(io_err("write"))?;
            done += n as u64;
        }
    }
}

/// Takes each added volume back out of `volumes/` into staging, when it
/// is there and is the one this import made (by inode).
fn take_back_added(root: &DataRoot, staging: &Staging, added: &[Added]) -> Result<(), String> {
    for a in added {
        let at = root.volume_dir(&a.vol);
        let ours = std::fs::symlink_metadata(&at).is_ok_and(|m| m.ino() == a.ino);
        if ours && std::fs::symlink_metadata(staging.added_dir(&a.vol)).is_err() {
            std::fs::rename(&at, staging.added_dir(&a.vol)).map_err(io_err(at.display()))?;
        }
    }
    Ok(())
}
