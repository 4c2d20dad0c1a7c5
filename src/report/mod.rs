//! What a check found: one `Finding` per problem, with the text dockerd would
//! print where there is one, and a one-line fix.
//!
//! `scan` and `verify` both produce findings; the CLI renders them as text or
//! JSON. Nothing here knows about the terminal.

use serde::Serialize;

mod kind;
pub use kind::FindingKind;

/// How bad a finding is for the daemon and the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// dockerd will not start at all: every container is down.
    Fatal,
    /// This mount point (or container) will make `docker start` fail.
    Error,
    /// It starts, but not as the user expects (data missing, labels lost).
    Warning,
    /// Worth knowing; nothing breaks.
    Info,
}

impl Severity {
    /// Whether this finding makes the checked thing "broken" (exit 1).
    pub fn is_failure(self) -> bool {
        matches!(self, Severity::Fatal | Severity::Error)
    }

    pub fn label(self) -> &'static str {
        match self {
            Severity::Fatal => "fatal",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One problem, stated the way the daemon states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// A stable machine-readable kind, e.g. `volume-missing`.
    pub kind: FindingKind,
    /// What dockerd prints (or would log) for this problem, verbatim where
    /// the daemon has a text; otherwise our own description.
    pub message: String,
    /// One line telling the user what to do about it.
    pub fix: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        kind: FindingKind,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            kind,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// Whether any finding in the list breaks the checked thing.
pub fn any_failure<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> bool {
    findings.into_iter().any(|f| f.severity.is_failure())
}
