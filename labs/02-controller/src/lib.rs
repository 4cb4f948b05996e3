//! Lab 02: the CSI Controller service.
//!
//! Volumes live in a backend directory that stands for remote storage
//! ([`backend`]). The [`controller`] serves CreateVolume, DeleteVolume,
//! ControllerPublish/Unpublish (attach/detach) and friends on top of it.

pub mod backend;
pub mod capability;
pub mod capacity;
pub mod controller;
pub mod driver;
pub mod error;
pub mod locks;
pub mod state;
pub mod topology;
pub mod validate;

pub use error::{Error, Result};
