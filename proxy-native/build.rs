//! Release builds embed the demo page (`www-demo/dist`; rust-embed reads the folder when the crate
//! compiles), so cargo must compile the crate again when the page is rebuilt. Debug builds read
//! the files at run time and need nothing.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    if Path::new("../www-demo/dist").exists() {
        println!("cargo:rerun-if-changed=../www-demo/dist");
    } else {
        // Notices the folder appearing.
        println!("cargo:rerun-if-changed=../www-demo");
    }
}
