//! Compiles the protobuf definitions with protox, so no system protoc is needed.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! does not notice new migration files on its own.
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // The signed payload: plain prost, used by the pure core.
    let payload = protox::compile(["epass/payload/v1/payload.proto", "epass/payload/v1/lists.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(payload)?;

    // The service: tonic stubs plus the descriptor set that server reflection serves.
    let service = protox::compile(["epass/v1/epass.proto"], ["proto"])?;
    fs::write(out_dir.join("epass_descriptor.bin"), service.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(service)?;
    Ok(())
}
