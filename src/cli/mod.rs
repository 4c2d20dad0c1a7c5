//! The command line: clap structs, thin handlers, and the only code that
//! prints. Handlers turn flags into library options, call the library, and
//! render its reports as text or JSON on stdout.
//!
//! Exit codes: 0 all good, 1 the thing checked is broken, 2 the command
//! could not run. A closed stdout (`volmig ... | head`) is not an error.

mod daemon;
mod export;
mod generate;
mod import;
mod inspect;
mod install;
mod migrate;
mod output;
mod plugin;
mod progress;
mod recover;
mod render;
mod rewrite_sources;
mod scan;
mod signals;
mod verify;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use crate::daemon_version::VersionRequest;
use crate::dataroot::{DataRoot, RemapRoot};
use crate::idmap::{subid, IdMap};

/// Carry Docker containers' volumes between hosts or data-roots, and
/// predict what dockerd will do with them before it does it.
///
/// dockerd loads volumes once, at its start, from <data-root>/volumes, and
/// stops a container's start at the first mount point that does not
/// resolve. volmig reads the same files offline and lists every problem
/// with the daemon's own error text and a fix (scan, verify), and moves
/// volumes with every byte and attribute in one verifiable bundle
/// (export, import, inspect).
///
/// Exit codes: 0 all good, 1 the thing checked is broken, 2 the command
/// could not run (bad arguments or input; nothing was changed).
#[derive(Debug, Parser)]
#[command(name = "volmig", version = VERSION, max_term_width = 100)]
pub struct Cli {
    /// The daemon's data-root (dockerd --data-root). Default: the Docker
    /// Root Dir of the daemon answering at a unix:// host (see -H), else
    /// /var/lib/docker. Given, the daemon is optional: a docker context
    /// that config.json names but that cannot be used is then a warning.
    #[arg(
        id = "data_root",
        long = "data-root",
        global = true,
        value_name = "DIR",
        env = "VOLMIG_DATA_ROOT"
    )]
    pub data_root_given: Option<PathBuf>,

    /// The data-root used: `--data-root`, or the default found by
    /// `daemon::settle` before any command runs.
    #[arg(skip)]
    pub data_root: PathBuf,

    /// Print one JSON document on stdout (top-level boolean `ok`).
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only failures (nothing when all is well, and no progress); the exit code tells the rest.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// The dockerd release to predict for, where texts and rules differ
    /// (e.g. 17.06 says `volume not found`, 18.06+ `no such volume`;
    /// 20.10.3-25.x evaluate stale Source paths). A series without a patch
    /// level (20.10) means its newest release (20.10.24). Default: the
    /// version of the daemon serving this data-root when one answers, else
    /// the installed `dockerd --version` ($VOLMIG_DOCKERD, $PATH, /usr/sbin,
    /// ...), else current.
    #[arg(long, global = true, value_name = "VERSION")]
    pub daemon_version: Option<VersionRequest>,

    /// The Docker daemon to talk to, like the docker CLI: unix:///path or
    /// tcp://host:port. Default: $DOCKER_HOST, else the endpoint of the
    /// docker context in $DOCKER_CONTEXT or of `docker context use`
    /// ($DOCKER_CONFIG/config.json, default ~/.docker), else
    /// unix:///var/run/docker.sock. Used only when it serves --data-root.
    /// A context named by --context or $DOCKER_CONTEXT that cannot be used
    /// is an error; a broken config.json is a warning, and so is its
    /// currentContext with --data-root (without, an error): volmig goes on
    /// with unix:///var/run/docker.sock.
    #[arg(short = 'H', long, global = true, value_name = "HOST")]
    pub host: Option<String>,

    /// The daemon runs with --userns-remap: use the `<uid>.<gid>/` subtree
    /// of the data-root for this remapped root (`docker info` shows it as
    /// Docker Root Dir). export then writes volume data ids as the
    /// containers see them and import into it adds the daemon's range
    /// (owners, POSIX ACL entries, capability root ids); the ranges are
    /// those of the user whose first /etc/subuid range starts at UID
    /// (dockremap for --userns-remap=default). Never guessed: without it
    /// the top level is used and ids are carried unchanged.
    #[arg(long, global = true, value_name = "UID:GID")]
    pub userns_remap: Option<RemapRoot>,

    /// With --userns-remap: the daemon's range is COUNT ids from UID and
    /// from GID (container ids 0 to COUNT-1), instead of the remap user's
    /// ranges in /etc/subuid and /etc/subgid (for a data-root moved from
    /// another host; dockerd gives dockremap 65536).
    #[arg(long, global = true, value_name = "COUNT", requires = "userns_remap")]
    pub userns_remap_size: Option<u32>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the volumes dockerd would load from the data-root, with their
    /// options and labels, and every problem. Exit 1 if dockerd would not start.
    Scan(scan::ScanArgs),
    /// Resolve every mount point of each container as dockerd's start
    /// would. Exit 1 if any container would fail to start.
    Verify(verify::VerifyArgs),
    /// Write containers' mount points and every volume they use (named,
    /// anonymous, via --volumes-from), with opts.json and labels, into one
    /// verifiable bundle (a tar; `-o -` streams it).
    Export(export::ExportArgs),
    /// Recreate a bundle's volumes under --data-root, staged and
    /// all-or-nothing, then verify every carried container. Exit 1 if one
    /// would fail to start.
    Import(import::ImportArgs),
    /// Show what a bundle holds; --check re-hashes everything; --manifest
    /// FILE recovers the manifest of a full bundle whose own was lost.
    Inspect(inspect::InspectArgs),
    /// Finish or roll back an import that was interrupted (kill -9, power
    /// cut, a failed disk), and remove leftover staging. Every import does
    /// this first on its own; scan and verify report what is pending.
    Recover(recover::RecoverArgs),
    /// Move containers' volumes to another host or data-root in pre-copy
    /// rounds through a command that reaches it (--via 'ssh HOST'): a full
    /// round and deltas while they run, then a last delta with them paused
    /// or stopped. Prints each round's bytes and time and the downtime.
    Migrate(migrate::MigrateArgs),
    /// Point the containers' stored volume Source paths at this data-root
    /// (after a move to another path, which 20.10.3-25.x fail on for z/Z
    /// mounts). Run it with dockerd stopped: a running one writes its own
    /// copy back, so it refuses.
    RewriteSources(rewrite_sources::RewriteSourcesArgs),
    /// Put this binary in place as the docker CLI plugin `docker-volmig`
    /// (a symlink in ~/.docker/cli-plugins by default; --system for
    /// /usr/local/lib/docker/cli-plugins), so that `docker volmig verify
    /// --all` runs it with the docker CLI's daemon and context.
    InstallPlugin(install::InstallPluginArgs),
    /// Print the shell completion script for bash, zsh or fish, e.g.
    /// `volmig completions bash > /etc/bash_completion.d/volmig`.
    Completions(generate::CompletionsArgs),
    /// Print the man page (roff), or write one per command with --dir,
    /// e.g. `volmig man --dir /usr/local/share/man/man1`.
    Man(generate::ManArgs),
}

