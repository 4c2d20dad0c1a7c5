//! Replacing a small file so that readers, and the file after a crash, see
//! the old content or the new one, never a mix: a temp file beside it (a
//! leftover of a killed writer is replaced: the callers hold volmig's
//! import lock), fsync, rename over the file, fsync of the directory.
//! One home for the rule: the import journal, container configs and a
//! registered volume's opts.json all go through here.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `bytes` (permission bits `mode`), durably. `tmp`
/// is the temp file's name in the same directory.
pub fn replace(path: &Path, tmp: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let tmp = dir.join(tmp);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let write = || -> io::Result<()> {
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}
