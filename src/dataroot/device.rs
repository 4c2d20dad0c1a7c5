//! Where a local volume's data lives: in `_data`, or on a device that
//! dockerd's local driver mounts over `_data` when a container starts
//! (`opts.json` `MountType`/`MountDevice`/`MountOpts`, the `type`,
//! `device` and `o` of `docker volume create --opt`).
//!
//! The local driver mounts whenever `MountDevice` or `MountType` is set
//! (`needsMount`), with `mount(2)` of the device on `_data`, the type as
//! the filesystem type and the options parsed like `mount -o` (moby's
//! `mount.parseOptions`: known words become flags, the rest is the data
//! string). compose's `driver_opts: {type: none, o: bind, device: /srv/x}`
//! is a bind mount of a host directory: its data is on the host, and
//! `_data` stays an empty mountpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::opts::VolumeOptions;

/// Where the data of a volume is, by its options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DataLocation {
    /// No mount: the data is in `_data`.
    InData,
    /// A bind mount of a host path (`o=bind` or `o=rbind`).
    Bind { device: PathBuf },
    /// A network filesystem (nfs, cifs, ...): the data is on a server.
    Network { fs_type: String, device: String },
    /// `type=tmpfs`: no data survives the container.
    Tmpfs,
    /// A filesystem on a device node (`type=ext4 device=/dev/sdb1`).
    BlockDevice { fs_type: String, device: PathBuf },
    /// `MountType` without `MountDevice`: dockerd refuses to mount it.
    Incomplete { fs_type: String },
    /// Anything else dockerd would hand to mount(2) (e.g. `overlay`).
    Other { fs_type: String, device: String },
}

impl DataLocation {
    /// Classifies the options of one volume (`None`: no opts.json).
    pub fn of(options: Option<&VolumeOptions>) -> DataLocation {
        let Some(o) = options else {
            return DataLocation::InData;
        };
        if o.mount_device.is_empty() && o.mount_type.is_empty() {
            return DataLocation::InData;
        }
        if o.mount_device.is_empty() {
            return DataLocation::Incomplete {
                fs_type: o.mount_type.clone(),
            };
        }
        let flags = MountFlags::parse(&o.mount_opts);
        if flags.bits & MS_BIND != 0 {
            return DataLocation::Bind {
                device: PathBuf::from(&o.mount_device),
            };
        }
        if o.network_filesystem() {
            return DataLocation::Network {
                fs_type: o.mount_type.clone(),
                device: o.mount_device.clone(),
            };
        }
        if o.mount_type == "tmpfs" {
            return DataLocation::Tmpfs;
        }
        if o.mount_device.starts_with("/dev/") {
            return DataLocation::BlockDevice {
                fs_type: o.mount_type.clone(),
                device: PathBuf::from(&o.mount_device),
            };
        }
        DataLocation::Other {
            fs_type: o.mount_type.clone(),
            device: o.mount_device.clone(),
        }
    }

    /// The stable word scripts read (`scan`/`inspect` JSON `data_location`).
    pub fn word(&self) -> &'static str {
        match self {
            DataLocation::InData => "in-data",
            DataLocation::Bind { .. } => "bind",
            DataLocation::Network { .. } => "network",
            DataLocation::Tmpfs => "tmpfs",
            DataLocation::BlockDevice { .. } => "block-device",
            DataLocation::Incomplete { .. } => "incomplete",
            DataLocation::Other { .. } => "other",
        }
    }

    /// Whether the data is somewhere other than `_data`.
    pub fn is_elsewhere(&self) -> bool {
        !matches!(self, DataLocation::InData)
    }

    /// For people: where the data is.
    pub fn describe(&self) -> String {
        match self {
            DataLocation::InData => "in _data".into(),
            DataLocation::Bind { device } => {
                format!("a bind mount of the host path `{}`", device.display())
            }
            DataLocation::Network { fs_type, device } => {
                format!("on a {fs_type} server (`{device}`)")
            }
            DataLocation::Tmpfs => "in memory (tmpfs): nothing is kept".into(),
            DataLocation::BlockDevice { fs_type, device } => {
                format!("on the {fs_type} filesystem of `{}`", device.display())
            }
            DataLocation::Incomplete { fs_type } => {
                format!("nowhere: type `{fs_type}` without a device, dockerd cannot mount it")
            }
            DataLocation::Other { fs_type, device } => {
                format!("on a {fs_type} mount of `{device}`")
            }
        }
    }
}

