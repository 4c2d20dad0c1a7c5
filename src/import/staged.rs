//! A bundle read into staging is a full one or a delta, told apart by its
//! header: `Dispatch` hands the reader's entries to the `Stager` or to a
//! `delta::DeltaStager`, and `import_delta` takes a staged delta to its
//! end (`delta::commit`), as `import_locked` does a full one.

use std::io::Read;

use super::stage::Stager;
use super::{collect_verify_slots, delta, ImportError, ImportOptions, ImportReport};
use crate::bundle::reader::{self, ReadError};
use crate::bundle::{BundleHeader, Trailer};
use crate::dataroot::DataRoot;
use crate::interrupt;

/// A bundle read into staging: a full one (with its plan), or a delta.
pub(super) enum Staged<'a> {
    Full(Box<ImportReport>),
    Delta(Box<StagedDelta<'a>>),
}

pub(super) struct StagedDelta<'a> {
    pub(super) stage: delta::DeltaStager<'a>,
    pub(super) header: BundleHeader,
    pub(super) trailer: Trailer,
}

/// The reader's visitor: a full bundle goes to the `Stager`, a delta (its
/// header names a base round) to a `DeltaStager`.
pub(super) struct Dispatch<'s, 'a> {
    pub(super) full: &'s mut Stager<'a>,
    pub(super) delta: Option<delta::DeltaStager<'a>>,
    pub(super) root: &'a DataRoot,
    pub(super) dry_run: bool,
}

impl reader::Visitor for Dispatch<'_, '_> {
    fn header(&mut self, header: &BundleHeader) -> Result<(), ReadError> {
        if header.round.as_ref().is_some_and(|r| r.base.is_some()) {
            let mut d = delta::DeltaStager::new(self.root, self.dry_run);
            let r = d.header(header);
            self.delta = Some(d);
            return r;
        }
        self.full.header(header)
    }

    fn entry(
        &mut self,
        header: &BundleHeader,
        meta: &crate::bundle::EntryMeta,
        place: crate::bundle::Place<'_>,
        data: &mut dyn Read,
    ) -> Result<(), ReadError> {
        match &mut self.delta {
            Some(d) => d.entry(header, meta, place, data),
            None if meta.delta.is_some() => Err(ReadError::Hostile {
                entry: String::from_utf8_lossy(&meta.path).into_owned(),
                reason: "a delta's entry in a bundle that is no delta".into(),
            }),
            None => self.full.entry(header, meta, place, data),
        }
    }

    fn digested(
        &mut self,
        meta: &crate::bundle::EntryMeta,
        place: crate::bundle::Place<'_>,
        digest: Option<&[u8; 32]>,
    ) -> Result<(), ReadError> {
        match &mut self.delta {
            Some(_) => Ok(()),
            None => self.full.digested(meta, place, digest),
        }
    }
}

/// A staged delta: checked and applied (`delta::commit`), or in a dry
/// run only checked against the target.
pub(super) fn import_delta(
    root: &DataRoot,
    staged: StagedDelta<'_>,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let StagedDelta {
        mut stage,
        header,
        trailer,
    } = staged;
    let mut report = ImportReport::new(header, trailer, opts.dry_run);
    report.needed_bytes = stage.data_bytes;
    let result = delta::commit(
        root,
        &mut stage,
        &report.header,
        &report.trailer,
        opts.dry_run,
    );
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(ImportError::Refused(why)) if opts.dry_run => {
            report.refusals = why;
            stage.discard();
            return Ok(report);
        }
        Err(e) => {
            stage.discard();
            return Err(e);
        }
    };
    let db = root.metadata_db();
    for vol in &outcome.records_pending {
        report.pending.push(format!(
            "the labels, driver or options of volume `{vol}` changed on the source since the base round, and a running dockerd holds {}: they were not written; stop dockerd and import the next round (its records are written then)",
            db.display()
        ));
    }
    if !outcome.records_unknown.is_empty() {
        report.warnings.push(format!(
            "a running dockerd holds {}, and the base of {} does not say which labels and options its round wrote: they were neither checked nor written",
            db.display(),
            outcome.records_unknown.join(", ")
        ));
    }
    for vol in delta::base::left_out(root, &outcome.base, &report.header) {
        report.warnings.push(format!(
            "volume `{vol}` is in round {} but not in this round (the source no longer exports it): left on the target as that round had it; `docker volume rm {vol}` removes it if it is not wanted",
            outcome.base
        ));
    }
    report.delta = Some(outcome);
    if let Some(configs) = stage.containers.take() {
        if let Ok(keep) = tempfile::tempdir() {
            if let Err(e) = collect_verify_slots(root, configs.path(), keep.path(), &mut report) {
                report
                    .pending
                    .push(format!("the carried containers cannot be verified: {e}"));
            }
            report._bundle_configs = Some(keep);
        }
    }
    report.interrupted = interrupt::requested();
    Ok(report)
}
