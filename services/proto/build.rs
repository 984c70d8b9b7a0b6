//! Compile `proto/` with protox (pure Rust), so building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["pixelfarm/v1/api.proto", "pixelfarm/v1/jobs.proto"];
    let fds = protox::compile(files, ["../../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed=../../proto/{f}");
    }
    Ok(())
}