impl Command {
    /// Whether the command works on a data-root or a daemon (the others,
    /// `inspect` of a bundle among them, need neither and never read the
    /// docker CLI's files).
    fn uses_daemon(&self) -> bool {
        !matches!(
            self,
            Command::Inspect(_)
                | Command::InstallPlugin(_)
                | Command::Completions(_)
                | Command::Man(_)
        )
    }
}

/// `volmig --version` and the plugin's version: the crate version and the
/// commit it was built from (build.rs), e.g. `0.1.0 (git d25d315)`.
pub const VERSION: &str = env!("VOLMIG_VERSION");

/// A command stopped by SIGINT, SIGTERM or SIGHUP after cleaning up.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Interrupted {
    pub signal: i32,
    pub message: String,
}

/// How a command ended, mapped to the exit code.
pub enum Outcome {
    /// Exit 0.
    Good,
    /// Exit 1: the data-root or a container is broken.
    Broken,
    /// Exit 2: the command would refuse (a dry run's verdict).
    Refused,
}

/// The data-root of `--data-root` and `--userns-remap`, with the remapped
/// daemon's id ranges: required by export and import (`need_ids`: they
/// shift ids by them), used when found by scan and verify (an owner in the
/// range is the container's own).
fn open_root(cli: &Cli, need_ids: bool) -> anyhow::Result<DataRoot> {
    let root = DataRoot::open(&cli.data_root, cli.userns_remap)?;
    let Some(remap) = cli.userns_remap else {
        return Ok(root);
    };
    let map = match cli.userns_remap_size {
        Some(count) => IdMap::single(remap, count).map_err(anyhow::Error::from),
        None => subid::map_from_files(remap).map_err(anyhow::Error::from),
    };
    match map {
        Ok(map) => Ok(root.with_id_map(Some(map))),
        Err(e) if need_ids => Err(e),
        Err(_) => Ok(root),
    }
}

