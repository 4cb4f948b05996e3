//! The registrar: what node-driver-registrar does, as a library function.
//!
//! 1. Ask the driver for its name (GetPluginInfo on `--csi-address`),
//!    retrying until it answers: the driver container may start later.
//! 2. Serve the [`Registration`](crate::registration) service on
//!    `<plugin-registration-path>/<driver>-reg.sock`, where kubelet's plugin
//!    watcher finds it.
//! 3. Tell kubelet the driver's socket *as a host path*
//!    (`--kubelet-registration-path`): kubelet runs on the host and cannot
//!    see inside our container.
//! 4. Wait for kubelet's verdict. A rejection ends [`run`] with an error, so
//!    the container restarts and registration is tried again.
//! 5. On shutdown, remove the registration socket: kubelet sees it vanish
//!    and deregisters the driver.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lab01_identity::client::{connect, parse_endpoint};
use lab01_identity::csi::GetPluginInfoRequest;
use lab01_identity::csi::identity_client::IdentityClient;
use lab01_identity::identity::validate_driver_name;
use lab01_identity::server::{bind_unix_socket, grpc_server};
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::UnixListenerStream;

use crate::error::{Error, Result};
use crate::health::HealthServer;
use crate::pluginregistration::registration_server::RegistrationServer;
use crate::registration::{RegistrationService, Verdict, csi_plugin_info};

/// Where the host's `/var/lib/kubelet/plugins_registry` is mounted in the
/// registrar's container (node-driver-registrar's default).
pub const DEFAULT_PLUGIN_REGISTRATION_PATH: &str = "/registration";

/// How long the registration server may take to stop before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Everything the registrar needs; the flags of `csi-registrar`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The driver's socket as *we* see it, e.g. `/csi/csi.sock`.
    pub csi_address: String,
    /// The driver's socket as *kubelet* sees it, on the host, e.g.
    /// `/var/lib/kubelet/plugins/csi.workshop.dev/csi.sock`.
    pub kubelet_registration_path: PathBuf,
    /// The directory kubelet watches, as mounted into our container.
    pub plugin_registration_path: PathBuf,
    /// `host:port` (or `:port`) for `/healthz`; `None` serves no HTTP.
    pub http_endpoint: Option<String>,
    /// The longest we wait for one answer from the driver or the socket.
    pub timeout: Duration,
    /// The pause between two attempts to reach the driver.
    pub retry_interval: Duration,
}

impl Config {
    /// A configuration with node-driver-registrar's defaults for the rest.
    pub fn new(csi_address: impl Into<String>, kubelet_registration_path: impl Into<PathBuf>) -> Self {
        Self {
            csi_address: csi_address.into(),
            kubelet_registration_path: kubelet_registration_path.into(),
            plugin_registration_path: PathBuf::from(DEFAULT_PLUGIN_REGISTRATION_PATH),
            http_endpoint: None,
            timeout: Duration::from_secs(1),
            retry_interval: Duration::from_secs(1),
        }
    }

    /// Refuses flags that cannot work, before anything is served.
    pub fn validate(&self) -> Result<()> {
        let csi_path = parse_endpoint(&self.csi_address)
            .map_err(|e| Error::InvalidConfig(format!("--csi-address: {e}")))?;
        let host_path = &self.kubelet_registration_path;
        let text = host_path.to_string_lossy();
        if text.is_empty() {
            return Err(Error::InvalidConfig(
                "--kubelet-registration-path is required: the driver socket's path on the host".into(),
            ));
        }
        if text.contains("://") || text.starts_with("unix:") {
            return Err(Error::InvalidConfig(format!(
                "--kubelet-registration-path {text:?} must be a plain path on the host, not an endpoint"
            )));
        }
        if !host_path.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "--kubelet-registration-path {text:?} must be absolute"
            )));
        }
        if self.plugin_registration_path.as_os_str().is_empty() {
            return Err(Error::InvalidConfig("--plugin-registration-path must not be empty".into()));
        }
        if self.timeout.is_zero() {
            return Err(Error::InvalidConfig("--timeout must be more than zero".into()));
        }
        if csi_path == *host_path {
            tracing::info!(
                path = %host_path.display(),
                "--kubelet-registration-path equals --csi-address: right only if the container \
                 mounts the driver's socket at its host path"
            );
        }
        Ok(())
    }
}

