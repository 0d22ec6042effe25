//! Compiles the service's protobuf definitions with protox, so no system protoc is needed. The
//! signed formats (`proto/epass/payload/`) belong to epass-core, which compiles them itself.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! does not notice new migration files on its own.
    println!("cargo:rerun-if-changed=migrations");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // The service: tonic stubs plus the descriptor set that server reflection serves.
    let service = protox::compile(["epass/v1/epass.proto"], ["proto"])?;
    fs::write(out_dir.join("epass_descriptor.bin"), service.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(service)?;
    Ok(())
}