/// Parses the arguments, runs the command, prints, and picks the exit code.
pub fn main() -> ExitCode {
    // Before any thread exists: they all inherit the blocked signals.
    signals::install();
    let (args, docker) = match plugin::classify(std::env::args_os().collect()) {
        Ok(plugin::Invocation::Standalone(args)) => (args, None),
        Ok(plugin::Invocation::Plugin { args, docker }) => (args, Some(docker)),
        Ok(plugin::Invocation::Metadata) => return print_plugin_metadata(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut cli = match parse(args, docker.is_some()) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = if cli.command.uses_daemon() {
        daemon::settle(&mut cli, docker.unwrap_or_default()).and_then(|()| dispatch(&cli))
    } else {
        dispatch(&cli)
    };
    finish(&cli, result)
}

/// clap on the arguments; as a plugin, usage and errors say `docker volmig`.
fn parse(args: Vec<std::ffi::OsString>, as_plugin: bool) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    if as_plugin {
        command = command.bin_name("docker volmig");
    }
    let matches = command.try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

fn dispatch(cli: &Cli) -> anyhow::Result<Outcome> {
    match &cli.command {
        Command::Scan(args) => scan::run(cli, args),
        Command::Verify(args) => verify::run(cli, args),
        Command::Export(args) => export::run(cli, args),
        Command::Import(args) => import::run(cli, args),
        Command::Inspect(args) => inspect::run(cli, args),
        Command::Recover(args) => recover::run(cli, args),
        Command::Migrate(args) => migrate::run(cli, args),
        Command::RewriteSources(args) => rewrite_sources::run(cli, args),
        Command::InstallPlugin(args) => install::run(cli, args),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    }
}

/// The exit code of a command's result; an error is printed once.
fn finish(cli: &Cli, result: anyhow::Result<Outcome>) -> ExitCode {
    match result {
        Ok(Outcome::Good) => ExitCode::SUCCESS,
        Ok(Outcome::Broken) => ExitCode::from(1),
        Ok(Outcome::Refused) => ExitCode::from(2),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit_code(&e);
            let message = render::printable(&error_text(&e));
            if cli.json && !EMITTED.load(Ordering::SeqCst) {
                let _ = emit_json(&output::ErrorDoc {
                    ok: false,
                    error: &message,
                    exit_code: code,
                    refusals: e
                        .downcast_ref::<crate::import::ImportError>()
                        .and_then(|i| i.refusals()),
                });
            }
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

/// `docker-volmig docker-cli-plugin-metadata`: one JSON line on stdout.
fn print_plugin_metadata() -> ExitCode {
    let meta = crate::docker_plugin::Metadata::new(VERSION);
    match serde_json::to_string(&meta) {
        Ok(text) if emit(&format!("{text}\n")).is_ok() => ExitCode::SUCCESS,
        _ => ExitCode::from(2),
    }
}

/// 2 when nothing changed; 1 when the data-root may have (an import whose
/// commit could not be finished or undone); 128+N after signal N.
fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(i) = e.downcast_ref::<Interrupted>() {
        return crate::interrupt::exit_status(i.signal);
    }
    if let Some(i) = e.downcast_ref::<crate::import::ImportError>() {
        use crate::import::ImportError;
        let inner = match i {
            ImportError::AfterRecovery { source, .. } => source.as_ref(),
            other => other,
        };
        if let ImportError::Interrupted { signal } = inner {
            return crate::interrupt::exit_status(*signal);
        }
        if i.changed_target() {
            return 1;
        }
    }
    match crate::interrupt::requested() {
        Some(signal) => crate::interrupt::exit_status(signal),
        None => 2,
    }
}

/// The error and its causes on one line, each cause once: a library error
/// that already quotes its source (`cannot read x: No such file`) is not
/// followed by the same text again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Set once a document went to stdout: an error after it must not print a
/// second one (`--json` prints exactly one).
static EMITTED: AtomicBool = AtomicBool::new(false);

/// Writes a finished document to stdout at once.
fn emit(text: &str) -> anyhow::Result<()> {
    EMITTED.store(true, Ordering::SeqCst);
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Serializes a report as the one JSON document of `--json`.
fn emit_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    emit(&text)
}
