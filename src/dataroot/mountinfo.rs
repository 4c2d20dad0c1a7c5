//! `/proc/self/mountinfo`: which paths are mount points, and their
//! propagation, as dockerd reads them.
//!
//! Used for two predictions: a `_data` still mounted (a stale volume mount
//! the scan will unmount or mark), and bind mounts whose propagation needs
//! the source's mount to be shared or slave.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One line of mountinfo, with the fields volmig uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// The optional fields: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    pub optional: Vec<String>,
}

impl MountInfo {
    pub fn is_shared(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("shared:"))
    }

    pub fn is_slave(&self) -> bool {
        self.optional.iter().any(|o| o.starts_with("master:"))
    }
}

/// The host's mount table.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    pub mounts: Vec<MountInfo>,
    /// Every mount point, for O(1) lookups: the scan asks once per volume,
    /// and a host running many containers has thousands of mounts.
    points: HashSet<PathBuf>,
}

impl MountTable {
    /// Reads this process's mount table.
    pub fn read_self() -> io::Result<MountTable> {
        Ok(MountTable::parse(&fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// Parses mountinfo text; malformed lines are skipped.
    pub fn parse(text: &str) -> MountTable {
        let mounts: Vec<MountInfo> = text.lines().filter_map(parse_line).collect();
        let points = mounts.iter().map(|m| m.mount_point.clone()).collect();
        MountTable { mounts, points }
    }

    /// Whether `path` itself is a mount point.
    pub fn is_mount_point(&self, path: &Path) -> bool {
        self.points.contains(path)
    }

    /// The mount that holds `path`: the longest mount point that is a
    /// prefix of it (dockerd's `getSourceMount`; the last such line wins
    /// when a path is mounted over).
    pub fn mount_of(&self, path: &Path) -> Option<&MountInfo> {
        self.mounts
            .iter()
            .filter(|m| path.starts_with(&m.mount_point))
            .fold(None, |best: Option<&MountInfo>, m| match best {
                Some(b) if b.mount_point.as_os_str().len() > m.mount_point.as_os_str().len() => {
                    Some(b)
                }
                _ => Some(m),
            })
    }
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let mut fields = left.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let _dev = fields.next()?;
    let _root = fields.next()?;
    let mount_point = unescape(fields.next()?);
    let _opts = fields.next()?;
    let optional = fields
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    let mut right = right.split(' ');
    let fs_type = right.next()?.to_string();
    let source = unescape(right.next().unwrap_or(""));
    Some(MountInfo {
        mount_point: PathBuf::from(mount_point),
        fs_type,
        source,
        optional,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok());
            if let Some(b) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:25 / /proc rw,nosuid - proc proc rw
40 22 8:1 /srv /mnt/my\\040dir rw master:3 - ext4 /dev/vda rw
41 22 0:40 / /var/lib/docker/volumes/x/_data rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_propagation_and_escapes() {
        let t = MountTable::parse(SAMPLE);
        assert_eq!(t.mounts.len(), 4);
        assert!(t.mounts[0].is_shared());
        assert!(!t.mounts[1].is_shared());
        assert_eq!(t.mounts[2].mount_point, PathBuf::from("/mnt/my dir"));
        assert!(t.mounts[2].is_slave());
    }

    #[test]
    fn finds_the_longest_prefix_mount() {
        let t = MountTable::parse(SAMPLE);
        let m = t.mount_of(Path::new("/mnt/my dir/sub")).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/my dir"));
        let m = t.mount_of(Path::new("/etc")).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/"));
        assert!(t.is_mount_point(Path::new("/var/lib/docker/volumes/x/_data")));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let t = MountTable::parse("garbage\n\n1 2 3\n");
        assert!(t.mounts.is_empty());
    }
}
