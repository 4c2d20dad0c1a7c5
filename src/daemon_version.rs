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
    /// As Docker spells it: `17.06.2` (YY.MM releases pad the month),
    /// `23.0.6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", Series::of(*self), self.patch)
    }
}

/// The last patch release of each series, and where that is recorded. A
/// version given without a patch level (`20.10`) means the series as it is
/// deployed today: its newest release. Sources: the release tags of
/// docker/docker-ce (up to 19.03) and moby/moby (from 20.10).
const LAST_PATCH: &[(u32, u32, u32, &str)] = &[
    (
        17,
        6,
        2,
        "github.com/docker/docker-ce/releases/tag/v17.06.2-ce",
    ),
    (
        17,
        9,
        1,
        "github.com/docker/docker-ce/releases/tag/v17.09.1-ce",
    ),
    (
        17,
        12,
        1,
        "github.com/docker/docker-ce/releases/tag/v17.12.1-ce",
    ),
    (
        18,
        3,
        1,
        "github.com/docker/docker-ce/releases/tag/v18.03.1-ce",
    ),
    (
        18,
        6,
        3,
        "github.com/docker/docker-ce/releases/tag/v18.06.3-ce",
    ),
    (
        18,
        9,
        9,
        "github.com/docker/docker-ce/releases/tag/v18.09.9",
    ),
    (
        19,
        3,
        15,
        "github.com/docker/docker-ce/releases/tag/v19.03.15",
    ),
    (20, 10, 24, "github.com/moby/moby/releases/tag/v20.10.24"),
    (23, 0, 6, "github.com/moby/moby/releases/tag/v23.0.6"),
    (24, 0, 9, "github.com/moby/moby/releases/tag/v24.0.9"),
    (25, 0, 5, "github.com/moby/moby/releases/tag/v25.0.5"),
    (26, 1, 4, "github.com/moby/moby/releases/tag/v26.1.4"),
    (27, 5, 1, "github.com/moby/moby/releases/tag/v27.5.1"),
    (28, 5, 2, "github.com/moby/moby/releases/tag/v28.5.2"),
];

/// How far a series not in `LAST_PATCH` is searched for rule changes.
const UNTABLED_PATCHES: u32 = 99;

/// A release series, `MAJOR.MINOR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    pub major: u32,
    pub minor: u32,
}

impl Series {
    pub fn of(v: DaemonVersion) -> Series {
        Series {
            major: v.major,
            minor: v.minor,
        }
    }

    /// Its newest release in the table, with the table's source.
    pub fn newest(self) -> Option<(DaemonVersion, &'static str)> {
        LAST_PATCH
            .iter()
            .find(|(ma, mi, _, _)| *ma == self.major && *mi == self.minor)
            .map(|&(ma, mi, patch, source)| (DaemonVersion::new(ma, mi, patch), source))
    }

    /// The last patch level a question about this series looks at.
    fn last_patch(self, at_least: u32) -> u32 {
        match self.newest() {
            Some((v, _)) => v.patch.max(at_least),
            None => UNTABLED_PATCHES.max(at_least),
        }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Up to 20.10 the minor was the month of a YY.MM release.
        if self.major < 23 {
            write!(f, "{}.{:02}", self.major, self.minor)
        } else {
            write!(f, "{}.{}", self.major, self.minor)
        }
    }
}

/// Patch releases `first` to `last` of one series; `to_end` when `last`
/// is the series' newest (or the end of the search), shown as `20.10.3+`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchRange {
    pub first: DaemonVersion,
    pub last: DaemonVersion,
    pub to_end: bool,
}

impl PatchRange {
    pub fn contains(&self, v: DaemonVersion) -> bool {
        self.first <= v && v <= self.last
    }
}

impl fmt::Display for PatchRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.to_end, self.first == self.last) {
            (true, _) => write!(f, "{}+", self.first),
            (false, true) => write!(f, "{}", self.first),
            (false, false) => write!(f, "{}-{}", self.first, self.last),
        }
    }
}

/// One version-dependent rule: its predicate, and what it is in words.
pub struct Rule {
    pub name: &'static str,
    pub test: fn(DaemonVersion) -> bool,
}

/// Every predicate above, so that a question about a series asks them all.
pub const RULES: &[Rule] = &[
    Rule {
        name: "the volume service (`no such volume`)",
        test: DaemonVersion::has_volume_service,
    },
    Rule {
        name: "evaluating the stored Source of a z/Z mount",
        test: DaemonVersion::evaluates_stored_source_for_relabel,
    },
    Rule {
        name: "skipping empty volume directories",
        test: DaemonVersion::skips_empty_volume_dirs,
    },
    Rule {
        name: "unmounting stale `_data` mounts",
        test: DaemonVersion::unmounts_stale_mounts,
    },
    Rule {
        name: "volume subpaths",
        test: DaemonVersion::supports_subpath,
    },
    Rule {
        name: "quota in opts.json",
        test: DaemonVersion::supports_quota,
    },
    Rule {
        name: "quoted paths in the propagation error",
        test: DaemonVersion::quotes_propagation_paths,
    },
];

