//! Connecting to a CSI plugin as a client (what a CO, `csictl` or a test does).
//!
//! CSI plugins listen on a unix domain socket, named by an endpoint such as
//! `unix:///run/csi/csi.sock`. gRPC over a unix socket still speaks HTTP/2,
//! so tonic needs *some* URI; the dummy `http://[::]:50051` below is never
//! dialled, the connector ignores it and opens the socket instead.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Why an endpoint could not be used or reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint string is empty.
    #[error("empty CSI endpoint")]
    Empty,
    /// A scheme other than `unix` (CSI only allows unix sockets).
    #[error(
        "unsupported endpoint scheme in {endpoint:?}: CSI plugins listen on unix sockets, \
         use unix:///absolute/path.sock"
    )]
    UnsupportedScheme {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The socket path is not absolute (e.g. `unix://relative.sock`).
    #[error("socket path in {endpoint:?} must be absolute")]
    RelativePath {
        /// The endpoint as given.
        endpoint: String,
    },
    /// The gRPC channel could not be set up or the socket refused us.
    // The reason is in `source()`, not repeated here, so error chains
    // (`{:#}` in anyhow) print it once.
    #[error("cannot connect to {}", path.display())]
    Transport {
        /// The socket path.
        path: PathBuf,
        /// The underlying transport error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Turns `unix:///abs/path`, `unix:/abs/path` or `/abs/path` into a socket path.
pub fn parse_endpoint(endpoint: &str) -> Result<PathBuf, ConnectError> {
    let trimmed = endpoint.trim();
    if trimmed.is_empty() {
        return Err(ConnectError::Empty);
    }
    let path = if let Some(rest) = trimmed.strip_prefix("unix://") {
        // `unix:///abs` leaves `/abs`; `unix://rel` leaves `rel` (rejected below).
        rest
    } else if let Some(rest) = trimmed.strip_prefix("unix:") {
        rest
    } else if trimmed.contains("://") || looks_like_scheme(trimmed) {
        return Err(ConnectError::UnsupportedScheme { endpoint: endpoint.to_string() });
    } else {
        trimmed
    };
    if path.is_empty() {
        return Err(ConnectError::Empty);
    }
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(ConnectError::RelativePath { endpoint: endpoint.to_string() });
    }
    Ok(path.to_path_buf())
}

/// `tcp:host:port`-like strings: a scheme word, a colon, no leading slash.
fn looks_like_scheme(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        }
        None => false,
    }
}

/// Opens a gRPC channel to the plugin listening at `endpoint`.
///
/// The connection is made eagerly, so a missing socket fails here rather
/// than on the first RPC.
pub async fn connect(endpoint: &str) -> Result<Channel, ConnectError> {
    let path = parse_endpoint(endpoint)?;
    let transport_err = |source| ConnectError::Transport { path: path.clone(), source };
    let connector_path = path.clone();
    Endpoint::try_from("http://[::]:50051")
        .map_err(transport_err)?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = connector_path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(transport_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unix_triple_slash() {
        assert_eq!(parse_endpoint("unix:///tmp/csi.sock").unwrap(), PathBuf::from("/tmp/csi.sock"));
    }

    #[test]
    fn accepts_unix_single_slash() {
        assert_eq!(
            parse_endpoint("unix:/run/csi/plugin.sock").unwrap(),
            PathBuf::from("/run/csi/plugin.sock")
        );
    }

    #[test]
    fn accepts_bare_absolute_path() {
        assert_eq!(
            parse_endpoint("/var/lib/kubelet/plugins/x/csi.sock").unwrap(),
            PathBuf::from("/var/lib/kubelet/plugins/x/csi.sock")
        );
    }

    #[test]
    fn trims_whitespace() {
        assert_eq!(parse_endpoint("  unix:///tmp/a.sock\n").unwrap(), PathBuf::from("/tmp/a.sock"));
    }

    #[test]
    fn rejects_tcp_and_other_schemes() {
        for e in ["tcp://127.0.0.1:10000", "http://localhost:50051", "tcp:1.2.3.4:5", "dns:///host"] {
            let err = parse_endpoint(e).unwrap_err();
            assert!(matches!(err, ConnectError::UnsupportedScheme { .. }), "{e}: {err:?}");
            assert!(err.to_string().contains("unix"), "message should say what to use: {err}");
        }
    }

    #[test]
    fn rejects_relative_paths() {
        for e in ["unix://csi.sock", "unix:csi.sock", "csi.sock", "./csi.sock"] {
            assert!(matches!(parse_endpoint(e), Err(ConnectError::RelativePath { .. })), "{e}");
        }
    }

    #[test]
    fn rejects_empty() {
        for e in ["", "   ", "unix://", "unix:"] {
            assert!(matches!(parse_endpoint(e), Err(ConnectError::Empty)), "{e:?}");
        }
    }

    #[tokio::test]
    async fn connect_to_missing_socket_fails() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nobody-home.sock");
        let err = connect(&format!("unix://{}", sock.display())).await.unwrap_err();
        assert!(matches!(err, ConnectError::Transport { .. }), "{err:?}");
    }
}
