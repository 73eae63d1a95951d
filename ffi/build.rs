//! Gives the Linux shared library the soname `libhydrant.so.<ABI version>`.

include!("src/abi.rs");

fn main() {
    println!("cargo:rerun-if-changed=src/abi.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhydrant.so.{HYDRANT_ABI_VERSION}");
    }
}