/// Does `rule` change within the series of `v`, and where: the runs of
/// patch releases with the same answer, in order (one run: it does not
/// change).
pub fn rule_within_series(
    v: DaemonVersion,
    rule: fn(DaemonVersion) -> bool,
) -> Vec<(PatchRange, bool)> {
    let series = Series::of(v);
    let last = series.last_patch(v.patch);
    let at = |patch| DaemonVersion::new(v.major, v.minor, patch);
    let mut runs: Vec<(PatchRange, bool)> = Vec::new();
    for patch in 0..=last {
        let answer = rule(at(patch));
        match runs.last_mut() {
            Some((range, prev)) if *prev == answer => range.last = at(patch),
            _ => runs.push((
                PatchRange {
                    first: at(patch),
                    last: at(patch),
                    to_end: false,
                },
                answer,
            )),
        }
    }
    if let Some((range, _)) = runs.last_mut() {
        range.to_end = true;
    }
    runs
}

/// The series of `v` split where any rule changes: within one range every
/// prediction is the same. One range when nothing changes in the series.
pub fn behaviours_within_series(v: DaemonVersion) -> Vec<PatchRange> {
    let mut bounds: Vec<DaemonVersion> = RULES
        .iter()
        .flat_map(|r| rule_within_series(v, r.test))
        .map(|(range, _)| range.first)
        .collect();
    bounds.sort();
    bounds.dedup();
    let series = Series::of(v);
    let end = DaemonVersion::new(v.major, v.minor, series.last_patch(v.patch));
    let mut ranges = Vec::new();
    for (i, first) in bounds.iter().enumerate() {
        let last = match bounds.get(i + 1) {
            Some(next) => DaemonVersion::new(v.major, v.minor, next.patch.saturating_sub(1)),
            None => end,
        };
        ranges.push(PatchRange {
            first: *first,
            last,
            to_end: bounds.get(i + 1).is_none(),
        });
    }
    ranges
}

/// The rules whose answer changes within the series of `v`.
pub fn rules_changing_within_series(v: DaemonVersion) -> Vec<&'static Rule> {
    RULES
        .iter()
        .filter(|r| rule_within_series(v, r.test).len() > 1)
        .collect()
}

/// What a user asked for with `--daemon-version`: the release predicted,
/// and whether it was a series (no patch level) or `current`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRequest {
    /// As typed.
    pub given: String,
    /// The release predicted.
    pub version: DaemonVersion,
    pub kind: RequestKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `20.10.24`: that release.
    Exact,
    /// `20.10`: the newest release of the series in the table.
    Series,
    /// A series not in the table: its `.0`.
    UntabledSeries,
    /// `current`/`latest`: the newest behaviour modelled.
    Current,
}

impl VersionRequest {
    /// `20.10 means 20.10.24, the newest 20.10 release`, or `None` for an
    /// exact release.
    pub fn meaning(&self) -> Option<String> {
        let series = Series::of(self.version);
        match self.kind {
            RequestKind::Exact => None,
            RequestKind::Series => Some(format!(
                "{} means {}, the newest {series} release",
                self.given.trim(),
                self.version
            )),
            RequestKind::UntabledSeries => Some(format!(
                "{} is a series volmig has no release table for: predicting {} (its first release); give the exact release for another",
                self.given.trim(),
                self.version
            )),
            RequestKind::Current => Some(format!(
                "{} means {}, the newest behaviour volmig models",
                self.given.trim(),
                self.version
            )),
        }
    }

    /// Whether the release predicted was chosen for the user (a series or
    /// `current`), so that a rule changing inside the series matters.
    pub fn is_series(&self) -> bool {
        self.kind != RequestKind::Exact
    }
}

/// A `--daemon-version` that is not `MAJOR.MINOR[.PATCH]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid daemon version `{0}`: expected MAJOR.MINOR[.PATCH], e.g. 20.10.24 or 20.10 (its newest release), or `current`")]
pub struct InvalidDaemonVersion(String);

impl FromStr for VersionRequest {
    type Err = InvalidDaemonVersion;

