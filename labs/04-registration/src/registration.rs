//! The `Registration` service the registrar serves on `<driver>-reg.sock`.
//!
//! kubelet calls it twice: GetInfo to learn which plugin is knocking and
//! where to reach it, then NotifyRegistrationStatus to say whether it took
//! the plugin. The service only answers and passes kubelet's verdict on; the
//! [`registrar`](crate::registrar) decides what to do about it.

use std::path::Path;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::pluginregistration::registration_server::Registration;
use crate::pluginregistration::{InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse};

/// The plugin type kubelet hands to its CSI handler.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";

/// The CSI spec versions we claim. kubelet accepts any 1.x; node-driver-registrar
/// sends exactly this list.
pub const SUPPORTED_VERSIONS: [&str; 1] = ["1.0.0"];

/// What kubelet has told us so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Verdict {
    /// kubelet has not called NotifyRegistrationStatus yet.
    #[default]
    Pending,
    /// kubelet registered the plugin.
    Registered,
    /// kubelet refused it, and said why.
    Rejected(String),
}

// ANCHOR: csi-plugin-info
/// The answer to GetInfo for a CSI driver. `endpoint` is the driver's socket
/// *as kubelet sees it*: a path on the host, not inside our container.
pub fn csi_plugin_info(driver_name: &str, endpoint: &Path) -> PluginInfo {
    PluginInfo {
        r#type: CSI_PLUGIN_TYPE.to_owned(),
        name: driver_name.to_owned(),
        endpoint: endpoint.display().to_string(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
    }
}
// ANCHOR_END: csi-plugin-info

/// Serves a fixed [`PluginInfo`] and publishes kubelet's verdict.
#[derive(Debug)]
pub struct RegistrationService {
    info: PluginInfo,
    verdict: watch::Sender<Verdict>,
}

impl RegistrationService {
    /// The service, and the receiving end of kubelet's verdicts.
    pub fn new(info: PluginInfo) -> (Self, watch::Receiver<Verdict>) {
        let (verdict, receiver) = watch::channel(Verdict::Pending);
        (Self { info, verdict }, receiver)
    }
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    // ANCHOR: get-info
    async fn get_info(&self, _request: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        // TODO(lab04): Answer with the plugin info this service was built
        // with (type CSIPlugin, the driver name, the host endpoint, versions).
        // ANCHOR: solution
        // Debug level: the /healthz probe calls GetInfo too, every few seconds.
        tracing::debug!(driver = %self.info.name, endpoint = %self.info.endpoint, "GetInfo");
        Ok(Response::new(self.info.clone()))
        // ANCHOR_END: solution => Err(Status::unimplemented("lab04: GetInfo is not written yet (chapter 4)"))
    }
    // ANCHOR_END: get-info

    // ANCHOR: notify-registration-status
    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        // TODO(lab04): Log kubelet's verdict and publish it on `self.verdict`:
        // `Verdict::Registered`, or `Verdict::Rejected(error)` when
        // `plugin_registered` is false. The registrar exits on a rejection.
        // ANCHOR: solution
        let verdict = if status.plugin_registered {
            tracing::info!(driver = %self.info.name, "kubelet registered the plugin");
            Verdict::Registered
        } else {
            tracing::error!(driver = %self.info.name, error = %status.error, "kubelet rejected the registration");
            Verdict::Rejected(status.error)
        };
        // `send_replace` works even when nobody listens any more.
        self.verdict.send_replace(verdict);
        Ok(Response::new(RegistrationStatusResponse {}))
        // ANCHOR_END: solution => Err(Status::unimplemented("lab04: NotifyRegistrationStatus is not written yet (chapter 4)"))
    }
    // ANCHOR_END: notify-registration-status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csi_plugin_advertises_the_host_endpoint_and_version_1() {
        let info = csi_plugin_info(
            "csi.workshop.dev",
            Path::new("/var/lib/kubelet/plugins/csi.workshop.dev/csi.sock"),
        );
        assert_eq!(info.r#type, "CSIPlugin");
        assert_eq!(info.name, "csi.workshop.dev");
        assert_eq!(info.endpoint, "/var/lib/kubelet/plugins/csi.workshop.dev/csi.sock");
        assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);
    }
}
