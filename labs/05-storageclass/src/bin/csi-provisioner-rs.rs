//! csi-provisioner-rs: our own external-provisioner (lab 05), a sidecar next
//! to the driver in the controller Pod. It watches claims and PVs and calls
//! CreateVolume / DeleteVolume over the driver's socket; see
//! `lab05_storageclass::provisioner`.
//!
//!   csi-provisioner-rs --csi-address /csi/csi.sock --leader-election
//!
//! It needs a kubeconfig or the in-cluster service account, and the RBAC of
//! `deploy/overlays/rust-provisioner`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use lab01_identity::csi::GetPluginInfoRequest;
use lab01_identity::csi::controller_client::ControllerClient;
use lab01_identity::csi::identity_client::IdentityClient;
use lab05_storageclass::provisioner::controller::{self, Context};
use lab05_storageclass::provisioner::leader::{self, Elector, Timing};
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(name = "csi-provisioner-rs", version, about = "A CSI external-provisioner in Rust (lab 05)")]
struct Args {
    /// The driver's socket (a path, or unix:///path).
    #[arg(long, default_value = "/csi/csi.sock")]
    csi_address: String,
    /// The driver name in StorageClasses; default: the driver's GetPluginInfo name.
    #[arg(long)]
    drivername: Option<String>,
    /// Take a Lease before acting, so that of several replicas only one does.
    #[arg(long)]
    leader_election: bool,
    /// The Lease's namespace; default: the Pod's (from the service account).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// How long a standby waits after the last renewal before it takes the Lease.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_election_lease_duration: Duration,
    /// How long the leader tries to renew before it gives up leading (and exits).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    leader_election_renew_deadline: Duration,
    /// The pause between attempts to renew (leader) or acquire (standby).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_election_retry_period: Duration,
    /// The limit for each CSI call, e.g. 60s or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// Also expand bound claims (ControllerExpandVolume); leave it off while csi-resizer runs.
    #[arg(long)]
    enable_expansion: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. info or debug.
    #[arg(long, default_value = "info", env = "RUST_LOG")]
    log_level: String,
}

/// `60s`, `2m`, `500ms` or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number.parse().map_err(|_| format!("{s:?}: expected a duration like 60s, 2m or 500ms"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        other => Err(format!("{s:?}: unknown unit {other:?} (use ms, s or m)")),
    }
}

/// Pod name (downward API) or hostname: who holds the Lease, who wrote an Event.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("csi-provisioner-rs-{}", std::process::id()))
}

/// SIGTERM (kubelet stopping the Pod) or Ctrl-C.
async fn shutdown_signal() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level).context("--log-level")?)
        .with_writer(std::io::stderr)
        .init();

    // The driver container may start after us: wait for its socket.
    let endpoint = if args.csi_address.starts_with('/') {
        format!("unix://{}", args.csi_address)
    } else {
        args.csi_address.clone()
    };
    let channel = loop {
        match lab01_identity::client::connect(&endpoint).await {
            Ok(channel) => break channel,
            Err(e) => {
                warn!(error = %e, "waiting for the CSI driver");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let driver = match args.drivername.clone() {
        Some(name) => name,
        None => {
            let info = IdentityClient::new(channel.clone())
                .get_plugin_info(GetPluginInfoRequest {})
                .await
                .context("GetPluginInfo (or pass --drivername)")?
                .into_inner();
            info.name
        }
    };
    if driver.is_empty() {
        bail!("the driver name is empty: pass --drivername");
    }

    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let identity = identity();
    info!(%driver, %identity, csi_address = %args.csi_address, "starting");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    // The caches first, so that a new leader acts at once; a standby keeps
    // them warm (two watches, cheap) while it waits for the Lease.
    let (nodes, csinodes, drive_stores) = controller::node_stores(&client);
    let stores = tokio::spawn(drive_stores);
    let reporter = Reporter { controller: "csi-provisioner-rs".into(), instance: Some(identity.clone()) };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        csi: ControllerClient::new(channel),
        driver: driver.clone(),
        nodes,
        csinodes,
        timeout: args.timeout,
        expansion: args.enable_expansion,
    });
    let caches = async {
        ctx.nodes.wait_until_ready().await?;
        ctx.csinodes.wait_until_ready().await
    };
    tokio::select! {
        ready = caches => ready.context("the Node and CSINode caches")?,
        () = &mut shutdown => return Ok(()),
    }

    let result = if args.leader_election {
        let timing = Timing {
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
        };
        timing.validate().map_err(anyhow::Error::msg).context("--leader-election-*")?;
        let namespace =
            args.leader_election_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
        let elector = Elector::new(
            Api::<Lease>::namespaced(client.clone(), &namespace),
            leader::lease_name(&driver),
            identity.clone(),
        )
        .with_timing(timing);
        tokio::select! {
            () = elector.acquire() => {}
            () = &mut shutdown => return Ok(()),
        }
        // Leader: stop acting as soon as the Lease is lost (see Elector::lead).
        elector.lead(&mut shutdown, |stop| controller::run(ctx, stop.wait())).await
    } else {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let controllers = tokio::spawn(controller::run(ctx, async move {
            let _ = stop_rx.await;
        }));
        (&mut shutdown).await;
        let _ = stop_tx.send(());
        controllers.await.context("controllers")?;
        Ok(())
    };
    stores.abort();
    if let Err(lost) = result {
        // A non-zero exit: kubelet restarts the container, which comes back
        // as a candidate, as the Go sidecars do after OnStoppedLeading.
        bail!("stopped leading: {lost}");
    }
    Ok(())
}
