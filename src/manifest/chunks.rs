//! Content digests by chunks: what lets a delta carry only the 256 KiB
//! pieces of a large file that changed, and lets the side that applies it
//! prove the result without reading the rest of the file.
//!
//! A file of at most one chunk has the SHA-256 of its content as its
//! digest (so for most files it is the SHA256SUMS digest); a longer one
//! has the SHA-256 of its chunks' SHA-256s, concatenated in order, the last
//! chunk short. A whole chunk of a hole is recorded as `None` and costs no
//! hashing: its digest is the constant `zero_chunk()`.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::{CHUNK, MAX_CHUNKS};

/// A SHA-256.
pub type Sha = [u8; 32];

/// SHA-256 of one chunk of zeros.
pub fn zero_chunk() -> &'static [u8; 32] {
    static ZERO: OnceLock<[u8; 32]> = OnceLock::new();
    ZERO.get_or_init(|| {
        let mut h = Sha256::new();
        crate::bundle::hash_zeros(&mut h, CHUNK);
        h.finalize().into()
    })
}

/// The content digest of a file from its chunk digests (`None`: zeros).
pub fn content_from_chunks<'a>(chunks: impl IntoIterator<Item = &'a Option<[u8; 32]>>) -> [u8; 32] {
    let mut outer = Sha256::new();
    for c in chunks {
        outer.update(c.as_ref().unwrap_or(zero_chunk()));
    }
    outer.finalize().into()
}

/// Hashes a file's logical content, fed in order as data and holes.
pub struct ChunkHasher {
    current: Sha256,
    /// Bytes in the current chunk so far.
    filled: u64,
    /// Bytes fed in all.
    total: u64,
    /// Whether the current chunk so far came from holes only.
    zeros_only: bool,
    outer: Sha256,
    chunks: Option<Vec<Option<[u8; 32]>>>,
    count: u64,
    /// The first chunk's digest, kept apart: it is the whole content's
    /// digest when there is no second chunk.
    first: Option<[u8; 32]>,
}

/// What a `ChunkHasher` gives at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    /// The content digest (see the module).
    pub content: [u8; 32],
    /// The chunk digests of a file of more than one chunk, in order;
    /// empty for one chunk or less, and when the file has more than
    /// `MAX_CHUNKS` chunks (not recorded: such a file travels whole).
    pub chunks: Vec<Option<[u8; 32]>>,
    /// Whether `chunks` lists them all (false: over `MAX_CHUNKS`).
    pub recorded: bool,
}

impl Chunked {
    /// A file of one chunk or less, whose digest is its SHA-256.
    pub fn single(sha256: [u8; 32]) -> Chunked {
        Chunked {
            content: sha256,
            chunks: Vec::new(),
            recorded: true,
        }
    }
}

impl Default for ChunkHasher {
    fn default() -> Self {
        ChunkHasher {
            current: Sha256::new(),
            filled: 0,
            total: 0,
            zeros_only: true,
            outer: Sha256::new(),
            chunks: Some(Vec::new()),
            count: 0,
            first: None,
        }
    }
}

