//! Finding the daemon that serves a data-root, if one runs, and the dockerd
//! release to predict for.
//!
//! Precedence: `--daemon-version` (a series means its newest release), the
//! answering daemon's own version (Engine API), the installed `dockerd
//! --version` (the daemon that will run when it is started), and last
//! `current`, the newest behaviour modelled. Every output says which.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::daemon_version::{DaemonVersion, VersionRequest};
use crate::dataroot::{DataRoot, RemapRoot};
use crate::dockerd_binary::{self, InstalledDockerd, Lookup, LookupError};
use crate::engine::context::{self, ClientSettings, ContextError, Endpoint, DEFAULT_HOST};
use crate::engine::{DaemonInfo, DockerEngine, Engine, EngineError};

use super::plugin::DockerGlobals;
use super::Cli;

/// How long a probe of a daemon may take before volmig goes on without it.
const PROBE_TIMEOUT_SECS: u64 = 5;

/// Where dockerd keeps its data unless told otherwise.
const DEFAULT_DATA_ROOT: &str = "/var/lib/docker";

/// Settles the daemon and the data-root before a command runs: the host
/// the docker CLI would use (`-H`, docker's own options as a plugin, then
/// its environment and context: `engine::context`), and `--data-root`,
/// else the Docker Root Dir of the daemon answering at a local socket,
/// else /var/lib/docker. Afterwards `cli.host` is always set.
pub fn settle(cli: &mut Cli, docker: DockerGlobals) -> anyhow::Result<()> {
    let settings = ClientSettings {
        host_flag: cli.host.clone().or(docker.host),
        context_flag: docker.context,
        config_flag: docker.config,
        ..ClientSettings::from_env()
    };
    let (endpoint, warning) =
        past_broken_config(context::resolve(&settings), cli.data_root_given.is_some()).map_err(
            |e| match e {
                ContextError::CurrentContext { .. } => anyhow::anyhow!(
                    "{e}; or, to work offline, pass --data-root DIR (the daemon is then optional)"
                ),
                e => e.into(),
            },
        )?;
    if let Some(warning) = warning {
        // On stderr even with -q, as the docker CLI's own warning: the
        // file stays broken until fixed. Never on stdout (--json).
        eprintln!("warning: {warning}");
    }
    cli.data_root = match &cli.data_root_given {
        Some(given) => given.clone(),
        None => daemon_data_root(&endpoint.host, cli)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_ROOT)),
    };
    cli.host = Some(endpoint.host);
    Ok(())
}

/// Whether to go on when the docker CLI's configuration does not resolve,
/// and the warning that says so. A host or context the user named (-H,
/// --context, DOCKER_HOST, DOCKER_CONTEXT) stays an error: another daemon
/// than the one asked for would be a surprise. config.json itself
/// unreadable or malformed: the docker CLI warns and goes on with its
/// defaults (28.x: "WARNING: Error parsing config file"), so volmig does
/// too. The current context config.json names, missing or unusable: the
/// docker CLI stops, and so does volmig without --data-root, where the
/// daemon names the data-root; with --data-root the daemon is only asked
/// whether it serves that data-root (`DaemonContext::probe` leaves one
/// serving another alone), so offline work goes on with the default socket.
fn past_broken_config(
    resolved: Result<Endpoint, ContextError>,
    data_root_given: bool,
) -> Result<(Endpoint, Option<String>), ContextError> {
    match resolved {
        Ok(endpoint) => Ok((endpoint, None)),
        Err(e @ ContextError::ConfigFile { .. }) => Ok((
            context::default_endpoint(),
            Some(format!(
                "{e}; going on without it, with {DEFAULT_HOST} (as the docker CLI does)"
            )),
        )),
        Err(e @ ContextError::CurrentContext { .. }) if data_root_given => Ok((
            context::default_endpoint(),
            Some(format!(
                "{e}; going on with {DEFAULT_HOST}, used only if its daemon serves --data-root"
            )),
        )),
        Err(e) => Err(e),
    }
}

/// The data-root of the daemon at `host`, when it is a local socket and a
/// daemon answers there (a tcp:// daemon's directories are on its host).
fn daemon_data_root(host: &str, cli: &Cli) -> Option<PathBuf> {
    if !host.starts_with("unix://") {
        return None;
    }
    let info = DockerEngine::connect(host, PROBE_TIMEOUT_SECS)
        .and_then(|e| e.info())
        .ok()?;
    data_root_of(&info.root_dir, cli.userns_remap)
}

