//! Compiles proto/credd/v1 with protox (no system `protoc`) and writes the encoded
//! file descriptor set that the reflection service serves.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "credd/v1/orgs.proto",
    "credd/v1/client_secrets.proto",
    "credd/v1/app_registrations.proto",
    "credd/v1/audit.proto",
    "credd/v1/caller_tokens.proto",
    "credd/v1/gateway.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // compile_fds ignores file_descriptor_set_path, so reflection's copy is written here.
    std::fs::write(
        out_dir.join("credd_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // RPCs a later change implements answer UNIMPLEMENTED until then.
        .generate_default_stubs(true)
        // Messages that carry a plaintext secret get a redacting Debug in src/pb.rs.
        .skip_debug([
            ".credd.v1.GenerateClientSecretResponse",
            ".credd.v1.ImportClientSecretRequest",
            ".credd.v1.ActivateClientSecretRequest",
            ".credd.v1.ActivateClientSecretRequest.secret",
            ".credd.v1.VerifyClientSecretRequest",
            ".credd.v1.CreateCallerTokenResponse",
        ])
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
