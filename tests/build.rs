//! Generates the test gRPC service (`proto/echo.proto`) with tonic; needs `protoc`
//! (Debian `protobuf-compiler`, installed by `scripts/setup.sh`).

fn main() {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/echo.proto"], &["proto"])
        .expect("protoc compiles proto/echo.proto (install protobuf-compiler)");
}
