//! The dashboard's build (`web/dist`) is embedded by `include_dir!`, which
//! cannot tell cargo about the files it reads: rebuild when any changes.
fn main() {
    println!("cargo:rerun-if-changed=../../web/dist");
}