/// The failure dockerd reports for a device that is not there when it
/// mounts the volume at container start, after `error while mounting
/// volume '<Source>': ` (seen on 20.10.24): moby's mount error, `mount
/// <device>:<target>, flags: 0x<flags>[, data: <data>]: <errno text>`.
/// `None` when the device is there (or is not a path: network, tmpfs).
pub fn missing_device_error(options: &VolumeOptions, data_dir: &Path) -> Option<String> {
    let device = match DataLocation::of(Some(options)) {
        DataLocation::Bind { device } | DataLocation::BlockDevice { device, .. } => device,
        _ => return None,
    };
    if device.symlink_metadata().is_ok() || std::fs::metadata(&device).is_ok() {
        return None;
    }
    let flags = MountFlags::parse(&options.mount_opts);
    Some(format!(
        "failed to mount local volume: {}: no such file or directory",
        flags.describe_mount(&options.mount_device, data_dir)
    ))
}

const MS_RDONLY: u64 = 0x1;
const MS_NOSUID: u64 = 0x2;
const MS_NODEV: u64 = 0x4;
const MS_NOEXEC: u64 = 0x8;
const MS_SYNCHRONOUS: u64 = 0x10;
const MS_REMOUNT: u64 = 0x20;
const MS_MANDLOCK: u64 = 0x40;
const MS_DIRSYNC: u64 = 0x80;
const MS_NOATIME: u64 = 0x400;
const MS_NODIRATIME: u64 = 0x800;
const MS_BIND: u64 = 0x1000;
const MS_REC: u64 = 0x4000;
const MS_UNBINDABLE: u64 = 0x20000;
const MS_PRIVATE: u64 = 0x40000;
const MS_SLAVE: u64 = 0x80000;
const MS_SHARED: u64 = 0x100000;
const MS_RELATIME: u64 = 0x200000;
const MS_STRICTATIME: u64 = 0x1000000;
/// Propagation flags: moby applies them in a second mount(2) call, so
/// they are not in the first call's error.
const PROPAGATION: u64 = MS_SHARED | MS_PRIVATE | MS_SLAVE | MS_UNBINDABLE;

/// moby's option words (`mount/flags.go`): (word, clears, flag).
const WORDS: &[(&str, bool, u64)] = &[
    ("defaults", false, 0),
    ("ro", false, MS_RDONLY),
    ("rw", true, MS_RDONLY),
    ("suid", true, MS_NOSUID),
    ("nosuid", false, MS_NOSUID),
    ("dev", true, MS_NODEV),
    ("nodev", false, MS_NODEV),
    ("exec", true, MS_NOEXEC),
    ("noexec", false, MS_NOEXEC),
    ("sync", false, MS_SYNCHRONOUS),
    ("async", true, MS_SYNCHRONOUS),
    ("dirsync", false, MS_DIRSYNC),
    ("remount", false, MS_REMOUNT),
    ("mand", false, MS_MANDLOCK),
    ("nomand", true, MS_MANDLOCK),
    ("atime", true, MS_NOATIME),
    ("noatime", false, MS_NOATIME),
    ("diratime", true, MS_NODIRATIME),
    ("nodiratime", false, MS_NODIRATIME),
    ("bind", false, MS_BIND),
    ("rbind", false, MS_BIND | MS_REC),
    ("unbindable", false, MS_UNBINDABLE),
    ("runbindable", false, MS_UNBINDABLE | MS_REC),
    ("private", false, MS_PRIVATE),
    ("rprivate", false, MS_PRIVATE | MS_REC),
    ("shared", false, MS_SHARED),
    ("rshared", false, MS_SHARED | MS_REC),
    ("slave", false, MS_SLAVE),
    ("rslave", false, MS_SLAVE | MS_REC),
    ("relatime", false, MS_RELATIME),
    ("norelatime", true, MS_RELATIME),
    ("strictatime", false, MS_STRICTATIME),
    ("nostrictatime", true, MS_STRICTATIME),
];

/// A `MountOpts` string as moby's `parseOptions` splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountFlags {
    bits: u64,
    /// The words that are not flags, joined by `,`: the data string.
    data: String,
}