/// The data-root for a daemon's Docker Root Dir: that directory, except
/// with --userns-remap, where the daemon reports its `<uid>.<gid>` subtree
/// and the data-root is the parent. None for an empty answer.
fn data_root_of(root_dir: &Path, remap: Option<RemapRoot>) -> Option<PathBuf> {
    if root_dir.as_os_str().is_empty() {
        return None;
    }
    match (remap, root_dir.file_name(), root_dir.parent()) {
        (Some(remap), Some(name), Some(parent)) if name == remap.dir_name().as_str() => {
            Some(parent.to_path_buf())
        }
        _ => Some(root_dir.to_path_buf()),
    }
}

/// Where the predicted version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionSource {
    Flag,
    Daemon,
    /// `dockerd --version` of the installed binary (no daemon answered).
    Installed,
    Default,
}

pub struct DaemonContext {
    pub version: DaemonVersion,
    pub source: VersionSource,
    /// The daemon serving this data-root, when one answers.
    pub engine: Option<DockerEngine>,
    /// `--daemon-version` as given.
    pub request: Option<VersionRequest>,
    /// The installed dockerd, when its version is the one predicted.
    pub installed: Option<InstalledDockerd>,
    /// Why the installed dockerd was not used, when the default is.
    pub lookup_error: Option<LookupError>,
    /// The daemon that answered at the host but serves another data-root.
    pub other_root: Option<PathBuf>,
    pub host: String,
}

/// The prediction's provenance, as `--json` prints it.
#[derive(Serialize)]
pub struct Prediction {
    pub version: String,
    pub source: VersionSource,
    /// `--daemon-version` as given, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// `20.10 means 20.10.24, the newest 20.10 release`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meaning: Option<String>,
    /// Whether a daemon serving this data-root answered at `host`.
    pub daemon_running: bool,
    pub host: String,
    /// The binary whose `--version` was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_dockerd: Option<InstalledDockerd>,
    /// Why no installed dockerd was used, when none was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The same in one sentence, as the text output says it.
    pub text: String,
}

impl DaemonContext {
    pub fn host(cli: &Cli) -> String {
        cli.host.clone().unwrap_or_else(|| DEFAULT_HOST.to_string())
    }

    /// Probes the host. A daemon that answers but serves another data-root
    /// is not this data-root's daemon and is left alone.
    pub fn probe(cli: &Cli, root: &DataRoot) -> DaemonContext {
        let answered = Self::answering(cli);
        let other_root = answered
            .as_ref()
            .filter(|(_, info)| !info.serves(root.given()))
            .map(|(_, info)| info.root_dir.clone());
        match answered.filter(|(_, info)| info.serves(root.given())) {
            Some((engine, info)) => Self::resolve(cli, Some(engine), Some(&info), other_root),
            None => Self::resolve(cli, None, None, other_root),
        }
    }

    /// The daemon serving this data-root, if one answers; for commands
    /// that need no version (export), so the installed dockerd is not run.
    pub fn serving(cli: &Cli, root: &DataRoot) -> Option<DockerEngine> {
        Self::answering(cli)
            .filter(|(_, info)| info.serves(root.given()))
            .map(|(engine, _)| engine)
    }

    /// The daemon at the host, if one answers, with what it says of itself.
    fn answering(cli: &Cli) -> Option<(DockerEngine, DaemonInfo)> {
        DockerEngine::connect(&Self::host(cli), PROBE_TIMEOUT_SECS)
            .and_then(|e| e.info().map(|i| (e, i)))
            .ok()
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
        Ok(Self::resolve(cli, Some(engine), Some(&info), None))
    }

    /// Picks the version by the precedence above; the installed binary is
    /// run only when neither the flag nor a daemon decides.
    fn resolve(
        cli: &Cli,
        engine: Option<DockerEngine>,
        info: Option<&DaemonInfo>,
        other_root: Option<PathBuf>,
    ) -> DaemonContext {
        let mut ctx = DaemonContext {
            version: DaemonVersion::CURRENT,
            source: VersionSource::Default,
            engine,
            request: cli.daemon_version.clone(),
            installed: None,
            lookup_error: None,
            other_root,
            host: Self::host(cli),
        };
        if let Some(request) = &cli.daemon_version {
            ctx.version = request.version;
            ctx.source = VersionSource::Flag;
            return ctx;
        }
        if let Some(v) = info.and_then(|i| i.version.parse().ok()) {
            ctx.version = v;
            ctx.source = VersionSource::Daemon;
            return ctx;
        }
        let (override_path, path_var) = dockerd_binary::from_env();
        match dockerd_binary::installed(&Lookup {
            override_path: override_path.as_deref(),
            path_var: path_var.as_deref(),
        }) {
            Ok(found) => {
                ctx.version = found.version;
                ctx.source = VersionSource::Installed;
                ctx.installed = Some(found);
            }
            Err(e) => ctx.lookup_error = Some(e),
        }
        ctx
    }

