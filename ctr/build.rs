//! Links `berth` as a position-dependent executable, like berthd and the shim (their build
//! scripts say why for memory). For a short-lived CLI the gain is start-up time: the dynamic
//! loader no longer applies ~32,000 relocations to a 25 MB binary before `main`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
