//! Progress reporting from long library work (export, import, inspect).
//!
//! The library reports to this trait and never draws anything; the CLI
//! implements it with indicatif on stderr, and hides it for `-q` or when
//! stderr is not a terminal.

/// Receives progress of a long operation. Implementations must be cheap:
/// `advance` is called for every chunk of data.
pub trait Progress: Send + Sync {
    /// A new phase or volume begins; `total` bytes when known.
    fn begin(&self, label: &str, total: Option<u64>);
    /// `bytes` more were processed in the current phase.
    fn advance(&self, bytes: u64);
    /// The current phase is done.
    fn end(&self);
    /// Whether the user asked to stop (e.g. Ctrl-C): long work checks it
    /// between entries and stops with an error, so cleanup runs.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _label: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn end(&self) {}
}
