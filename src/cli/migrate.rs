//! `volmig migrate`: pre-copy rounds through any command that reaches the
//! target (`--via 'ssh HOST'`), then a final round with the containers
//! quiesced, for seconds of downtime (`docs/incremental.md`).
//!
//! Each round is this same binary's `export` piped into the target's
//! `import -` through `sh -c '<via> <remote volmig> ... import -'`: no
//! protocol of volmig's own, ssh carries the stream and its exit code.
//! Round 1 is full (`--manifest-out`), while the containers run; further
//! rounds are deltas onto the round before (`--since`) while each is less
//! than half the one before and over `--min-delta`; then the containers
//! are paused or stopped, the last delta goes, and the target's import
//! verifies them. The downtime is from the quiesce to the end of that
//! import.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;

use super::daemon::DaemonContext;
use super::{emit_json, render, Cli, Outcome};
use crate::engine::Quiesce;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Containers whose volumes to move (ID, ID prefix or name).
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,

    /// The command that reaches the target, run by `sh -c` with the
    /// target's volmig command line appended, e.g. 'ssh root@host' or
    /// 'ssh -p 2222 -i key root@host'. Each round's bundle goes to its
    /// stdin.
    #[arg(long, value_name = "CMD")]
    pub via: String,

    /// The data-root on the target.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/docker")]
    pub target_data_root: PathBuf,

    /// The Docker daemon on the target, for the target's import (-H there).
    #[arg(long, value_name = "HOST")]
    pub target_host: Option<String>,

    /// volmig on the target.
    #[arg(long, value_name = "PATH", default_value = "volmig")]
    pub target_volmig: String,

    /// Pause the containers for the final round instead of stopping them
    /// (shorter: no stop timeout). They are stopped once it is done,
    /// unless --keep-source-running.
    #[arg(long)]
    pub pause: bool,

    /// Leave the containers running on the source once migrated.
    #[arg(long)]
    pub keep_source_running: bool,

    /// Most rounds before the final one.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_rounds: u32,

    /// Go to the final round once a delta is this small (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub min_delta: u64,

    /// Keep the rounds' manifests in DIR (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub keep_manifests: Option<PathBuf>,
}

/// `migrate --json`.
#[derive(Debug, serde::Serialize)]
struct MigrateDoc<'a> {
    ok: bool,
    rounds: &'a [RoundFigures],
    /// From the quiesce to the end of the target's import.
    downtime_seconds: f64,
    stop_rule: &'a str,
    /// `running` (--keep-source-running) or `stopped`.
    source_left: &'static str,
}

/// One round's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct RoundFigures {
    round: u32,
    kind: &'static str,
    bytes: u64,
    seconds: f64,
}

pub fn run(cli: &Cli, args: &MigrateArgs) -> anyhow::Result<Outcome> {
    let root = super::open_root(cli, true)?;
    let daemon = DaemonContext::require(cli, &root, "migrate")?;
    let engine = daemon
        .engine
        .as_ref()
        .map(|e| e as &dyn crate::engine::Engine)
        .context("migrate needs the Docker daemon")?;
    let slots =
        crate::dataroot::containers::load_all(&root).context("cannot read the containers")?;
    let mut ids = Vec::new();
    for query in &args.containers {
        ids.push(crate::dataroot::containers::find(&slots, query)?.id.clone());
    }
    let tmp;
    let dir: &Path = match &args.keep_manifests {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create `{}`", d.display()))?;
            d
        }
        None => {
            tmp = tempfile::tempdir().context("no temporary directory")?;
            tmp.path()
        }
    };
    super::signals::poll(
        "stopping after this round and putting the containers back",
        "containers paused or stopped for the migration are left so; check `docker ps -a`",
    );
    let manifest = |n: u32| dir.join(format!("round-{n}.manifest"));
    let (mut rounds, n, stop_rule) = pre_copy(cli, args, &manifest)?;
    if !cli.quiet && !cli.json {
        eprintln!("final round: {stop_rule}");
    }
    // The final round, quiesced.
    let mut quiesce = Quiesce::new(engine);
    let down = Instant::now();
    for id in &ids {
        quiesce.quiet(id, args.pause)?;
    }
    let last = round(
        cli,
        args,
        n + 1,
        Some(&manifest(n)),
        &manifest(n + 1),
        args.pause,
    )
    .map(|r| RoundFigures { kind: "final", ..r });
    let downtime = down.elapsed();
    let last = match last {
        Ok(r) => r,
        Err(e) => {
            let restored = quiesce.restore();
            return Err(match restored {
                Ok(()) => e.context("the final round failed; the containers were put back as they were on the source"),
                Err(r) => e.context(format!("the final round failed, and putting the containers back failed too: {r}")),
            });
        }
    };
    say(cli, &last, "final, containers quiesced");
    rounds.push(last);
    // Back as they were (the target holds their state at the quiesce),
    // then stopped unless asked to keep them running.
    quiesce.restore()?;
    if !args.keep_source_running {
        for id in &ids {
            if engine.container_state(id)? == crate::engine::RunState::Running {
                engine.stop(id)?;
            }
        }
    }
    report(
        cli,
        args,
        ids.len(),
        &rounds,
        downtime.as_secs_f64(),
        &stop_rule,
    )?;
    Ok(Outcome::Good)
}

