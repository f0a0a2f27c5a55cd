//! Compiles Berth's containerd-compatible `.proto` files.
//!
//! `protox` (a pure-Rust protobuf compiler, so no `protoc` is needed) parses
//! every file under `proto/` in a single run into one `FileDescriptorSet`;
//! `tonic-prost-build` then generates prost messages and tonic clients and
//! servers, plus `_includes.rs` that nests the modules by proto package.

use std::io;
use std::path::{Path, PathBuf};

const PROTO_ROOT: &str = "proto";

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let root = Path::new(PROTO_ROOT);
    let mut files = Vec::new();
    collect_protos(root, &mut files)?;
    // Deterministic order keeps the generated output stable.
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([root])?;
    compiler.include_imports(true).include_source_info(true);
    for file in &files {
        let relative = file.strip_prefix(root)?;
        compiler.open_file(relative)?;
    }
    let fds = compiler.file_descriptor_set();

    // Kept next to the generated code so the unit tests can check package,
    // service and streaming declarations against the compiled descriptors.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("berth_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `XClient::connect(endpoint)` constructors: the shim's `Task`
        // service has an rpc named `Connect`, whose client method would clash
        // with it, and containerd peers sit on unix sockets anyway, so callers
        // build a `Channel` themselves and use `XClient::new(channel)`.
        .build_transport(false)
        .include_file("_includes.rs")
        .compile_fds(fds)?;
    Ok(())
}