/// What the registrar has done so far, for logs, `/healthz` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The name GetPluginInfo returned, once the driver answered.
    pub driver_name: Option<String>,
    /// The registration socket, while it is served.
    pub socket: Option<PathBuf>,
    /// Where `/healthz` listens, when `--http-endpoint` is set.
    pub health_addr: Option<SocketAddr>,
    /// kubelet's last word.
    pub kubelet: Verdict,
}

// ANCHOR: registration-socket-path
/// kubelet finds plugins by their sockets in its registry directory; the
/// registrar names its socket after the driver, so two drivers never clash.
pub fn registration_socket_path(registry_dir: &Path, driver_name: &str) -> PathBuf {
    // TODO(lab04): Name the socket `<driver-name>-reg.sock`, inside `registry_dir`.
    // ANCHOR: solution
    registry_dir.join(format!("{driver_name}-reg.sock"))
    // ANCHOR_END: solution => registry_dir.join(format!("lab04-name-me-after-{driver_name}.sock"))
}
// ANCHOR_END: registration-socket-path

/// One attempt to learn the driver's name.
pub async fn driver_name(csi_address: &str) -> Result<String> {
    let unavailable = |reason: String| Error::DriverUnavailable { endpoint: csi_address.to_owned(), reason };
    let channel = connect(csi_address).await.map_err(|e| unavailable(e.to_string()))?;
    let info = IdentityClient::new(channel)
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .map_err(|status| unavailable(format!("GetPluginInfo: {}", status.message())))?
        .into_inner();
    validate_driver_name(&info.name).map_err(|e| Error::InvalidDriverName {
        endpoint: csi_address.to_owned(),
        name: info.name.clone(),
        reason: e.to_string(),
    })?;
    Ok(info.name)
}

// ANCHOR: wait-for-driver
/// Asks the driver for its name until it answers. Each attempt may take at
/// most `timeout`; between attempts we wait `retry_interval`. Only a driver
/// that answers with an unusable name is an error: waiting is normal while
/// the driver container starts.
pub async fn wait_for_driver(
    csi_address: &str,
    timeout: Duration,
    retry_interval: Duration,
) -> Result<String> {
    // TODO(lab04): Call `driver_name` again and again, each call bounded by
    // `timeout` (`tokio::time::timeout`), sleeping `retry_interval` between
    // attempts, until it succeeds. Log each failure; return at once on
    // `Error::InvalidDriverName`.
    // ANCHOR: solution
    let mut attempt: u32 = 1;
    loop {
        match tokio::time::timeout(timeout, driver_name(csi_address)).await {
            Ok(Ok(name)) => {
                tracing::info!(driver = %name, attempt, "the CSI driver answered GetPluginInfo");
                return Ok(name);
            }
            Ok(Err(error @ Error::InvalidDriverName { .. })) => return Err(error),
            Ok(Err(error)) => {
                tracing::warn!(attempt, %error, "the CSI driver is not answering yet; retrying")
            }
            Err(_) => tracing::warn!(
                attempt,
                ?timeout,
                endpoint = csi_address,
                "no answer from the CSI driver in time; retrying"
            ),
        }
        attempt += 1;
        tokio::time::sleep(retry_interval).await;
    }
    // ANCHOR_END: solution => driver_name(csi_address).await
}
// ANCHOR_END: wait-for-driver

/// The registrar, with a [`Status`] others can watch while it runs.
pub struct Registrar {
    config: Config,
    status: watch::Sender<Status>,
}

impl Registrar {
    pub fn new(config: Config) -> Self {
        Self { config, status: watch::Sender::new(Status::default()) }
    }

