//! The wire between the edgehook filter and the sidecar, generated from
//! `proto/edgehook/v1/*.proto`.
//!
//! Without features this is prost messages only (what the wasm filter needs);
//! the `grpc` feature adds tonic clients and servers and the encoded file
//! descriptor set that the sidecar serves through gRPC reflection.

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/edgehook.v1.rs"));

    /// The encoded `FileDescriptorSet` of every edgehook proto, for reflection.
    #[cfg(feature = "grpc")]
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/edgehook_descriptor.bin"));
}
