//! Finding the daemon that serves a data-root, if one runs, and the dockerd
//! generation to predict for.

use crate::daemon_version::DaemonVersion;
use crate::dataroot::DataRoot;
use crate::engine::{default_host, DaemonInfo, DockerEngine, Engine, EngineError};

use super::Cli;

/// How long a probe of a daemon may take before volmig goes on without it.
const PROBE_TIMEOUT_SECS: u64 = 5;

/// Where the predicted version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionSource {
    Flag,
    Daemon,
    Default,
}

pub struct DaemonContext {
    pub version: DaemonVersion,
    pub source: VersionSource,
    /// The daemon serving this data-root, when one answers.
    pub engine: Option<DockerEngine>,
}

impl DaemonContext {
    pub fn host(cli: &Cli) -> String {
        cli.host.clone().unwrap_or_else(default_host)
    }

    /// Probes the host. A daemon that answers but serves another data-root
    /// is not this data-root's daemon and is left alone.
    pub fn probe(cli: &Cli, root: &DataRoot) -> DaemonContext {
        let found = DockerEngine::connect(&Self::host(cli), PROBE_TIMEOUT_SECS)
            .and_then(|e| e.info().map(|i| (e, i)))
            .ok()
            .filter(|(_, info)| info.serves(root.given()));
        let (engine, info) = match found {
            Some((e, i)) => (Some(e), Some(i)),
            None => (None, None),
        };
        // The daemon's own version, unless the flag says otherwise.
        let (version, source) = match (cli.daemon_version, &info) {
            (Some(v), _) => (v, VersionSource::Flag),
            (None, Some(i)) => match i.version.parse() {
                Ok(v) => (v, VersionSource::Daemon),
                Err(_) => (DaemonVersion::CURRENT, VersionSource::Default),
            },
            (None, None) => (DaemonVersion::CURRENT, VersionSource::Default),
        };
        DaemonContext {
            version,
            source,
            engine,
        }
    }

    /// Requires a daemon serving this data-root (for --pause/--stop).
    pub fn require(cli: &Cli, root: &DataRoot, why: &str) -> anyhow::Result<DaemonContext> {
        let host = Self::host(cli);
        let engine = DockerEngine::connect(&host, 30).map_err(|e| anyhow::anyhow!("{why} needs the Docker daemon: {e}; pass its socket with -H unix:///path/docker.sock"))?;
        let info = engine
            .info()
            .map_err(|e: EngineError| anyhow::anyhow!("{why}: {e}"))?;
        if !info.serves(root.given()) {
            anyhow::bail!(
                "{why}: the daemon at {host} serves `{}`, not `{}`: pass the right -H or --data-root",
                info.root_dir.display(),
                root.given().display()
            );
        }
        let mut ctx = Self::probe_from(cli, engine, info);
        ctx.source = if cli.daemon_version.is_some() {
            VersionSource::Flag
        } else {
            ctx.source
        };
        Ok(ctx)
    }

    fn probe_from(cli: &Cli, engine: DockerEngine, info: DaemonInfo) -> DaemonContext {
        let (version, source) = match cli.daemon_version {
            Some(v) => (v, VersionSource::Flag),
            None => match info.version.parse() {
                Ok(v) => (v, VersionSource::Daemon),
                Err(_) => (DaemonVersion::CURRENT, VersionSource::Default),
            },
        };
        DaemonContext {
            version,
            source,
            engine: Some(engine),
        }
    }

    /// `dockerd 20.10.24 (the daemon at unix:///...)` for text output.
    pub fn describe(&self, cli: &Cli) -> String {
        match self.source {
            VersionSource::Flag => format!("dockerd {}", self.version),
            VersionSource::Daemon => format!("dockerd {}, the daemon answering at {}", self.version, Self::host(cli)),
            VersionSource::Default => format!("dockerd {} (current; no daemon serves this data-root: pass --daemon-version for another)", self.version),
        }
    }
}
