//! `csictl`: talk to any CSI plugin the way a container orchestrator would.
//!
//! ```text
//! csictl --endpoint unix:///tmp/csi.sock identity info
//! csictl controller create --name pvc-1 --size 1Gi --type block
//! csictl walk --type file
//! csictl bench --cycles 20 --pid $(pidof csi-lab03)
//! ```
//!
//! Exit status: 0 on success, 2 when the plugin answered with a gRPC error
//! (printed as `error: code=<Code> message=<msg>` on stderr), 1 otherwise.

/// `println!` that ignores a closed stdout (`csictl walk | head`): dying on
/// SIGPIPE or panicking halfway through a walk would leave volumes mounted.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` counterpart of `outln!`.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

pub mod bench;
pub mod cli;
pub mod commands;
pub mod lifecycle;
pub mod parse;
pub mod print;
pub mod rpc;
pub mod walk;

pub use cli::{BenchArgs, BenchType, VolumeType, WalkArgs};
