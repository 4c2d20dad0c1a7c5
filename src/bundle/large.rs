//! A large file's data into the bundle: read once, in `WRITE_CHUNK`
//! buffers, each written from and hashed from the same immutable buffer
//! (issue 7, item 6: what export hashes is exactly what it writes), on two
//! threads. Split from `writer.rs`, which lays out the entries around it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use sha2::{Digest, Sha256};

use super::hash_zeros;
use super::walk::{self, Large};
use super::writer::WriteError;
use crate::fileattrs::Stamp;
use crate::manifest::{ChunkHasher, Chunked};

/// A large file goes to the output in writes of this size: each is read
/// and hashed in `IO_CHUNK` pieces (a piece stays in L2 between the copy
/// out of the page cache and SHA-256), but written at once (measured:
/// 128 KiB writes into a pipe doubled the system time of a 2 GiB export,
/// in wake-ups of both ends).
pub(super) const WRITE_CHUNK: usize = 1 << 20;
/// Chunks of a large file read and written ahead of their hashing.
const CHUNKS_AHEAD: usize = 4;

/// What the hashing thread of a large file gets, in file order.
enum Piece {
    /// A hole: this many zeros.
    Zeros(u64),
    /// Bytes as read, and as written to the bundle.
    Data(Arc<[u8]>),
}

/// Reads the data `segments` of a large file once, in `WRITE_CHUNK`
/// buffers, hands each to `out` and, on a second thread, to SHA-256: the
/// same bytes, immutable once read. This thread does the two copies (out
/// of the page cache, into the output) while the other hashes, which is
/// the slower of the two (measured: with the read on the hashing thread,
/// 2 GiB into `| cat` took 2.1 s; so, 1.8 s).
///
/// With `chunked`, the chunk digests of the same bytes too (for a
/// manifest: `crate::manifest::chunks`), on a third thread.
pub(super) fn copy_and_hash(
    large: &Large,
    segments: &[(u64, u64)],
    size: u64,
    source: &Path,
    (chunked, tolerant): (bool, bool),
    out: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> Result<([u8; 32], Option<Chunked>, bool), WriteError> {
    let changed = |detail: String| WriteError::Changed {
        path: source.to_path_buf(),
        detail,
    };
    thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Piece>(CHUNKS_AHEAD);
        // Hashed buffers come back for reuse (no page faults, no zeroing).
        let (back_tx, back_rx) = mpsc::channel::<Arc<[u8]>>();
        let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Piece>(CHUNKS_AHEAD);
        let chunker = chunked.then(|| {
            let back_tx = back_tx.clone();
            scope.spawn(move || {
                let mut h = ChunkHasher::default();
                for piece in chunk_rx {
                    match piece {
                        Piece::Zeros(n) => h.zeros(n),
                        Piece::Data(chunk) => {
                            h.update(&chunk[..]);
                            let _ = back_tx.send(chunk);
                        }
                    }
                }
                h.finish()
            })
        });
        let chunk_tx = chunker.is_some().then_some(chunk_tx);
        let hasher = scope.spawn(move || {
            let mut h = Sha256::new();
            for piece in rx {
                match piece {
                    Piece::Zeros(n) => hash_zeros(&mut h, n),
                    Piece::Data(chunk) => {
                        h.update(&chunk[..]);
                        let _ = back_tx.send(chunk);
                    }
                }
            }
            <[u8; 32]>::from(h.finalize())
        });
        let send = |piece: Piece| {
            if let Some(tx) = &chunk_tx {
                let copy = match &piece {
                    Piece::Zeros(n) => Piece::Zeros(*n),
                    Piece::Data(c) => Piece::Data(Arc::clone(c)),
                };
                let _ = tx.send(copy);
            }
            let _ = tx.send(piece);
        };
        // An error returns from here: `tx` drops and the hasher ends.
        let mut pos = 0u64;
        let mut shrank = false;
        for &(off, len) in segments {
            send(Piece::Zeros(off - pos));
            let mut done = 0u64;
            while done < len {
                let n = ((len - done) as usize).min(WRITE_CHUNK);
                // A buffer back from the hasher is ours alone again (this
                // thread dropped its reference after writing it).
                let mut chunk = match back_rx.try_recv() {
                    Ok(c) if c.len() == n => c,
                    _ => Arc::from(vec![0u8; n]),
                };
                let Some(buf) = Arc::get_mut(&mut chunk) else {
                    continue;
                };
                if !read_exact_at(&large.file, buf, off + done).map_err(walk::read_err(source))? {
                    if !tolerant {
                        return Err(changed(format!(
                            "it shrank below {size} bytes while it was read"
                        )));
                    }
                    // A pre-copy round: what is gone reads as zeros.
                    let got = read_prefix_at(&large.file, buf, off + done)
                        .map_err(walk::read_err(source))?;
                    buf[got..].fill(0);
                    shrank = true;
                }
                send(Piece::Data(Arc::clone(&chunk)));
                out(&chunk).map_err(WriteError::Write)?;
                done += n as u64;
            }
            pos = off + len;
        }
        send(Piece::Zeros(size - pos));
        drop(tx);
        drop(chunk_tx);
        let after = Stamp::now(&large.file).map_err(walk::read_err(source))?;
        let moved = after.change_since(&large.stamp);
        if let (Some(what), false) = (&moved, tolerant) {
            return Err(changed(what.clone()));
        }
        let failed = || WriteError::Write(io::Error::other("the hashing thread failed"));
        let digest = hasher.join().map_err(|_| failed())?;
        let chunks = match chunker {
            Some(c) => Some(c.join().map_err(|_| failed())?),
            None => None,
        };
        Ok((digest, chunks, shrank || moved.is_some()))
    })
}