    /// Accepts what `docker version` prints: `20.10.24`, `17.06.0-ce`,
    /// `24.0.7+dfsg1`, a leading `v`; a series `20.10`; or `current`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidDaemonVersion(text.to_string());
        let trimmed = text.trim();
        let request = |version, kind| VersionRequest {
            given: text.to_string(),
            version,
            kind,
        };
        if trimmed.eq_ignore_ascii_case("current") || trimmed.eq_ignore_ascii_case("latest") {
            return Ok(request(DaemonVersion::CURRENT, RequestKind::Current));
        }
        let trimmed = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let core = trimmed.split(['-', '+', '~']).next().ok_or_else(invalid)?;
        let mut parts = core.split('.');
        let mut next = || -> Result<Option<u32>, InvalidDaemonVersion> {
            parts
                .next()
                .map(|p| p.parse::<u32>().map_err(|_| invalid()))
                .transpose()
        };
        let major = next()?.ok_or_else(invalid)?;
        let minor = next()?.ok_or_else(invalid)?;
        let patch = next()?;
        if next()?.is_some() {
            return Err(invalid());
        }
        Ok(match patch {
            Some(patch) => request(DaemonVersion::new(major, minor, patch), RequestKind::Exact),
            None => match (Series { major, minor }).newest() {
                Some((newest, _)) => request(newest, RequestKind::Series),
                None => request(
                    DaemonVersion::new(major, minor, 0),
                    RequestKind::UntabledSeries,
                ),
            },
        })
    }
}

impl FromStr for DaemonVersion {
    type Err = InvalidDaemonVersion;

    /// As `VersionRequest`: a series means its newest release.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse::<VersionRequest>().map(|r| r.version)
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
        assert_eq!(
            v,
            DaemonVersion::new(18, 6, 3),
            "a series is its newest release"
        );
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

    #[test]
    fn a_series_means_its_newest_release() {
        let r: VersionRequest = "20.10".parse().unwrap();
        assert_eq!(r.version, DaemonVersion::new(20, 10, 24));
        assert_eq!(r.kind, RequestKind::Series);
        assert_eq!(
            r.meaning().unwrap(),
            "20.10 means 20.10.24, the newest 20.10 release"
        );
        let r: VersionRequest = "v17.06".parse().unwrap();
        assert_eq!(r.version, DaemonVersion::new(17, 6, 2));
        assert_eq!(r.version.to_string(), "17.06.2");
        let r: VersionRequest = "23.0".parse().unwrap();
        assert_eq!(r.version.to_string(), "23.0.6");
        let exact: VersionRequest = "20.10.2".parse().unwrap();
        assert_eq!(exact.kind, RequestKind::Exact);
        assert_eq!(exact.meaning(), None);
        assert!(!exact.is_series());
    }

    #[test]
    fn a_series_not_in_the_table_is_its_first_release_with_a_note() {
        let r: VersionRequest = "26.0".parse().unwrap();
        assert_eq!(r.version, DaemonVersion::new(26, 0, 0));
        assert_eq!(r.kind, RequestKind::UntabledSeries);
        assert!(r.meaning().unwrap().contains("predicting 26.0.0"));
    }

    #[test]
    fn every_series_of_the_table_is_sorted_and_has_a_source() {
        for pair in LAST_PATCH.windows(2) {
            assert!((pair[0].0, pair[0].1) < (pair[1].0, pair[1].1), "{pair:?}");
        }
        for (major, minor, patch, source) in LAST_PATCH {
            let v = DaemonVersion::new(*major, *minor, *patch);
            assert!(
                source.ends_with(&format!("{v}")) || source.contains(&format!("v{v}")),
                "{v}: {source}"
            );
        }
    }

    #[test]
    fn the_relabel_rule_changes_inside_2010_at_patch_3() {
        let v = DaemonVersion::new(20, 10, 24);
        let runs = rule_within_series(v, DaemonVersion::evaluates_stored_source_for_relabel);
        let shown: Vec<(String, bool)> = runs.iter().map(|(r, b)| (r.to_string(), *b)).collect();
        assert_eq!(
            shown,
            [
                ("20.10.0-20.10.2".to_string(), false),
                ("20.10.3+".to_string(), true)
            ]
        );
        assert_eq!(runs[1].0.last, v);
        // Not inside 24.0, nor inside the current series.
        assert_eq!(
            rule_within_series(
                DaemonVersion::new(24, 0, 9),
                DaemonVersion::evaluates_stored_source_for_relabel
            )
            .len(),
            1
        );
        let names: Vec<&str> = rules_changing_within_series(v)
            .iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["evaluating the stored Source of a z/Z mount"]);
        assert!(rules_changing_within_series(DaemonVersion::CURRENT).is_empty());
    }

    #[test]
    fn behaviours_split_a_series_where_any_rule_changes() {
        let ranges = behaviours_within_series(DaemonVersion::new(20, 10, 0));
        let shown: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
        assert_eq!(shown, ["20.10.0-20.10.2", "20.10.3+"]);
        assert!(ranges[1].contains(DaemonVersion::new(20, 10, 24)));
        assert_eq!(
            behaviours_within_series(DaemonVersion::new(18, 9, 9)).len(),
            1
        );
    }
}
