//! Lab 03: the CSI Node service.
//!
//! [`node`] serves the RPCs; [`loopdev`], [`mount`] and [`fs`] do the host
//! work; [`sys`] is the only module with `unsafe` code (loop-device ioctls).

pub mod driver;
pub mod error;
pub mod fs;
pub mod loopdev;
pub mod mount;
pub mod node;
pub mod paths;
pub mod state;
pub mod sys;
pub mod testing;

pub use error::{Error, Result};
