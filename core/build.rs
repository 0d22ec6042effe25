//! Compiles the signed formats' protobuf definitions (pass payload, trust list, status list)
//! with protox, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/epass/payload");
    let payload = protox::compile(["epass/payload/v1/payload.proto", "epass/payload/v1/lists.proto"], ["../proto"])?;
    prost_build::Config::new().compile_fds(payload)?;
    Ok(())
}
