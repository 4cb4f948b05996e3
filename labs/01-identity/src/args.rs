//! Command-line flags shared by every lab's driver binary.
//!
//! The names follow the Go CSI drivers (`--endpoint`, `--drivername`,
//! `--nodeid`), so our manifests read like everybody else's.

use std::path::PathBuf;

/// Flags every driver binary accepts. Later labs `#[command(flatten)]` this.
#[derive(Debug, Clone, clap::Args)]
pub struct DriverArgs {
    /// Where to serve CSI: `unix:///csi/csi.sock`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///tmp/csi.sock")]
    pub endpoint: String,

    /// The CSI driver name, in domain-name notation.
    #[arg(long, default_value = "csi.workshop.dev")]
    pub drivername: String,

    /// The directory that stands for remote storage (a SAN or NFS server).
    #[arg(long, env = "CSI_BACKEND_DIR", default_value = "/var/lib/csi-workshop/backend")]
    pub backend_dir: PathBuf,

    /// A `tracing` filter such as `info` or `lab03_node=debug,info`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

/// Installs the global `tracing` subscriber. Call once, from `main`.
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).init();
}

/// Parses a size such as `1Gi`, `512Mi`, `10M`, `4096` or `2GiB` into bytes.
///
/// Binary suffixes (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`) are powers of 1024, decimal
/// ones (`k`/`K`, `M`, `G`, `T`, `P`) powers of 1000, as in Kubernetes
/// quantities. A trailing `B` is tolerated (`1GiB`, `10MB`).
pub fn parse_size(input: &str) -> Result<i64, String> {
    let s = input.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("invalid size {input:?}: expected a number such as 1Gi, 512Mi or 4096"));
    }
    let suffix = suffix.trim_start();
    let suffix = suffix.strip_suffix('B').filter(|s| !s.is_empty()).unwrap_or(suffix);
    let multiplier: i64 = match suffix {
        "" | "B" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        other => {
            return Err(format!(
                "invalid size {input:?}: unknown unit {other:?} (use Ki, Mi, Gi, Ti, k, M, G, T or none)"
            ));
        }
    };
    number
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size {input:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1Gi"), Ok(1 << 30));
        assert_eq!(parse_size("10M"), Ok(10_000_000));
        assert!(parse_size("1Qi").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999Ti").is_err());
    }
}
