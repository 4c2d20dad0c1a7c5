//! What landed on disk is what the bundle described: staging records an
//! order-independent fingerprint (`TreePrint`) of every entry it writes,
//! and `check` compares it with a walk of the staged trees (the staging
//! directory, and bind volumes' data staged beside their targets) before
//! the commit. Files deleted, added or truncated under staging by another
//! process are caught here: the digests were checked on the stream, not
//! on the disk.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::stage::BindPlan;
use crate::bundle::reader::ReadError;
use crate::bundle::EntryKind;

/// Checks that the staged tree holds exactly the entries written, each
/// with its size: files deleted, added or truncated under staging by
/// another process between staging and commit are caught here (the
/// digests were checked on the stream, not on the disk).
pub(super) fn check(
    dir: &Path,
    binds: &BTreeMap<String, BindPlan>,
    written: &TreePrint,
) -> Result<(), ReadError> {
    let mut found = TreePrint::default();
    for sub in ["volumes", "containers"] {
        add_tree(&mut found, &dir.join(sub), 1, |rel| {
            Path::new(sub).join(rel).as_os_str().as_bytes().to_vec()
        })?;
    }
    for (name, bind) in binds {
        let Some(staged) = &bind.staged else { continue };
        add_tree(&mut found, staged, 0, |rel| {
            super::bind::bundle_path(name, rel)
        })?;
    }
    if &found != written {
        return Err(ReadError::Visitor(format!(
            "the staged tree `{}` differs from the bundle ({} entries written, {} found): something changed the staging directory during the import; nothing was committed, run the import again",
            dir.display(),
            written.entries,
            found.entries
        )));
    }
    Ok(())
}

/// An order-independent fingerprint of a tree: the entry count and a sum
/// of per-entry hashes of (path, kind, size). Bounded memory whatever the
/// bundle holds; a missing, extra or resized entry changes it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TreePrint {
    entries: u64,
    sum: u128,
}

/// Kind codes of the fingerprint: what a bundle entry becomes on disk.
pub(super) const PRINT_FILE: u8 = 1;

pub(super) fn entry_kind(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::File | EntryKind::Hardlink => PRINT_FILE,
        EntryKind::Dir => 2,
        EntryKind::Symlink => 3,
        EntryKind::Fifo => 4,
        EntryKind::Char => 5,
        EntryKind::Block => 6,
    }
}

pub(super) fn disk_kind(meta: &fs::Metadata) -> u8 {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    match () {
        _ if t.is_file() => PRINT_FILE,
        _ if t.is_dir() => 2,
        _ if t.is_symlink() => 3,
        _ if t.is_fifo() => 4,
        _ if t.is_char_device() => 5,
        _ if t.is_block_device() => 6,
        _ => 7,
    }
}

impl TreePrint {
    pub(super) fn add(&mut self, path: &[u8], kind: u8, size: u64) {
        let size = if kind == PRINT_FILE { size } else { 0 };
        let mut h = Sha256::new();
        h.update([kind]);
        h.update(size.to_le_bytes());
        h.update(path);
        let d = h.finalize();
        let mut low = [0u8; 16];
        low.copy_from_slice(&d[..16]);
        self.entries += 1;
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(low));
    }
}

/// Adds every entry under `top` (from `min_depth`) to `found`, under the
/// bundle path `bundle_path` gives its path relative to `top`.
fn add_tree(
    found: &mut TreePrint,
    top: &Path,
    min_depth: usize,
    bundle_path: impl Fn(&Path) -> Vec<u8>,
) -> Result<(), ReadError> {
    for entry in walkdir::WalkDir::new(top).min_depth(min_depth) {
        let entry = entry.map_err(|e| {
            ReadError::Visitor(format!(
                "staged tree `{}` cannot be read back: {e}",
                top.display()
            ))
        })?;
        let meta = entry
            .metadata()
            .map_err(|e| ReadError::Visitor(format!("`{}`: {e}", entry.path().display())))?;
        let rel = entry.path().strip_prefix(top).unwrap_or(entry.path());
        found.add(&bundle_path(rel), disk_kind(&meta), meta.len());
    }
    Ok(())
}
