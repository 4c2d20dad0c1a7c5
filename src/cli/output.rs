//! The `--json` documents of the commands that are not a check (`scan`
//! and `verify` serialize their reports directly): one typed struct each,
//! so that the README's JSON section, the code and the scripts that read
//! it agree on every field. Built by the commands from the library's
//! reports; nothing here decides anything.

use std::path::Path;

use serde::Serialize;

use crate::bundle::{BundleHeader, Trailer, VolumeSummary};
use crate::import::delta::{DeltaOutcome, DeltaRecovery};
use crate::import::{Conflict, ImportReport, Item, MetadataOutcome, Recovered, RecoveryOutcome};
use crate::verify::ContainerReport;

/// Any command's error (exit 1 or 2), printed when nothing else was.
#[derive(Debug, Serialize)]
pub struct ErrorDoc<'a> {
    pub ok: bool,
    pub error: &'a str,
    pub exit_code: u8,
    /// A refused import's reasons, the list its `--dry-run` gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusals: Option<&'a [String]>,
}

/// `import --dry-run`.
#[derive(Debug, Serialize)]
pub struct ImportPlan<'a> {
    pub ok: bool,
    pub dry_run: bool,
    pub create: &'a [String],
    pub conflicts: Vec<ConflictDoc<'a>>,
    pub bytes: u64,
    pub needed_bytes: u64,
    pub files: u64,
    pub free_bytes: u64,
    pub refusals: &'a [String],
    pub bind_data: Vec<&'a str>,
    pub delta: Option<&'a DeltaOutcome>,
}

impl<'a> ImportPlan<'a> {
    pub fn of(report: &'a ImportReport) -> ImportPlan<'a> {
        ImportPlan {
            ok: report.refusals.is_empty(),
            dry_run: true,
            create: &report.create,
            conflicts: report.conflicts.iter().map(ConflictDoc::of).collect(),
            bytes: report.trailer.bytes,
            needed_bytes: report.needed_bytes,
            files: report.trailer.files,
            free_bytes: report.free_bytes,
            refusals: &report.refusals,
            bind_data: bind_targets(report),
            delta: report.delta.as_ref(),
        }
    }
}

/// Where carried bind volumes' data goes (after --map-path).
pub fn bind_targets(report: &ImportReport) -> Vec<&str> {
    report
        .header
        .volumes
        .iter()
        .filter_map(|v| v.device.as_ref().filter(|d| d.data_carried))
        .map(|d| d.device.as_str())
        .collect()
}

/// A volume, checkpoint or bind target that exists on the target.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ConflictDoc<'a> {
    Volume {
        volume: &'a str,
        identical: Option<bool>,
    },
    Checkpoint {
        checkpoint: &'a str,
        container: &'a str,
        identical: Option<bool>,
    },
    BindData {
        bind_data: &'a Path,
        volume: &'a str,
        identical: Option<bool>,
    },
}

impl<'a> ConflictDoc<'a> {
    fn of(c: &'a Conflict) -> ConflictDoc<'a> {
        let identical = c.identical;
        match &c.item {
            Item::Volume { name } => ConflictDoc::Volume {
                volume: name,
                identical,
            },
            Item::Checkpoint { container, name } => ConflictDoc::Checkpoint {
                checkpoint: name,
                container,
                identical,
            },
            Item::BindData { volume, target, .. } => ConflictDoc::BindData {
                bind_data: target,
                volume,
                identical,
            },
        }
    }
}

/// `import`, once committed.
#[derive(Debug, Serialize)]
pub struct ImportDone<'a> {
    pub ok: bool,
    pub dry_run: bool,
    pub created: Vec<&'a String>,
    pub replaced: &'a [String],
    pub skipped_identical: &'a [String],
    pub checkpoints: &'a [String],
    pub bind_data: &'a [String],
    pub rewritten_sources: &'a [String],
    pub metadata: Option<MetadataDoc<'a>>,
    pub recovered: Vec<RecoveredDoc<'a>>,
    pub pending: &'a [String],
    pub bases: &'a [String],
    pub warnings: &'a [String],
    pub bytes: u64,
    pub files: u64,
    pub containers_from_bundle: &'a [String],
    pub delta: Option<&'a DeltaOutcome>,
    pub verify: &'a [ContainerReport],
}

impl<'a> ImportDone<'a> {
    pub fn of(report: &'a ImportReport, verdicts: &'a [ContainerReport], ok: bool) -> Self {
        ImportDone {
            ok,
            dry_run: false,
            created: report
                .create
                .iter()
                .filter(|v| !report.replaced.contains(v) && !report.skipped_identical.contains(v))
                .collect(),
            replaced: &report.replaced,
            skipped_identical: &report.skipped_identical,
            checkpoints: &report.checkpoints,
            bind_data: &report.bind_data,
            rewritten_sources: &report.rewritten_sources,
            metadata: report.metadata.as_ref().map(MetadataDoc::of),
            recovered: report.recovered.iter().map(RecoveredDoc::of).collect(),
            pending: &report.pending,
            bases: &report.bases,
            warnings: &report.warnings,
            bytes: report.trailer.bytes,
            files: report.trailer.files,
            containers_from_bundle: &report.containers_from_bundle,
            delta: report.delta.as_ref(),
            verify: verdicts,
        }
    }
}