impl ChunkHasher {
    /// Feeds bytes of data.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (CHUNK - self.filled) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.current.update(now);
            self.filled += now.len() as u64;
            self.total += now.len() as u64;
            self.zeros_only = false;
            if self.filled == CHUNK {
                self.close_chunk();
            }
            data = rest;
        }
    }

    /// Feeds `n` zeros of a hole; whole chunks of them cost no hashing.
    pub fn zeros(&mut self, mut n: u64) {
        while n > 0 {
            if self.filled == 0 && n >= CHUNK {
                self.total += CHUNK;
                self.push(None);
                n -= CHUNK;
                continue;
            }
            let k = n.min(CHUNK - self.filled);
            crate::bundle::hash_zeros(&mut self.current, k);
            self.filled += k;
            self.total += k;
            n -= k;
            if self.filled == CHUNK {
                self.close_chunk();
            }
        }
    }

    fn close_chunk(&mut self) {
        let done = std::mem::take(&mut self.current).finalize().into();
        // Only a whole chunk of zeros has the constant digest.
        let zeros = self.zeros_only && self.filled == CHUNK;
        self.filled = 0;
        self.zeros_only = true;
        self.push(if zeros { None } else { Some(done) });
    }

    fn push(&mut self, digest: Option<[u8; 32]>) {
        let value = digest.unwrap_or(*zero_chunk());
        if self.count == 0 {
            self.first = Some(value);
        }
        self.outer.update(value);
        self.count += 1;
        if let Some(list) = &mut self.chunks {
            if self.count > MAX_CHUNKS {
                self.chunks = None;
            } else {
                list.push(digest);
            }
        }
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn finish(mut self) -> Chunked {
        if self.total <= CHUNK {
            // One chunk or less: the plain SHA-256 of the content.
            let content = if self.filled > 0 || self.total == 0 {
                std::mem::take(&mut self.current).finalize().into()
            } else {
                self.first.unwrap_or(*zero_chunk())
            };
            return Chunked {
                content,
                chunks: Vec::new(),
                recorded: true,
            };
        }
        if self.filled > 0 {
            self.close_chunk();
        }
        let recorded = self.chunks.is_some();
        Chunked {
            content: self.outer.finalize().into(),
            chunks: self.chunks.unwrap_or_default(),
            recorded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[test]
    fn a_file_of_one_chunk_or_less_has_its_sha256() {
        for data in [&b""[..], b"hello", &vec![7u8; CHUNK as usize]] {
            let mut h = ChunkHasher::default();
            h.update(data);
            let got = h.finish();
            assert_eq!(got.content, sha(data));
            assert!(got.chunks.is_empty());
        }
    }

    #[test]
    fn a_longer_file_hashes_its_chunk_digests_however_it_is_fed() {
        let data: Vec<u8> = (0..(2 * CHUNK + 5)).map(|i| (i % 251) as u8).collect();
        let c = CHUNK as usize;
        let expected: Vec<[u8; 32]> =
            vec![sha(&data[..c]), sha(&data[c..2 * c]), sha(&data[2 * c..])];
        let mut outer = Sha256::new();
        for d in &expected {
            outer.update(d);
        }
        let want: [u8; 32] = outer.finalize().into();
        for piece in [1usize, 4096, 1 << 20, 3 << 20] {
            let mut h = ChunkHasher::default();
            for p in data.chunks(piece) {
                h.update(p);
            }
            let got = h.finish();
            assert_eq!(got.content, want, "pieces of {piece}");
            let listed: Vec<[u8; 32]> = got.chunks.iter().map(|c| c.unwrap()).collect();
            assert_eq!(listed, expected);
        }
    }

    #[test]
    fn holes_hash_like_written_zeros_and_whole_chunks_of_them_are_none() {
        let mut hole = ChunkHasher::default();
        hole.update(b"x");
        hole.zeros(3 * CHUNK);
        let mut written = ChunkHasher::default();
        written.update(b"x");
        written.update(&vec![0u8; 3 * CHUNK as usize]);
        let (hole, written) = (hole.finish(), written.finish());
        assert_eq!(hole.content, written.content);
        assert_eq!(hole.chunks.len(), 4);
        assert!(hole.chunks[1].is_none() && hole.chunks[2].is_none());
        assert!(hole.chunks[0].is_some() && hole.chunks[3].is_some());
        assert_eq!(
            content_from_chunks(&hole.chunks),
            content_from_chunks(&written.chunks)
        );
        // A hole of exactly one chunk is the SHA-256 of a chunk of zeros.
        let mut one = ChunkHasher::default();
        one.zeros(CHUNK);
        assert_eq!(one.finish().content, *zero_chunk());
    }

    #[test]
    fn a_huge_hole_costs_no_hashing() {
        let start = std::time::Instant::now();
        let mut h = ChunkHasher::default();
        h.zeros(1 << 40);
        let got = h.finish();
        assert!(!got.recorded, "a TiB has more than MAX_CHUNKS chunks");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
