//! `kubelet-sim`: kubelet's plugin watcher, over real sockets, without a
//! cluster. It registers plugins as kubelet would and prints one line per
//! step; nothing is written to any API server.
//!
//! Exit codes of `watch --once`: 0 registered, 1 registration failed,
//! 2 nothing to register before `--timeout` (or bad flags).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lab01_identity::args::init_tracing;
use lab01_identity::server::shutdown_signal;
use lab04_registration::duration::parse_duration;
use lab04_registration::kubelet::{
    DEFAULT_REGISTRY_DIR, Event, Options, POLL_INTERVAL, PluginWatcher, PrefixMap,
};

#[derive(Debug, Parser)]
#[command(name = "kubelet-sim", version, about = "Plays kubelet's plugin registration over real sockets")]
struct Cli {
    /// A `tracing` filter for the log on stderr (the steps go to stdout).
    #[arg(long, env = "RUST_LOG", default_value = "warn", global = true)]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch a registry directory and register the plugins that appear.
    Watch(WatchArgs),
}

#[derive(Debug, clap::Args)]
struct WatchArgs {
    /// The directory to watch (kubelet's plugins_registry).
    #[arg(long, default_value = DEFAULT_REGISTRY_DIR)]
    dir: PathBuf,

    /// Stop after the first registration attempt: exit 0 if it succeeded, 1 if not.
    #[arg(long)]
    once: bool,

    /// Stop after this long (`10`, `10s`, `500ms`). With --once, exit 2 if no
    /// plugin showed up by then.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// Dial advertised endpoints under HOSTPREFIX at LOCALPREFIX instead, for
    /// a harness in a container that mounts the host's kubelet directory
    /// elsewhere, e.g. `/var/lib/kubelet=/host/var/lib/kubelet`. Repeatable.
    #[arg(long, value_name = "HOSTPREFIX=LOCALPREFIX")]
    endpoint_prefix_map: Vec<PrefixMap>,

    /// The longest one dial or RPC may take.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    call_timeout: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    let Command::Watch(args) = cli.command;
    watch(args).await
}

async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let options = Options { call_timeout: args.call_timeout, prefix_maps: args.endpoint_prefix_map };
    let mut watcher = PluginWatcher::new(&args.dir, options);
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut print = |event: Event| println!("{event}");
    loop {
        let attempts =
            watcher.poll(&mut print).await.with_context(|| format!("watching {}", args.dir.display()))?;
        if args.once
            && let Some(attempt) = attempts.first()
        {
            return Ok(if attempt.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = &mut stop => return Ok(ExitCode::SUCCESS),
            () = expired => {
                if args.once {
                    eprintln!(
                        "kubelet-sim: no plugin socket appeared in {} within {:?}",
                        args.dir.display(),
                        args.timeout.unwrap_or_default()
                    );
                    return Ok(ExitCode::from(2));
                }
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
}
