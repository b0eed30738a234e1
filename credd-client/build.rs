//! Compiles credd's protos (../proto, the server's own) into clients only, with
//! protox: no system `protoc`.

const PROTOS: &[&str] = &[
    "credd/v1/orgs.proto",
    "credd/v1/client_secrets.proto",
    "credd/v1/app_registrations.proto",
    "credd/v1/audit.proto",
    "credd/v1/caller_tokens.proto",
    "credd/v1/gateway.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let mut compiler = protox::Compiler::new(["../proto"])?;
    compiler.include_imports(true);
    compiler.open_files(PROTOS)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
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
