//! Compiles `proto/csi.proto` with protox (a protobuf compiler written in Rust),
//! so neither trainees nor CI need `protoc` installed.

// ANCHOR: build-rs
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/csi.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // RPCs a service does not override answer UNIMPLEMENTED, like the
        // `Unimplemented*Server` types Go drivers embed.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
// ANCHOR_END: build-rs
