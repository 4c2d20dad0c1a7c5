//! Build-time settings.
//!
//! `VOLMIG_SKIP_E2E=1` (the tests that start a private dockerd are not
//! wanted, e.g. on a machine without one) sets `cfg(volmig_skip_e2e)`:
//! those tests are then `#[ignore]`d, so the test run counts them as
//! skipped, never as passed.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(volmig_skip_e2e)");
    println!("cargo::rerun-if-env-changed=VOLMIG_SKIP_E2E");
    if std::env::var("VOLMIG_SKIP_E2E").is_ok_and(|v| v == "1") {
        println!("cargo::rustc-cfg=volmig_skip_e2e");
    }
}