    /// Whether a daemon serving this data-root answered.
    pub fn running(&self) -> bool {
        self.engine.is_some()
    }

    /// Why no daemon's own version was used: none answered, or the one
    /// that answered serves another data-root.
    fn no_daemon(&self) -> String {
        match &self.other_root {
            Some(other) => format!(
                "the daemon at {} serves `{}`, not this data-root",
                self.host,
                other.display()
            ),
            None => format!(
                "no daemon answers at {} (dockerd is not running)",
                self.host
            ),
        }
    }

    /// `dockerd 20.10.24, the daemon answering at unix:///...` for text
    /// output: the release, and where it came from.
    pub fn describe(&self) -> String {
        let v = self.version;
        match (self.source, &self.request, &self.installed) {
            (VersionSource::Flag, Some(r), _) => match r.meaning() {
                Some(meaning) => format!("dockerd {v}: --daemon-version {meaning}"),
                None => format!("dockerd {v}, from --daemon-version"),
            },
            (VersionSource::Daemon, _, _) => {
                format!("dockerd {v}, the daemon answering at {}", self.host)
            }
            (VersionSource::Installed, _, Some(found)) => format!(
                "dockerd {v}, the installed `{}` (`{}`); {}",
                found.path.display(),
                found.output,
                self.no_daemon()
            ),
            _ => format!(
                "dockerd {v} (current, the newest behaviour modelled: {}, and no installed dockerd gave a version: {}; pass --daemon-version for another)",
                self.no_daemon(),
                self.lookup_error
                    .as_ref()
                    .map_or_else(|| "none found".to_string(), |e| e.to_string())
            ),
        }
    }

    /// The provenance for `--json`.
    pub fn prediction(&self) -> Prediction {
        Prediction {
            version: self.version.to_string(),
            source: self.source,
            requested: self.request.as_ref().map(|r| r.given.clone()),
            meaning: self.request.as_ref().and_then(|r| r.meaning()),
            daemon_running: self.running(),
            host: self.host.clone(),
            installed_dockerd: self.installed.clone(),
            note: self.lookup_error.as_ref().map(|e| e.to_string()),
            text: self.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_config_json_is_a_warning_and_a_named_context_an_error() {
        let unusable = || {
            Box::new(ContextError::Malformed {
                path: "/h/.docker/config.json".into(),
                reason: "key must be a string".into(),
            })
        };
        let config_file = || ContextError::ConfigFile { inner: unusable() };
        let current = || ContextError::CurrentContext {
            config: "/h/.docker/config.json".into(),
            inner: unusable(),
        };
        let named = || ContextError::NoSuchContext {
            name: "gone".into(),
            meta: "/h/.docker/contexts/meta/x/meta.json".into(),
        };
        for data_root_given in [true, false] {
            let (endpoint, warning) = past_broken_config(Err(config_file()), data_root_given)
                .expect("a broken config.json stops nothing");
            assert_eq!(endpoint, context::default_endpoint());
            let warning = warning.expect("no warning");
            assert!(warning.contains("/h/.docker/config.json") && warning.contains(DEFAULT_HOST));
            assert!(past_broken_config(Err(named()), data_root_given).is_err());
        }
        let (_, warning) = past_broken_config(Err(current()), true).unwrap();
        assert!(warning.is_some_and(|w| w.contains("--data-root")));
        assert!(past_broken_config(Err(current()), false).is_err());
        let fine = context::default_endpoint();
        assert_eq!(
            past_broken_config(Ok(fine.clone()), false).unwrap(),
            (fine, None)
        );
    }

    #[test]
    fn the_daemon_s_root_dir_is_the_data_root_and_a_remapped_one_its_parent() {
        let remap = RemapRoot {
            uid: 100000,
            gid: 100000,
        };
        let plain = Path::new("/home/u/.local/share/docker");
        assert_eq!(data_root_of(plain, None).as_deref(), Some(plain));
        assert_eq!(data_root_of(plain, Some(remap)).as_deref(), Some(plain));
        let remapped = Path::new("/var/lib/docker/100000.100000");
        assert_eq!(
            data_root_of(remapped, Some(remap)).as_deref(),
            Some(Path::new("/var/lib/docker"))
        );
        // Not told of a remap: never guessed from the name.
        assert_eq!(data_root_of(remapped, None).as_deref(), Some(remapped));
        assert_eq!(data_root_of(Path::new(""), None), None);
    }
}
