//! Giving freed heap memory back to the operating system.
//!
//! glibc's malloc keeps what a program frees in its arenas (one per thread that allocated) and
//! returns only the top of the main heap on its own: after a burst — a log compacted away, an
//! attacker's connections closed — the process keeps its peak resident size although the heap
//! is mostly free (`BENCHMARKS.md`, "Memory under attack"). [`release_free_memory`] asks it to
//! hand back every free page of every arena (`malloc_trim(0)`, which `madvise`s them away).
//! It changes no allocation and no behaviour, only the resident size; on other platforms and in
//! the simulator it does nothing.

/// Returns the free pages of the allocator's arenas to the system (glibc only; a few ms for a
/// heap of hundreds of MB, so call it after something big was freed, not per request).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(madsim)))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}
