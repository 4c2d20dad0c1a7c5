//! volmig's integration tests: one test binary (so `tests/common` and the
//! other support modules are compiled once, and nothing in them is dead),
//! one module per file. Run one file's tests with
//! `cargo test --test tests incremental::`.
//!
//! Support: `common` (fake data-roots), `bundle_support` (bundles taken
//! apart and made), `e2e` (a private dockerd, sshd), `measured` (timing
//! and memory of the real binary).

mod bundle_support;
mod common;
mod e2e;
mod measured;

mod base_record;
mod bench_dataroot;
mod bench_migrate;
mod bind_hostile;
mod bind_volumes;
mod bundle_fidelity;
mod bundle_hostile;
mod bundle_policies;
mod cli_surface;
mod crash_bind;
mod crash_delta;
mod crash_import;
mod daemon_version_choice;
mod docker_context_broken;
mod e2e_daemon;
mod e2e_devices;
mod e2e_migrate;
mod e2e_plugin;
mod e2e_ssh;
mod e2e_static;
mod e2e_userns;
mod engine_fake;
mod export_races;
mod hostile_limits;
mod import_safety;
mod incremental;
mod inspect_manifest;
mod migrate_moved_root;
mod progress_tty;
mod proptest_mutations;
mod real_fixtures;
mod refusals;
mod scan_cases;
mod userns_shift;
mod verify_cases;
