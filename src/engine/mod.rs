//! The Docker Engine API, behind a trait so the rest of volmig can be
//! tested with a fake and never depends on a daemon being there.
//!
//! volmig talks to a daemon for four things: its version (so predictions
//! use its texts), registering volumes laid down while it runs (the volume
//! scan ran at its start and will not see them otherwise), reading volume
//! labels while it holds metadata.db, and container state (pause/stop
//! around an export). `DockerEngine` implements it with bollard, a
//! maintained client, on a single-threaded tokio runtime.

pub mod context;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::dataroot::metadata::VolumeRecord;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no Docker daemon answers at {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("invalid --host `{0}`: expected unix:///path/to/docker.sock or tcp://HOST:PORT")]
    BadHost(String),
    #[error("the daemon refused {what}: {message}")]
    Daemon { what: String, message: String },
}

/// What the daemon says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    pub version: String,
    pub api_version: String,
    /// Its `--data-root` (`DockerRootDir`).
    pub root_dir: PathBuf,
}

impl DaemonInfo {
    /// Whether this daemon serves the data-root at `path` (compared after
    /// resolving symlinks, as both sides may name it differently).
    pub fn serves(&self, path: &Path) -> bool {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        canon(&self.root_dir) == canon(path)
    }
}

/// A container's run state as the daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Stopped,
}

/// The operations volmig needs from a daemon.
pub trait Engine {
    fn info(&self) -> Result<DaemonInfo, EngineError>;
    /// `POST /volumes/create`: on a directory already in place the local
    /// driver registers it and keeps its data (seen on 20.10.24).
    fn create_volume(&self, record: &VolumeRecord) -> Result<(), EngineError>;
    /// The volume's record (driver, labels, options), `None` if unknown.
    fn volume(&self, name: &str) -> Result<Option<VolumeRecord>, EngineError>;
    fn container_state(&self, id: &str) -> Result<RunState, EngineError>;
    fn pause(&self, id: &str) -> Result<(), EngineError>;
    fn unpause(&self, id: &str) -> Result<(), EngineError>;
    fn stop(&self, id: &str) -> Result<(), EngineError>;
    fn start(&self, id: &str) -> Result<(), EngineError>;
}

/// Containers paused or stopped for an export, and how to put them back:
/// `restore` does it (and says what failed); dropping does it too, so an
/// error or a panic in between never leaves a container paused.
pub struct Quiesce<'e> {
    engine: &'e dyn Engine,
    /// (container ID, paused by us: unpause; else stopped by us: start).
    done: Vec<(String, bool)>,
}

impl<'e> Quiesce<'e> {
    pub fn new(engine: &'e dyn Engine) -> Self {
        Quiesce {
            engine,
            done: Vec::new(),
        }
    }

    /// Pauses (or stops) `id` if it runs; leaves it alone otherwise (a
    /// paused container stays paused, a stopped one stopped).
    pub fn quiet(&mut self, id: &str, pause: bool) -> Result<(), EngineError> {
        if self.engine.container_state(id)? != RunState::Running {
            return Ok(());
        }
        if pause {
            self.engine.pause(id)?;
        } else {
            self.engine.stop(id)?;
        }
        self.done.push((id.to_string(), pause));
        Ok(())
    }

