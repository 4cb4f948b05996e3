//! Our own external-provisioner (C22), built on kube-rs' controller runtime.
//!
//! - [`decide`]: the decisions as plain functions (`is_ours`, `plan_create`,
//!   `build_pv`, `on_released`, `plan_expand`, `should_reschedule`,
//!   `attached_nodes`), tested by tables;
//! - [`controller`]: the glue: two `kube::runtime::Controller`s (claims and
//!   PVs) that fetch objects, ask [`decide`], call the driver over CSI and
//!   write PVs and Events;
//! - [`leader`]: Lease-based leader election, so of two replicas one acts;
//! - [`quantity`]: `1Gi` → bytes.

pub mod controller;
pub mod decide;
pub mod leader;
pub mod quantity;

pub use controller::{Context, Error};
pub use decide::{
    Action, Failure, NodeTopology, Reject, attached_nodes, build_pv, is_ours, on_released, plan_create,
    plan_expand, should_reschedule,
};