/// The rounds while the containers run: round 1 in full, then deltas
/// while each is under half the one before and over `--min-delta`, at
/// most `--max-rounds`. Returns them, the last round's number, and the
/// rule that ended them.
fn pre_copy(
    cli: &Cli,
    args: &MigrateArgs,
    manifest: &dyn Fn(u32) -> PathBuf,
) -> anyhow::Result<(Vec<RoundFigures>, u32, String)> {
    let mut rounds = Vec::new();
    // Round 1, full, while the containers run.
    rounds.push(round(cli, args, 1, None, &manifest(1), true)?);
    say(cli, &rounds[0], "full, containers running");
    let mut n = 1;
    let stop_rule;
    loop {
        if crate::interrupt::requested().is_some() {
            bail!("interrupted: the target holds round {n}; nothing was quiesced");
        }
        let last = rounds[rounds.len() - 1].bytes;
        if n >= args.max_rounds {
            stop_rule = format!("{} rounds done (--max-rounds)", args.max_rounds);
            break;
        }
        if n > 1 && last <= args.min_delta {
            stop_rule = format!(
                "the last delta ({}) is under --min-delta ({})",
                render::bytes(last),
                render::bytes(args.min_delta)
            );
            break;
        }
        let r = round(cli, args, n + 1, Some(&manifest(n)), &manifest(n + 1), true)?;
        n += 1;
        say(cli, &r, "delta, containers running");
        let shrank = r.bytes * 2 < last;
        rounds.push(r);
        if !shrank && n > 2 {
            stop_rule = "the delta stopped shrinking by half".to_string();
            break;
        }
    }
    Ok((rounds, n, stop_rule))
}

/// The outcome, as text on stderr or one JSON document.
fn report(
    cli: &Cli,
    args: &MigrateArgs,
    containers: usize,
    rounds: &[RoundFigures],
    downtime: f64,
    stop_rule: &str,
) -> anyhow::Result<()> {
    if cli.json {
        emit_json(&MigrateDoc {
            ok: true,
            rounds,
            downtime_seconds: downtime,
            stop_rule,
            source_left: if args.keep_source_running {
                "running"
            } else {
                "stopped"
            },
        })?;
    } else if !cli.quiet {
        eprintln!(
            "migrated {} in {} rounds; downtime {:.2} s (from the quiesce to the end of the target's import); on the source the containers are {}",
            render::count(containers, "container", "containers"),
            rounds.len(),
            downtime,
            if args.keep_source_running { "running again" } else { "stopped" }
        );
    }
    Ok(())
}

fn say(cli: &Cli, r: &RoundFigures, what: &str) {
    if !cli.quiet && !cli.json {
        eprintln!(
            "round {}: {} in {:.2} s ({what})",
            r.round,
            render::bytes(r.bytes),
            r.seconds
        );
    }
}

/// Quotes one word for a POSIX shell.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One round: this binary's export into the target's import, through
/// `--via`; the bytes that went, and the time.
fn round(
    cli: &Cli,
    args: &MigrateArgs,
    number: u32,
    since: Option<&Path>,
    manifest_out: &Path,
    allow_running: bool,
) -> anyhow::Result<RoundFigures> {
    let start = Instant::now();
    let exe = std::env::current_exe().context("cannot find this volmig binary")?;
    let mut export = Command::new(exe);
    export
        .arg("--data-root")
        .arg(&cli.data_root)
        .arg("--quiet")
        .arg("export")
        .args(&args.containers)
        .arg("-o")
        .arg("-")
        .arg("--manifest-out")
        .arg(manifest_out);
    if let Some(h) = &cli.host {
        export.arg("-H").arg(h);
    }
    if let Some(since) = since {
        export.arg("--since").arg(since);
    }
    if allow_running {
        export.arg("--allow-running");
    }
    let mut remote = vec![
        args.target_volmig.clone(),
        "--data-root".into(),
        args.target_data_root.display().to_string(),
        "--quiet".into(),
    ];
    if let Some(h) = &args.target_host {
        remote.extend(["-H".into(), h.clone()]);
    }
    remote.extend(["import".into(), "-".into()]);
    let line = format!(
        "{} {}",
        args.via,
        remote
            .iter()
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut export = export
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the export")?;
    // The target's report goes to our stderr: our stdout is migrate's
    // own report (one JSON document with --json).
    let report_to = std::os::fd::AsFd::as_fd(&io::stderr())
        .try_clone_to_owned()
        .context("cannot duplicate stderr")?;
    let mut target = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(report_to))
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run `{line}`"))?;
    let (Some(mut from), Some(mut to)) = (export.stdout.take(), target.stdin.take()) else {
        bail!("no pipe between the export and `{line}`");
    };
    // The export child is quiet (its stderr is ours, and two bars would
    // fight over the line): the bar here counts the round's stream, with
    // no total, as its size is known only once the export ends.
    let kind = match (number, since) {
        (1, _) | (_, None) => "full",
        _ => "delta",
    };
    let progress = super::progress::TermProgress::boxed(cli.quiet, None);
    progress.begin(&format!("round {number} ({kind})"), None);
    let copied = copy_counting(&mut from, &mut to, progress.as_ref());
    drop(progress);
    drop(to);
    let exported = export.wait().context("the export")?;
    let imported = target.wait().context("the target's import")?;
    let bytes = copied.with_context(|| format!("cannot send round {number} to `{line}`"))?;
    if !exported.success() {
        bail!("round {number}: the export failed ({exported}); the target is unchanged by it");
    }
    match imported.code() {
        Some(0) => {}
        Some(code) => bail!("round {number}: the import on the target exited {code} (`{line}`)"),
        None => bail!("round {number}: the import on the target was killed (`{line}`)"),
    }
    Ok(RoundFigures {
        round: number,
        kind,
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn copy_counting(
    from: &mut impl Read,
    to: &mut impl Write,
    progress: &dyn crate::progress::Progress,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        progress.advance(n as u64);
        total += n as u64;
    }
}
