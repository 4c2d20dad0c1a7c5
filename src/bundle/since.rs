//! `export --since`: the base round's manifest read alongside the walk,
//! in the same bundle order, so that each entry of a volume meets its
//! base entry (if any) and every base entry the walk does not meet is a
//! deletion. One pass over both, one entry of each in memory.

use crate::manifest::{path_order, Entry, ManifestError, ManifestReader, Record};

use super::EntryKind;

/// The base round's manifest, positioned volume by volume (the bundle
/// writes volumes in name order, as the base did).
pub struct Base {
    reader: ManifestReader,
    peeked: Option<Record>,
    /// Re-hash every file instead of trusting an unchanged stat.
    pub checksum: bool,
}

impl Base {
    pub fn new(reader: ManifestReader, checksum: bool) -> Base {
        Base {
            reader,
            peeked: None,
            checksum,
        }
    }

    /// The base round's id (a delta's header names it).
    pub fn id(&self) -> &str {
        &self.reader.header().bundle
    }

    fn next(&mut self) -> Result<Option<Record>, ManifestError> {
        match self.peeked.take() {
            Some(r) => Ok(Some(r)),
            None => self.reader.next(),
        }
    }

    /// The base entries of volume `name`, or `None` when the base does
    /// not have it (a volume added since: carried whole). Volumes of the
    /// base before it in name order are passed over (removed since).
    pub fn volume(&mut self, name: &str) -> Result<Option<VolumeBase<'_>>, ManifestError> {
        loop {
            match self.next()? {
                None => return Ok(None),
                Some(Record::Volume(v)) if v.volume == name => {
                    return Ok(Some(VolumeBase {
                        base: self,
                        peeked: None,
                        done: false,
                        dead: None,
                    }))
                }
                Some(Record::Volume(v)) if v.volume.as_str() > name => {
                    self.peeked = Some(Record::Volume(v));
                    return Ok(None);
                }
                // Another volume's entries, or its end: passed over.
                Some(_) => {}
            }
        }
    }
}

/// One volume's base entries, consumed in bundle order.
pub struct VolumeBase<'a> {
    base: &'a mut Base,
    peeked: Option<Entry>,
    done: bool,
    /// A base directory gone (deleted, or replaced by a non-directory):
    /// its subtree goes with it, so its entries are no deletions of their
    /// own.
    dead: Option<Vec<u8>>,
}

impl VolumeBase<'_> {
    pub fn checksum(&self) -> bool {
        self.base.checksum
    }

    fn peek(&mut self) -> Result<Option<&Entry>, ManifestError> {
        if self.peeked.is_none() && !self.done {
            match self.base.next()? {
                Some(Record::Entry(e)) => self.peeked = Some(e),
                Some(Record::End(_)) | None => self.done = true,
                Some(other) => {
                    self.base.peeked = Some(other);
                    self.done = true;
                }
            }
        }
        Ok(self.peeked.as_ref())
    }

    fn is_dead(&self, path: &[u8]) -> bool {
        self.dead.as_deref().is_some_and(|d| {
            path.len() > d.len() && path.starts_with(d) && (d.is_empty() || path[d.len()] == b'/')
        })
    }

    /// Moves to `rel` (a path of the walk, `_data`-relative): every base
    /// entry before it is a deletion, given to `deleted` (which returns
    /// false to stop); returns the base entry at `rel`, if any.
    /// `is_dir` says whether the walk's entry is a directory: a base
    /// directory replaced by something else takes its subtree with it.
    pub fn step(
        &mut self,
        rel: &[u8],
        is_dir: Option<bool>,
        deleted: &mut dyn FnMut(Entry) -> bool,
    ) -> Result<Option<Entry>, ManifestError> {
        while let Some(b) = self.peek()? {
            match path_order(&b.path, rel) {
                std::cmp::Ordering::Less => {
                    let Some(b) = self.peeked.take() else { break };
                    if self.is_dead(&b.path) {
                        continue;
                    }
                    if b.kind == EntryKind::Dir {
                        self.dead = Some(b.path.clone());
                    }
                    if !deleted(b) {
                        return Ok(None);
                    }
                }
                std::cmp::Ordering::Equal => {
                    let b = self.peeked.take();
                    if let Some(b) = &b {
                        if b.kind == EntryKind::Dir && is_dir == Some(false) {
                            self.dead = Some(b.path.clone());
                        }
                    }
                    return Ok(b);
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        Ok(None)
    }

    /// The walk ended: every base entry left is a deletion.
    pub fn finish(&mut self, deleted: &mut dyn FnMut(Entry) -> bool) -> Result<(), ManifestError> {
        while self.peek()?.is_some() {
            let Some(b) = self.peeked.take() else { break };
            if self.is_dead(&b.path) {
                continue;
            }
            if b.kind == EntryKind::Dir {
                self.dead = Some(b.path.clone());
            }
            if !deleted(b) {
                break;
            }
        }
        // Consume to the volume's end, so the next volume starts clean.
        while !self.done {
            self.peeked = None;
            self.peek()?;
            self.peeked = None;
        }
        Ok(())
    }
}
