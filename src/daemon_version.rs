//! Which generation of dockerd a prediction is made for.
//!
//! dockerd's behaviour and texts change between releases; every place that
//! depends on the generation asks a named predicate here, so the version
//! thresholds live in one file with the reason for each.

use std::fmt;
use std::str::FromStr;

/// A dockerd release, compared by `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DaemonVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl DaemonVersion {
    /// The newest behaviour we model: master after v29.x.
    pub const CURRENT: DaemonVersion = DaemonVersion::new(29, 4, 0);

    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        DaemonVersion {
            major,
            minor,
            patch,
        }
    }

    /// 18.06 moved volumes behind the volume service: its errors say
    /// `no such volume` where 17.06 said `volume not found`, and a failing
    /// default driver is wrapped in `error setting up default driver`.
    pub fn has_volume_service(self) -> bool {
        self >= DaemonVersion::new(18, 6, 0)
    }

    /// 20.10.3 to 25.x evaluate the symlinks of the Source stored in
    /// config.v2.json when a mount has a z/Z mode (SELinux relabel), instead
    /// of the path recomputed from the data-root.
    pub fn evaluates_stored_source_for_relabel(self) -> bool {
        self >= DaemonVersion::new(20, 10, 3) && self < DaemonVersion::new(26, 0, 0)
    }

    /// v29.4 skips directories under `volumes/` that hold neither `_data`
    /// nor `opts.json`.
    pub fn skips_empty_volume_dirs(self) -> bool {
        self >= DaemonVersion::new(29, 4, 0)
    }

    /// Up to v24 the scan unmounts stale `_data` mounts; v25 keeps them and
    /// marks the volume as mounted.
    pub fn unmounts_stale_mounts(self) -> bool {
        self < DaemonVersion::new(25, 0, 0)
    }

    /// Volume subpaths (`--mount ...,volume-subpath=`) exist since v26.
    pub fn supports_subpath(self) -> bool {
        self >= DaemonVersion::new(26, 0, 0)
    }

    /// `opts.json` carries `Quota` since 20.10.
    pub fn supports_quota(self) -> bool {
        self >= DaemonVersion::new(20, 10, 0)
    }

    /// Newer daemons quote the paths in the propagation error.
    pub fn quotes_propagation_paths(self) -> bool {
        self >= DaemonVersion::new(23, 0, 0)
    }
}

impl Default for DaemonVersion {
    fn default() -> Self {
        DaemonVersion::CURRENT
    }
}

impl fmt::Display for DaemonVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A `--daemon-version` that is not `MAJOR.MINOR[.PATCH]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid daemon version `{0}`: expected MAJOR.MINOR[.PATCH], e.g. 20.10.24 or 17.06, or `current`")]
pub struct InvalidDaemonVersion(String);

impl FromStr for DaemonVersion {
    type Err = InvalidDaemonVersion;

    /// Accepts what `docker version` prints: `20.10.24`, `17.06.0-ce`,
    /// `24.0.7+dfsg1`, a leading `v`, or `current`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDaemonVersion(text.to_string());
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("current") || trimmed.eq_ignore_ascii_case("latest") {
            return Ok(DaemonVersion::CURRENT);
        }
        let trimmed = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let core = trimmed.split(['-', '+', '~']).next().ok_or_else(invalid)?;
        let mut parts = core.split('.');
        let mut next = |required: bool| -> Result<u32, InvalidDaemonVersion> {
            match parts.next() {
                Some(p) => p.parse::<u32>().map_err(|_| invalid()),
                None if required => Err(invalid()),
                None => Ok(0),
            }
        };
        let version = DaemonVersion::new(next(true)?, next(true)?, next(false)?);
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_docker_version_prints() {
        let v: DaemonVersion = "20.10.24".parse().unwrap();
        assert_eq!(v, DaemonVersion::new(20, 10, 24));
        let v: DaemonVersion = "17.06.0-ce".parse().unwrap();
        assert_eq!(v, DaemonVersion::new(17, 6, 0));
        let v: DaemonVersion = "v24.0.7+dfsg1".parse().unwrap();
        assert_eq!(v, DaemonVersion::new(24, 0, 7));
        let v: DaemonVersion = "18.06".parse().unwrap();
        assert_eq!(v, DaemonVersion::new(18, 6, 0));
        assert_eq!(
            "current".parse::<DaemonVersion>().unwrap(),
            DaemonVersion::CURRENT
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "20", "x.y", "20.10.1.2", "20.-1"] {
            assert!(bad.parse::<DaemonVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn generations() {
        let old = DaemonVersion::new(17, 6, 0);
        let d2010 = DaemonVersion::new(20, 10, 24);
        assert!(!old.has_volume_service());
        assert!(d2010.has_volume_service());
        assert!(d2010.evaluates_stored_source_for_relabel());
        assert!(!DaemonVersion::new(20, 10, 2).evaluates_stored_source_for_relabel());
        assert!(!DaemonVersion::CURRENT.evaluates_stored_source_for_relabel());
        assert!(DaemonVersion::CURRENT.skips_empty_volume_dirs());
        assert!(!d2010.skips_empty_volume_dirs());
    }
}
