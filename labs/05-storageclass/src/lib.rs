//! Lab 05: StorageClasses and dynamic provisioning.
//!
//! - [`provisioner`]: our own external-provisioner (C22), written with
//!   kube-rs' controller runtime: claims of our StorageClasses become
//!   CreateVolume calls and PVs, released PVs become DeleteVolume calls.
//! - [`local`]: the static local provisioner (C25–C27), a DaemonSet that
//!   publishes node disks as local PVs.

pub mod local;
pub mod provisioner;
