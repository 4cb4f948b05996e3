//! The Identity service: who the plugin is, what it can do, and whether it is ready.
//!
//! Everybody calls Identity: kubelet, every sidecar, and the livenessprobe.

use std::path::{Path, PathBuf};

use tonic::{Request, Response, Status};

use crate::csi::identity_server::Identity;
use crate::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse,
    PluginCapability, ProbeRequest, ProbeResponse, plugin_capability,
};
use crate::error::Error;

/// The plugin-wide capabilities a driver advertises. Each lab switches on what
/// it really serves: a capability that is advertised but not served makes the
/// sidecars call RPCs that fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginCapabilities {
    /// The plugin serves the Controller service (lab 02 on).
    pub controller_service: bool,
    /// Volumes are not reachable from every node equally (topology).
    pub accessibility_constraints: bool,
    /// Volumes can grow while they are published.
    pub online_expansion: bool,
}

/// Identity as served by every lab's driver.
#[derive(Debug, Clone)]
pub struct IdentityService {
    name: String,
    version: String,
    capabilities: PluginCapabilities,
    /// Directories that must be usable for the plugin to be ready.
    required_dirs: Vec<PathBuf>,
}

impl IdentityService {
    /// Builds the service after checking the name and version, so a
    /// misconfigured driver fails at start-up instead of at the first call.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        capabilities: PluginCapabilities,
        required_dirs: Vec<PathBuf>,
    ) -> Result<Self, Error> {
        let name = name.into();
        let version = version.into();
        validate_driver_name(&name)?;
        if version.trim().is_empty() {
            return Err(Error::InvalidVersion(version));
        }
        Ok(Self { name, version, capabilities, required_dirs })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether every required directory is usable; the error says why not.
    pub fn readiness(&self) -> Result<(), String> {
        self.required_dirs.iter().try_for_each(|dir| check_dir_usable(dir))
    }
}

// ANCHOR: validate-driver-name
/// The spec's rule for plugin names: at most 63 characters, alphanumerics at
/// both ends, and only alphanumerics, `-` and `.` in between. Kubernetes uses
/// the name as a key in CSINode, CSIDriver and PV objects.
pub fn validate_driver_name(name: &str) -> Result<(), Error> {
    let fail =
        |reason: &'static str| Err::<(), _>(Error::InvalidDriverName { name: name.to_owned(), reason });
    // TODO(lab01): Reject names that break the spec's rule (length, first and
    // last character, allowed characters). Hint: `char::is_ascii_alphanumeric`.
    // ANCHOR: solution
    if name.is_empty() {
        return fail("it must not be empty");
    }
    if name.len() > 63 {
        return fail("it must be at most 63 characters");
    }
    let first_and_last_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_and_last_ok(name.chars().next()) || !first_and_last_ok(name.chars().last()) {
        return fail("it must begin and end with a letter or digit");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return fail("only letters, digits, '-' and '.' are allowed");
    }
    // ANCHOR_END: solution
    let _ = fail;
    Ok(())
}
// ANCHOR_END: validate-driver-name

// ANCHOR: check-dir-usable
/// A directory is usable when it exists and we can create and remove a file
/// in it: a read-only or vanished backend makes the plugin not ready.
pub fn check_dir_usable(dir: &Path) -> Result<(), String> {
    // TODO(lab01): Return Ok only when `dir` is a directory we can write to.
    // Hint: create and remove a small file such as `.probe-<pid>` inside it.
    // ANCHOR: solution
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    std::fs::remove_file(&probe).map_err(|e| format!("{}: {e}", probe.display()))?;
    Ok(())
    // ANCHOR_END: solution => Err(format!("lab01: check_dir_usable is not written yet ({})", dir.display()))
}
// ANCHOR_END: check-dir-usable

#[tonic::async_trait]
impl Identity for IdentityService {
    // ANCHOR: get-plugin-info
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        // TODO(lab01): Answer with the driver name and the vendor version.
        // ANCHOR: solution
        Ok(Response::new(GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: self.version.clone(),
            manifest: Default::default(),
        }))
        // ANCHOR_END: solution => Err(Status::unimplemented("lab01: GetPluginInfo is not written yet (chapter 1, step 3)"))
    }
    // ANCHOR_END: get-plugin-info

    // ANCHOR: get-plugin-capabilities
    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use plugin_capability::{Service, Type, VolumeExpansion, service, volume_expansion};
        let service = |kind: service::Type| PluginCapability {
            r#type: Some(Type::Service(Service { r#type: kind as i32 })),
        };
        let caps = self.capabilities;
        let mut capabilities = Vec::new();
        // TODO(lab01): Advertise one capability per flag that is switched on in
        // `self.capabilities`: the controller service, topology constraints and
        // online volume expansion.
        // ANCHOR: solution
        if caps.controller_service {
            capabilities.push(service(service::Type::ControllerService));
        }
        if caps.accessibility_constraints {
            capabilities.push(service(service::Type::VolumeAccessibilityConstraints));
        }
        if caps.online_expansion {
            capabilities.push(PluginCapability {
                r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            });
        }
        // ANCHOR_END: solution
        let _ = (service, caps);
        Ok(Response::new(GetPluginCapabilitiesResponse { capabilities }))
    }
    // ANCHOR_END: get-plugin-capabilities

    // ANCHOR: probe
    async fn probe(&self, _request: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        // TODO(lab01): Answer `ready: Some(true)` when `self.readiness()`
        // succeeds. When it fails, a required dependency is missing: log the
        // reason and answer FAILED_PRECONDITION, as the spec's Probe table says.
        // ANCHOR: solution
        match self.readiness() {
            Ok(()) => {
                tracing::debug!("probe: ready");
                Ok(Response::new(ProbeResponse { ready: Some(true) }))
            }
            Err(reason) => {
                tracing::warn!(%reason, "plugin is not healthy");
                Err(Status::failed_precondition(format!("plugin is not healthy: {reason}")))
            }
        }
        // ANCHOR_END: solution => Err(Status::unimplemented("lab01: Probe is not written yet (chapter 1, step 4)"))
    }
    // ANCHOR_END: probe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_names_follow_the_spec_rule() {
        for good in ["csi.workshop.dev", "a", "x1-y.z", &"a".repeat(63)] {
            assert!(validate_driver_name(good).is_ok(), "{good} should be accepted");
        }
        for bad in ["", "-csi", "csi.", "csi_driver", "csi/driver", "csi driver", &"a".repeat(64)] {
            assert!(validate_driver_name(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn a_missing_directory_is_not_usable() {
        assert!(check_dir_usable(Path::new("/nonexistent/backend")).is_err());
    }

    #[test]
    fn an_empty_version_is_refused() {
        let err = IdentityService::new("csi.workshop.dev", " ", Default::default(), vec![]);
        assert!(matches!(err, Err(Error::InvalidVersion(_))));
    }
}