    /// Puts every container back, in reverse order; tries them all and
    /// reports the first failure with the command that fixes it.
    pub fn restore(&mut self) -> Result<(), EngineError> {
        let mut first_error = None;
        for (id, paused) in self.done.drain(..).rev() {
            let (result, verb) = if paused {
                (self.engine.unpause(&id), "unpause")
            } else {
                (self.engine.start(&id), "start")
            };
            if let Err(e) = result {
                first_error.get_or_insert(EngineError::Daemon {
                    what: format!("to put container {id} back as it was"),
                    message: format!("{e}; run docker {verb} {id}"),
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Quiesce<'_> {
    fn drop(&mut self) {
        // The caller reports restore's errors; here nothing is left to tell.
        let _ = self.restore();
    }
}

/// A daemon reached through bollard.
pub struct DockerEngine {
    host: String,
    docker: bollard::Docker,
    runtime: tokio::runtime::Runtime,
}

impl DockerEngine {
    /// Connects to `host` and negotiates the API version (dockerd 20.10
    /// speaks 1.41 and refuses newer clients).
    pub fn connect(host: &str, timeout_secs: u64) -> Result<DockerEngine, EngineError> {
        let unreachable = |reason: String| EngineError::Unreachable {
            host: host.to_string(),
            reason,
        };
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            bollard::Docker::connect_with_unix(path, timeout_secs, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            bollard::Docker::connect_with_http(host, timeout_secs, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(EngineError::BadHost(host.to_string()));
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        let docker = runtime
            .block_on(docker.negotiate_version())
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(DockerEngine {
            host: host.to_string(),
            docker,
            runtime,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn refused(what: &str, e: bollard::errors::Error) -> EngineError {
        let message = match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => message,
            other => other.to_string(),
        };
        EngineError::Daemon {
            what: what.to_string(),
            message,
        }
    }
}

fn to_hash(map: &Option<BTreeMap<String, String>>) -> Option<HashMap<String, String>> {
    map.as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

impl Engine for DockerEngine {
    fn info(&self) -> Result<DaemonInfo, EngineError> {
        let version = self
            .runtime
            .block_on(self.docker.version())
            .map_err(|e| Self::refused("version", e))?;
        let info = self
            .runtime
            .block_on(self.docker.info())
            .map_err(|e| Self::refused("info", e))?;
        Ok(DaemonInfo {
            version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            root_dir: PathBuf::from(info.docker_root_dir.unwrap_or_default()),
        })
    }

    fn create_volume(&self, record: &VolumeRecord) -> Result<(), EngineError> {
        let request = bollard::models::VolumeCreateRequest {
            name: Some(record.name.clone()),
            driver: Some(if record.driver.is_empty() {
                "local".into()
            } else {
                record.driver.clone()
            }),
            driver_opts: to_hash(&record.options),
            labels: to_hash(&record.labels),
            cluster_volume_spec: None,
        };
        self.runtime
            .block_on(self.docker.create_volume(request))
            .map(|_| ())
            .map_err(|e| Self::refused(&format!("to create volume {}", record.name), e))
    }

    fn volume(&self, name: &str) -> Result<Option<VolumeRecord>, EngineError> {
        match self.runtime.block_on(self.docker.inspect_volume(name)) {
            Ok(v) => Ok(Some(VolumeRecord {
                name: v.name,
                driver: v.driver,
                labels: Some(v.labels.into_iter().collect()),
                options: Some(v.options.into_iter().collect()),
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(Self::refused(&format!("to inspect volume {name}"), e)),
        }
    }

    fn container_state(&self, id: &str) -> Result<RunState, EngineError> {
        let c = self
            .runtime
            .block_on(self.docker.inspect_container(id, None))
            .map_err(|e| Self::refused(&format!("to inspect container {id}"), e))?;
        let state = c.state.unwrap_or_default();
        Ok(if state.paused.unwrap_or(false) {
            RunState::Paused
        } else if state.running.unwrap_or(false) {
            RunState::Running
        } else {
            RunState::Stopped
        })
    }

    fn pause(&self, id: &str) -> Result<(), EngineError> {
        self.runtime
            .block_on(self.docker.pause_container(id))
            .map_err(|e| Self::refused(&format!("to pause {id}"), e))
    }

    fn unpause(&self, id: &str) -> Result<(), EngineError> {
        self.runtime
            .block_on(self.docker.unpause_container(id))
            .map_err(|e| Self::refused(&format!("to unpause {id}"), e))
    }

    fn stop(&self, id: &str) -> Result<(), EngineError> {
        self.runtime
            .block_on(
                self.docker
                    .stop_container(id, None::<bollard::query_parameters::StopContainerOptions>),
            )
            .map_err(|e| Self::refused(&format!("to stop {id}"), e))
    }

    fn start(&self, id: &str) -> Result<(), EngineError> {
        self.runtime
            .block_on(
                self.docker
                    .start_container(id, None::<bollard::query_parameters::StartContainerOptions>),
            )
            .map_err(|e| Self::refused(&format!("to start {id}"), e))
    }
}
