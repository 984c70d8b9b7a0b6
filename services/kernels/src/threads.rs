//! How many threads candle's CPU kernels use, how its own pool waits, and how glibc's allocator
//! keeps freed buffers: settled once per process, first thing in `main` ([`settle`]).
//!
//! candle 0.11 asks for its thread count on **every** CPU matmul (`get_num_threads`), and unless
//! `RAYON_NUM_THREADS` is set that means opening and parsing `/proc/cpuinfo` (through
//! `num_cpus::get_physical`) each time, tens of thousands of times in one training step of the
//! `shapes` model. Setting the variable once makes that lookup a plain environment read (see
//! docs/benchmarks.md, "pixelfarm's own CPU kernels beside candle's").
//!
//! candle 0.11 also runs its elementwise ops on a pool of its own whose workers spin 25,000 times
//! before sleeping after every op. pixelfarm's kernels run on rayon's pool, so on a small machine
//! candle's spinning workers take the cores that rayon's need. [`settle`] also sets [`SPIN_VAR`]
//! to [`SPIN_LIMIT`] unless the user set it.
//!
//! Rendering allocates and frees the same large activation buffers (hundreds of KiB to MiB) every
//! step. glibc's `malloc` serves blocks above its mmap threshold (128 KiB, growing only as such
//! blocks are freed) with fresh `mmap`s, so each step would pay page faults and kernel page
//! zeroing. [`settle`] raises the threshold to [`MMAP_THRESHOLD`] and the trim threshold to
//! [`TRIM_THRESHOLD`], so freed buffers are reused from the heap; the cost is that a process keeps
//! its peak heap instead of returning it (see docs/benchmarks.md, "Attention kernels, malloc
//! thresholds, vector GELU").

/// The variable candle (and rayon's global pool) read.
pub const VAR: &str = "RAYON_NUM_THREADS";

/// How many times candle's pool workers spin before they sleep (candle's default: 25,000).
pub const SPIN_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// pixelfarm's default for [`SPIN_VAR`]: sleep at once, leaving the cores to rayon's workers (see
/// docs/benchmarks.md, "On pixelfarm's own blocks and kernels").
pub const SPIN_LIMIT: u32 = 0;

/// glibc's mmap threshold under pixelfarm: its maximum on 64-bit (blocks above it still get their
/// own mapping).
pub const MMAP_THRESHOLD: i32 = 32 << 20;

/// Free heap memory glibc keeps before returning it to the system, under pixelfarm.
pub const TRIM_THRESHOLD: i32 = 1 << 30;

/// The thread count candle would pick by itself (physical cores), capped at what this process may
/// run on (`available_parallelism` follows CPU affinity and cgroup quotas, e.g. a Kubernetes CPU
/// limit, which `/proc/cpuinfo` does not).
pub fn default_count() -> usize {
    let allowed = std::thread::available_parallelism().map_or(1, usize::from);
    num_cpus::get_physical().clamp(1, allowed)
}

/// Sets [`VAR`] to [`default_count`] unless the user set it to a thread count already,
/// [`SPIN_VAR`] to [`SPIN_LIMIT`] unless the user set it to a number, and (with glibc) the
/// allocator's thresholds unless the user tuned its `malloc` (`GLIBC_TUNABLES`, `MALLOC_*_`).
///
/// # Safety
/// It writes the process environment, so no other thread may run yet (nor read the environment
/// concurrently): call it as the first statement of `main`, before any runtime or thread pool
/// starts.
#[allow(unsafe_code)]
pub unsafe fn settle() {
    let set = std::env::var(VAR).is_ok_and(|v| v.parse::<usize>().is_ok_and(|n| n > 0));
    if !set {
        // SAFETY: the caller guarantees that no other thread exists yet.
        unsafe { std::env::set_var(VAR, default_count().to_string()) };
    }
    if !std::env::var(SPIN_VAR).is_ok_and(|v| v.parse::<u32>().is_ok()) {
        // SAFETY: as above.
        unsafe { std::env::set_var(SPIN_VAR, SPIN_LIMIT.to_string()) };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::vars_os().any(|(k, v)| {
            let (k, v) = (k.to_string_lossy(), v.to_string_lossy());
            (k == "GLIBC_TUNABLES" && v.contains("malloc")) || k.starts_with("MALLOC_")
        });
        if !tuned {
            // SAFETY: `mallopt` only sets two allocator parameters; no other thread exists yet.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_at_least_one_and_within_what_the_process_may_use() {
        let n = default_count();
        assert!(n >= 1);
        assert!(n <= std::thread::available_parallelism().map_or(1, usize::from));
    }
}
