//! Compiles `edgehook/v1/*.proto` with the vendored protoc, so a fresh clone
//! builds without a system protoc.

use std::path::PathBuf;

/// What the filter needs: the ingest messages only.
const INGEST: &[&str] = &["edgehook/v1/ingest.proto"];
/// What the sidecar serves: ingest and the admin API.
const ALL: &[&str] = &["edgehook/v1/ingest.proto", "edgehook/v1/admin.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    for proto in ALL {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure()
            .file_descriptor_set_path(out.join("edgehook_descriptor.bin"))
            .compile_protos(ALL, &["."])?;
    } else {
        prost_build::Config::new().compile_protos(INGEST, &["."])?;
    }
    Ok(())
}
