//! The code generated from proto/credd/v1 and the file descriptor set that
//! reflection serves.

#![allow(clippy::all, missing_docs)]

/// `credd.v1`: messages, clients and servers.
pub mod credd {
    /// Version 1 of the API.
    pub mod v1 {
        tonic::include_proto!("credd.v1");
    }
}

pub use credd::v1::*;

/// The encoded descriptors of credd's protos and their imports (well-known types).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("credd_descriptor");
