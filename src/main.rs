//! The `threadkeeper` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: allocation and freeing were 9-12 % of the service's
/// CPU at 64 concurrent turns, and with mimalloc the service used 14 % less CPU per turn
/// (BENCHMARKS.md). Built not to ask for transparent huge pages (`no_thp`: no `madvise`):
/// asking for them, it held 24 MB when fresh instead of 13 (on a host whose THP setting is
/// `always` the kernel may still use them; `MIMALLOC_ALLOW_THP=0` turns them off). Only the
/// service binary uses it; the library (and so its tests) keeps the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    threadkeeper::cli::main()
}