    /// Follows the registrar's progress (see [`watch::Receiver::wait_for`]).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` completes (then `Ok`) or kubelet rejects the
    /// registration (then `Err`). The registration socket is removed either way.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        self.config.validate()?;
        tokio::pin!(shutdown);
        let health = match &self.config.http_endpoint {
            Some(endpoint) => {
                let server =
                    HealthServer::start(endpoint, self.status.subscribe(), self.config.timeout).await?;
                self.status.send_modify(|s| s.health_addr = Some(server.local_addr()));
                Some(server)
            }
            None => None,
        };
        let result = self.register(&mut shutdown).await;
        if let Some(server) = health {
            server.stop().await;
        }
        match &result {
            Ok(()) => tracing::info!("registrar stopped"),
            Err(error) => {
                tracing::error!(%error, "registrar failed; exiting so the container restarts")
            }
        }
        result
    }

    async fn register(&self, shutdown: &mut (impl Future<Output = ()> + Unpin)) -> Result<()> {
        let config = &self.config;
        tracing::info!(csi_address = %config.csi_address, "asking the CSI driver for its name");
        let name = tokio::select! {
            name = wait_for_driver(&config.csi_address, config.timeout, config.retry_interval) => name?,
            () = &mut *shutdown => return Ok(()),
        };
        self.status.send_modify(|s| s.driver_name = Some(name.clone()));

        // ANCHOR: serve-registration
        let socket = registration_socket_path(&config.plugin_registration_path, &name);
        let listener = bind_unix_socket(&socket)?;
        let info = csi_plugin_info(&name, &config.kubelet_registration_path);
        let (service, mut verdicts) = RegistrationService::new(info);
        let (stop, stopped) = oneshot::channel::<()>();
        let mut server = tokio::spawn(
            grpc_server().add_service(RegistrationServer::new(service)).serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
        );
        // ANCHOR_END: serve-registration
        self.status.send_modify(|s| s.socket = Some(socket.clone()));
        tracing::info!(
            socket = %socket.display(),
            endpoint = %config.kubelet_registration_path.display(),
            driver = %name,
            "serving the registration socket; waiting for kubelet"
        );

        // ANCHOR: await-verdict
        let mut server_done = false;
        let result = loop {
            tokio::select! {
                () = &mut *shutdown => break Ok(()),
                changed = verdicts.changed() => {
                    if changed.is_err() {
                        break Err(Error::ServerStopped("the registration service went away".into()));
                    }
                    let verdict = verdicts.borrow_and_update().clone();
                    self.status.send_modify(|s| s.kubelet = verdict.clone());
                    match verdict {
                        Verdict::Registered => tracing::info!(
                            driver = %name,
                            "registered: kubelet now calls the driver at {}",
                            config.kubelet_registration_path.display()
                        ),
                        Verdict::Rejected(error) => break Err(Error::RegistrationRejected(error)),
                        Verdict::Pending => {}
                    }
                }
                joined = &mut server => {
                    server_done = true;
                    let reason = match joined {
                        Ok(Ok(())) => "it ended".to_owned(),
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    break Err(Error::ServerStopped(reason));
                }
            }
        };
        // ANCHOR_END: await-verdict

        let _ = stop.send(());
        if !server_done && tokio::time::timeout(STOP_GRACE, &mut server).await.is_err() {
            tracing::warn!("the registration server did not stop in time; dropping it");
            server.abort();
        }
        remove_socket(&socket);
        self.status.send_modify(|s| s.socket = None);
        result
    }
}

/// Runs a registrar until `shutdown` (see [`Registrar::run`]).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    Registrar::new(config).run(shutdown).await
}

fn remove_socket(socket: &Path) {
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::info!(socket = %socket.display(), "registration socket removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(socket = %socket.display(), error = %e, "could not remove the registration socket")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new("unix:///csi/csi.sock", "/var/lib/kubelet/plugins/csi.workshop.dev/csi.sock")
    }

    #[test]
    fn the_defaults_are_node_driver_registrars() {
        let c = config();
        assert_eq!(c.plugin_registration_path, Path::new("/registration"));
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert!(c.http_endpoint.is_none());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn the_kubelet_registration_path_must_be_an_absolute_host_path() {
        for bad in ["", "csi.sock", "unix:///var/lib/kubelet/plugins/x/csi.sock"] {
            let c = Config { kubelet_registration_path: bad.into(), ..config() };
            assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_tcp_csi_address_is_refused() {
        let c = Config { csi_address: "tcp://127.0.0.1:10000".into(), ..config() };
        assert!(matches!(c.validate(), Err(Error::InvalidConfig(_))));
    }
}
