//! Lab 06: a FlexVolume driver for the workshop's backend, and a tool that
//! moves its PersistentVolumes to the CSI driver without copying data.
//!
//! - [`flex`]: kubelet's FlexVolume call-out protocol (binary `flex-workshop`).
//! - [`plan`]: the migration as pure functions (steps, journal, PV mapping).
//! - [`migrate`]: the steps against the Kubernetes API (binary `csi-migrate`).
//! - [`fault`]: fault injection, to prove that an interrupted run resumes.

pub mod fault;
pub mod flex;
pub mod migrate;
pub mod plan;
