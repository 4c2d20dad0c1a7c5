//! A container's verdict across the patch releases of one series: when the
//! user names a series (`--daemon-version 20.10`), the prediction is for
//! its newest release, but a host may run an older one, and a rule the
//! verdict depends on may change inside the series (20.10.3 started to
//! evaluate the stored Source of z/Z mounts). The thresholds stay in
//! `daemon_version`; this only asks them, and verifies again at the first
//! release of each range where every rule answers the same.

use serde::Serialize;

use super::{verify_container, VerifyOptions, World};
use crate::daemon_version::{
    behaviours_within_series, rule_within_series, rules_changing_within_series, PatchRange,
};
use crate::dataroot::containers::ContainerSlot;

/// How the verdict changes inside the series, when it does.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesVerdict {
    /// Each range of releases and whether the container starts there.
    pub ranges: Vec<SeriesRange>,
    /// The rules that change inside the series, with the release each
    /// changes at: `evaluating the stored Source of a z/Z mount (20.10.3)`.
    pub rules: Vec<String>,
    /// `20.10.0-20.10.2 would start it; 20.10.3+ fail`.
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SeriesRange {
    pub releases: String,
    pub starts: bool,
}

/// `None` when every release of the series gives the same verdict.
pub fn verdict_across_series(
    world: &World,
    slot: &ContainerSlot,
    opts: &VerifyOptions,
) -> Option<SeriesVerdict> {
    let ranges = behaviours_within_series(opts.version);
    if ranges.len() < 2 {
        return None;
    }
    let mut merged: Vec<(PatchRange, bool)> = Vec::new();
    for range in ranges {
        let at = VerifyOptions {
            version: range.first,
            ..opts.clone()
        };
        let starts = verify_container(world, slot, &at).ok;
        match merged.last_mut() {
            Some((prev, was)) if *was == starts => {
                prev.last = range.last;
                prev.to_end = range.to_end;
            }
            _ => merged.push((range, starts)),
        }
    }
    if merged.len() < 2 {
        return None;
    }
    let text = merged
        .iter()
        .map(|(range, starts)| {
            if *starts {
                format!("{range} would start it")
            } else {
                format!("{range} fail")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let rules = rules_changing_within_series(opts.version)
        .iter()
        .map(|rule| {
            let at: Vec<String> = rule_within_series(opts.version, rule.test)
                .iter()
                .skip(1)
                .map(|(range, _)| range.first.to_string())
                .collect();
            format!("{} ({})", rule.name, at.join(", "))
        })
        .collect();
    Some(SeriesVerdict {
        ranges: merged
            .iter()
            .map(|(range, starts)| SeriesRange {
                releases: range.to_string(),
                starts: *starts,
            })
            .collect(),
        rules,
        text,
    })
}
