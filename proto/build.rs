//! Compiles `edgehook/v1/*.proto` with the vendored protoc, so a fresh clone
//! builds without a system protoc.

use std::path::PathBuf;

const PROTOS: &[&str] = &["edgehook/v1/ingest.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure()
            .file_descriptor_set_path(out.join("edgehook_descriptor.bin"))
            .compile_protos(PROTOS, &["."])?;
    } else {
        prost_build::Config::new().compile_protos(PROTOS, &["."])?;
    }
    Ok(())
}
