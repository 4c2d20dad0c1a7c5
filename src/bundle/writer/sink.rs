//! Where the bundle goes: a file (or a duplicate of stdout), raw or
//! zstd-compressed, and the two copies that bypass its buffer.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;

use super::CHUNK;

/// The output: a file (or a duplicate of stdout), raw or zstd-compressed.
pub(super) enum Sink {
    Raw(BufWriter<File>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Raw(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Raw(w) => w.write_all(buf),
            Sink::Zstd(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Raw(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

impl Sink {
    /// Writes a whole chunk of file data, past the buffer when raw (a
    /// chunk is as large as a write needs to be; copying it into the
    /// buffer first would cost a copy of every byte).
    pub(super) fn write_chunk(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Sink::Raw(w) => {
                if !w.buffer().is_empty() {
                    w.flush()?;
                }
                w.get_mut().write_all(buf)
            }
            Sink::Zstd(w) => w.write_all(buf),
        }
    }

    /// Copies `len` bytes of `file` (our own SHA256SUMS spool: nobody else
    /// writes it) from its start, through the kernel when the output
    /// allows it. Returns how many bytes the file had.
    pub(super) fn send_spool(
        &mut self,
        file: &File,
        len: u64,
        scratch: &mut Vec<u8>,
    ) -> io::Result<u64> {
        if let Sink::Raw(w) = self {
            w.flush()?;
            let out = w.get_ref();
            let mut off = 0i64;
            let mut sent = 0u64;
            while sent < len {
                let want = ((len - sent) as usize).min(1 << 30);
                match nix::sys::sendfile::sendfile64(out, file, Some(&mut off), want) {
                    Ok(0) => return Ok(sent),
                    Ok(n) => sent += n as u64,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) if sent == 0 => {
                        break
                    }
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
            if sent > 0 || len == 0 {
                return Ok(sent);
            }
        }
        // Compressed output, or an output sendfile does not take.
        scratch.resize(CHUNK, 0);
        let mut done = 0u64;
        while done < len {
            let want = ((len - done) as usize).min(CHUNK);
            let n = file.read_at(&mut scratch[..want], done)?;
            if n == 0 {
                break;
            }
            self.write_all(&scratch[..n])?;
            done += n as u64;
        }
        Ok(done)
    }

    pub(super) fn finish(self) -> io::Result<File> {
        let w = match self {
            Sink::Raw(w) => w,
            Sink::Zstd(z) => z.finish()?,
        };
        w.into_inner().map_err(|e| e.into_error())
    }
}