/// A pipe as output gets a 1 MiB buffer (the default 64 KiB makes both
/// ends wake each other 16 times per large write); best effort: the
/// limit is /proc/sys/fs/pipe-max-size, and anything else is left alone.
pub(super) fn grow_pipe(out: &File) {
    use nix::fcntl::{fcntl, FcntlArg};
    if out
        .metadata()
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
    {
        let _ = fcntl(
            std::os::fd::AsRawFd::as_raw_fd(out),
            FcntlArg::F_SETPIPE_SZ(WRITE_CHUNK as libc::c_int),
        );
    }
}

/// Fills `buf` from `offset`; false when the file ends first.
/// Reads what there is of `buf.len()` bytes from `offset`; returns how
/// many.
fn read_prefix_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileattrs::set_mtime;
    use std::fs;
    use std::io::Write;

    fn large(path: &Path) -> Large {
        let file = File::open(path).unwrap();
        let stamp = Stamp::now(&file).unwrap();
        Large { file, stamp }
    }

    /// Runs `copy_and_hash` alone: what it handed over, and its result.
    fn read_all(
        large: &Large,
        size: u64,
        source: &Path,
    ) -> (Vec<u8>, Result<[u8; 32], WriteError>) {
        let mut bytes = Vec::new();
        let result = copy_and_hash(
            large,
            &[(0, size)],
            size,
            source,
            (true, false),
            &mut |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            },
        );
        // The chunk digests are of the same bytes.
        if let Ok((_, Some(chunked), _)) = &result {
            let mut h = crate::manifest::ChunkHasher::default();
            h.update(&bytes);
            assert_eq!(&h.finish(), chunked);
        }
        (bytes, result.map(|(d, _, _)| d))
    }

    #[test]
    fn the_digest_is_of_the_bytes_handed_over() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("big");
        let content: Vec<u8> = (0..(3 * WRITE_CHUNK + 7)).map(|i| i as u8).collect();
        fs::write(&p, &content).unwrap();
        let (bytes, digest) = read_all(&large(&p), content.len() as u64, &p);
        assert_eq!(bytes, content);
        assert_eq!(digest.unwrap(), <[u8; 32]>::from(Sha256::digest(&content)));
    }

    /// Issue 7 item 6: rewritten in place (same size) after its stamp was
    /// taken: refused, naming the file and the fix.
    #[test]
    fn a_file_rewritten_after_its_stamp_was_taken_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("big");
        fs::write(&p, vec![b'A'; 1 << 20]).unwrap();
        let l = large(&p);
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(&vec![b'B'; 1 << 20], 0)
            .unwrap();
        // A stamp that surely moved, whatever the timestamp granularity.
        set_mtime(&p, 1, 0).unwrap();
        let err = read_all(&l, 1 << 20, &p).1.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("`{}`", p.display())), "{text}");
        assert!(
            text.contains("--pause") && text.contains("--stop"),
            "{text}"
        );
    }

    #[test]
    fn a_pre_copy_round_carries_a_changing_file_as_read_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("big");
        fs::write(&p, vec![b'A'; 2 << 20]).unwrap();
        let l = large(&p);
        // Shrunk and rewritten after the stamp: the rest reads as zeros.
        let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(&vec![b'B'; 1 << 20], 0).unwrap();
        set_mtime(&p, 1, 0).unwrap();
        let mut bytes = Vec::new();
        let (digest, _, changed) =
            copy_and_hash(&l, &[(0, 2 << 20)], 2 << 20, &p, (false, true), &mut |c| {
                bytes.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
        assert!(changed, "the change must be reported");
        assert_eq!(bytes.len(), 2 << 20);
        assert!(bytes[..1 << 20].iter().all(|&b| b == b'B'));
        assert!(bytes[1 << 20..].iter().all(|&b| b == 0));
        assert_eq!(
            digest,
            <[u8; 32]>::from(Sha256::digest(&bytes)),
            "hashed is written"
        );
    }

    #[test]
    fn a_file_that_shrinks_or_grows_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("big");
        fs::write(&p, vec![b'A'; 1 << 20]).unwrap();
        let l = large(&p);
        fs::write(&p, vec![b'A'; 1 << 19]).unwrap();
        let text = read_all(&l, 1 << 20, &p).1.unwrap_err().to_string();
        assert!(text.contains("shrank"), "{text}");

        fs::write(&p, vec![b'A'; 1 << 20]).unwrap();
        let l = large(&p);
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"more").unwrap();
        let text = read_all(&l, 1 << 20, &p).1.unwrap_err().to_string();
        assert!(text.contains("size went from"), "{text}");
    }
}
