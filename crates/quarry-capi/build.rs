//! Gives the cdylib Ceph's SONAME, so programs linked against librados.so.2 load it.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,librados.so.2");
    println!("cargo:rerun-if-changed=build.rs");
}