/// What became of the volumes' metadata.db records.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MetadataDoc<'a> {
    Written {
        written: usize,
    },
    DaemonRunning {
        written: usize,
        daemon_running: bool,
    },
    Registered {
        registered: usize,
        failed: Vec<RegistrationFailed<'a>>,
    },
}

#[derive(Debug, Serialize)]
pub struct RegistrationFailed<'a> {
    pub volume: &'a str,
    pub error: &'a str,
}

impl<'a> MetadataDoc<'a> {
    fn of(m: &'a MetadataOutcome) -> MetadataDoc<'a> {
        match m {
            MetadataOutcome::Written(n) => MetadataDoc::Written { written: *n },
            MetadataOutcome::DaemonRunning => MetadataDoc::DaemonRunning {
                written: 0,
                daemon_running: true,
            },
            MetadataOutcome::Registered { ok, failed } => MetadataDoc::Registered {
                registered: *ok,
                failed: failed
                    .iter()
                    .map(|(volume, error)| RegistrationFailed { volume, error })
                    .collect(),
            },
        }
    }
}

/// `recover`.
#[derive(Debug, Serialize)]
pub struct RecoverDoc<'a> {
    pub ok: bool,
    pub data_root: &'a Path,
    pub recovered: Vec<RecoveredDoc<'a>>,
}

/// One interrupted import, settled (by `recover` or by an import first).
#[derive(Debug, Serialize)]
pub struct RecoveredDoc<'a> {
    pub staging: &'a Path,
    /// `finished`, `rolled-back` or `removed-leftover`.
    pub outcome: &'static str,
    /// A full import's: its bundle, source and number of moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moves: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten_sources: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<&'a [String]>,
    /// A leftover staging's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// A delta import's: its rounds.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<&'a str>,
}

impl<'a> RecoveredDoc<'a> {
    pub fn of(r: &'a Recovered) -> RecoveredDoc<'a> {
        let mut doc = RecoveredDoc {
            staging: &r.staging,
            outcome: "finished",
            bundle: None,
            source_host: None,
            moves: None,
            rewritten_sources: None,
            pending: None,
            bytes: None,
            delta: false,
            base: None,
            round: None,
        };
        match &r.outcome {
            RecoveryOutcome::Finished {
                journal,
                rewritten,
                pending,
            } => {
                doc.bundle = Some(&journal.bundle.entries_sha256);
                doc.source_host = Some(&journal.bundle.source_host);
                doc.moves = Some(journal.moves.len());
                doc.rewritten_sources = Some(rewritten);
                doc.pending = Some(pending);
            }
            RecoveryOutcome::RolledBack { journal } => {
                doc.outcome = "rolled-back";
                doc.bundle = Some(&journal.bundle.entries_sha256);
                doc.source_host = Some(&journal.bundle.source_host);
                doc.moves = Some(journal.moves.len());
            }
            RecoveryOutcome::RemovedLeftover { bytes } => {
                doc.outcome = "removed-leftover";
                doc.bytes = Some(*bytes);
            }
            RecoveryOutcome::Delta(d) => {
                let (outcome, base, round) = match d {
                    DeltaRecovery::RolledBack { base, round } => ("rolled-back", base, round),
                    DeltaRecovery::Finished { base, round } => ("finished", base, round),
                };
                doc.outcome = outcome;
                doc.delta = true;
                doc.base = Some(base);
                doc.round = Some(round);
            }
        }
        doc
    }
}

/// `export`.
#[derive(Debug, Serialize)]
pub struct ExportDoc<'a> {
    pub ok: bool,
    pub output: &'a Path,
    pub containers: Vec<&'a str>,
    pub volumes: &'a std::collections::BTreeMap<String, VolumeSummary>,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub skipped: &'a [String],
    pub changed_while_read: &'a [String],
    pub data_not_carried: Vec<String>,
}

/// `inspect BUNDLE [--check]`.
#[derive(Debug, Serialize)]
pub struct InspectDoc<'a> {
    pub ok: bool,
    pub checked: bool,
    pub header: &'a BundleHeader,
    pub trailer: &'a Trailer,
}

/// `inspect BUNDLE --manifest FILE`.
#[derive(Debug, Serialize)]
pub struct InspectManifestDoc<'a> {
    pub ok: bool,
    pub checked: bool,
    pub header: &'a BundleHeader,
    pub trailer: &'a Trailer,
    pub manifest: &'a Path,
    pub round: &'a str,
    pub trees_checked: bool,
    pub volumes: &'a [crate::manifest::from_bundle::VolumeTree],
}

/// `inspect --check` of a bundle that fails its check (exit 1).
#[derive(Debug, Serialize)]
pub struct CheckFailedDoc {
    pub ok: bool,
    pub checked: bool,
    pub error: String,
}
