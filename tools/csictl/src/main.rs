//! `csictl`: talk to any CSI plugin the way a container orchestrator would.
//! Everything lives in the library (so `cargo test --lib` covers it); see
//! [`csictl::cli`].

fn main() -> std::process::ExitCode {
    csictl::cli::main()
}
