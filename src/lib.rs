//! volmig: carry Docker volumes between data-roots and predict, offline, what
//! dockerd will do with a data-root and each container on it.
//!
//! The library never prints, never exits and never sees clap: `cli` is the
//! only place that talks to a terminal. Everything that knows a path under a
//! data-root lives in `dataroot`; `verify` is the model of dockerd itself.

pub mod atomic_file;
pub mod beneath;
pub mod bundle;
pub mod cli;
pub mod daemon_version;
pub mod dataroot;
pub mod docker_plugin;
pub mod dockerd_binary;
pub mod engine;
pub mod export;
pub mod fileattrs;
pub mod idmap;
pub mod import;
pub mod interrupt;
pub mod manifest;
pub mod progress;
pub mod report;
pub mod scan;
pub mod verify;