impl MountFlags {
    fn parse(options: &str) -> MountFlags {
        let mut bits = 0u64;
        let mut data = Vec::new();
        for word in options.split(',').filter(|w| !w.is_empty()) {
            match WORDS.iter().find(|(w, _, _)| *w == word) {
                Some(&(_, true, flag)) => bits &= !flag,
                Some(&(_, false, flag)) => bits |= flag,
                None => data.push(word),
            }
        }
        MountFlags {
            bits,
            data: data.join(","),
        }
    }

    /// moby's `mountError` text without the errno: `mount <src>:<target>`
    /// with `, flags: 0x..` when any and `, data: ..` when any.
    fn describe_mount(&self, device: &str, target: &Path) -> String {
        let mut out = format!("mount {device}:{}", target.display());
        let flags = self.bits & !PROPAGATION;
        if flags != 0 {
            out += &format!(", flags: 0x{flags:x}");
        }
        if !self.data.is_empty() {
            out += &format!(", data: {}", self.data);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(t: &str, o: &str, device: &str) -> VolumeOptions {
        VolumeOptions {
            mount_type: t.into(),
            mount_opts: o.into(),
            mount_device: device.into(),
            ..Default::default()
        }
    }

    #[test]
    fn classifies_what_compose_and_volume_create_write() {
        assert_eq!(DataLocation::of(None), DataLocation::InData);
        assert_eq!(
            DataLocation::of(Some(&VolumeOptions::default())),
            DataLocation::InData
        );
        assert_eq!(
            DataLocation::of(Some(&opts("none", "bind", "/srv/app"))),
            DataLocation::Bind {
                device: "/srv/app".into()
            }
        );
        assert_eq!(
            DataLocation::of(Some(&opts("", "rbind,ro", "/srv/app"))).word(),
            "bind"
        );
        assert_eq!(
            DataLocation::of(Some(&opts("nfs", "addr=10.0.0.1,rw", ":/export"))).word(),
            "network"
        );
        assert_eq!(
            DataLocation::of(Some(&opts("tmpfs", "size=100m", "tmpfs"))),
            DataLocation::Tmpfs
        );
        assert_eq!(
            DataLocation::of(Some(&opts("ext4", "", "/dev/sdb1"))).word(),
            "block-device"
        );
        assert_eq!(
            DataLocation::of(Some(&opts("ext4", "", ""))).word(),
            "incomplete"
        );
        // A quota alone mounts nothing.
        let mut quota = VolumeOptions::default();
        quota.quota.size = 1 << 20;
        assert_eq!(DataLocation::of(Some(&quota)), DataLocation::InData);
    }

    /// The text a real dockerd 20.10.24 printed for compose's bind volume
    /// whose device path was absent (`flags: 0x1000` is MS_BIND).
    #[test]
    fn a_missing_bind_device_gives_the_daemon_text() {
        let o = opts("none", "bind", "/nonexistent/volmig/dev");
        let data = Path::new("/var/lib/docker/volumes/app/_data");
        assert_eq!(
            missing_device_error(&o, data).unwrap(),
            "failed to mount local volume: mount /nonexistent/volmig/dev:/var/lib/docker/volumes/app/_data, flags: 0x1000: no such file or directory"
        );
        let o = opts("ext4", "noatime,errors=remount-ro", "/dev/volmig-absent");
        assert_eq!(
            missing_device_error(&o, data).unwrap(),
            "failed to mount local volume: mount /dev/volmig-absent:/var/lib/docker/volumes/app/_data, flags: 0x400, data: errors=remount-ro: no such file or directory"
        );
        assert_eq!(missing_device_error(&opts("none", "bind", "/"), data), None);
        assert_eq!(
            missing_device_error(&opts("nfs", "addr=1.2.3.4", ":/x"), data),
            None
        );
    }

    #[test]
    fn options_parse_like_moby() {
        let f = MountFlags::parse("rbind,ro,shared,size=10");
        assert_eq!(f.bits, MS_BIND | MS_REC | MS_RDONLY | MS_SHARED);
        assert_eq!(f.data, "size=10");
        // Propagation is applied by a second call, not in the error.
        assert_eq!(
            f.describe_mount("/a", Path::new("/b")),
            "mount /a:/b, flags: 0x5001, data: size=10"
        );
        assert_eq!(MountFlags::parse("ro,rw").bits, 0);
    }
}
