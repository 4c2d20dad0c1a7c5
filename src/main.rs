//! The `volmig` binary: everything is in `volmig::cli`.

// The export walker allocates each entry's buffers on one thread and the
// writer frees them on another; glibc's arenas serialise that on a lock
// (5% of an export of 100,000 small files went to futex wake-ups).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    volmig::cli::main()
}
