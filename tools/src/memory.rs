//! The process's memory settings, applied once at start.
//!
//! **Transparent huge pages are off** for the process. mimalloc asks the kernel for huge pages
//! on the memory it maps (`madvise(MADV_HUGEPAGE)`), so every first touch of a 2 MiB region
//! had the kernel zero all of it, and every region mimalloc gave back and took again was
//! zeroed anew. In a rebuild that was ~40% of the planning thread's samples while it planned
//! the first batch (`clear_page_erms`, under mimalloc's page allocation). Measured with
//! `tidings bench replay`, eight runs alternated, same binary: the rebuild ran at 902k against
//! 745k index entries/s with 17% less CPU; against the commit before, 888k against 742k (the
//! README's table). Huge pages here cost more zeroing than they save in TLB misses;
//! Redis, for one, warns at start when they are on.
//!
//! `MIMALLOC_ALLOW_THP` set in the environment (`1` keeps huge pages) is left to mimalloc,
//! which reads it itself.
//!
//! **glibc's heap keeps what it freed** ([`C_HEAP_TRIM`], [`C_HEAP_PAD`]). Rust code allocates
//! through mimalloc, but librdkafka and RocksDB use glibc's malloc. librdkafka's fetch thread
//! allocates a message object per record, which the polling thread frees soon after; with
//! glibc's defaults the heap gave the freed memory back to the kernel (past 128 KiB free at
//! its top) and grew again a moment later, page by page. In the replay read of
//! `tidings bench replay` (300,000 records) `calloc` was 14% of the process's samples, most of
//! it in `sysmalloc`. Profiled the same way (perf at 1,999 Hz over the read), the read took
//! 1,840 samples with this and the headers fix of `tidings_consumers::log`, against 3,043
//! before both; `calloc` fell to 7%. Replay read, alternated runs: 0.74–1.16M events/s (8
//! runs) against 0.53–0.93M (7 runs). A smaller setting through `GLIBC_TUNABLES` (64 MiB
//! kept, 16 MiB pad) read 0.69–0.83M against 1.06–1.25M for this one, three runs each. The
//! replay bench's peak memory did not change (818 against 812 MiB). The pipeline bench
//! (`tidings bench`: `up`'s roles) peaked 89–220 MiB higher with it (1,037 and 1,076 against
//! 817 and 987 MiB, two pairs) and gained nothing clear, so it is set only for the commands
//! that run to completion (replay, rebuild, migration, restore and the like; `main` decides),
//! not for the long-running roles, whose memory stays resident.
//!
//! `GLIBC_TUNABLES` naming a `glibc.malloc.` setting, or `MALLOC_TRIM_THRESHOLD_` or
//! `MALLOC_TOP_PAD_` set, leaves glibc's heap to them.

/// What [`apply`] did about transparent huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// Turned off for this process (`prctl(PR_SET_THP_DISABLE)`).
    Off,
    /// `MIMALLOC_ALLOW_THP` is set: mimalloc decided.
    LeftToMimalloc,
    /// The kernel refused or has no such setting (not Linux, or too old): left as they were.
    Unchanged,
}

/// The setting mimalloc reads, which overrides ours.
pub const MIMALLOC_ALLOW_THP: &str = "MIMALLOC_ALLOW_THP";

/// What [`keep_c_heap`] did about glibc's heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CHeap {
    /// Keeps up to [`C_HEAP_TRIM`] free at its top and grows by [`C_HEAP_PAD`] more.
    Kept,
    /// The environment sets glibc's malloc: left to it.
    LeftToEnvironment,
    /// Not glibc, or glibc refused: left as it was.
    Unchanged,
}

/// Free bytes glibc's heap keeps at its top before it gives memory back to the kernel (its
/// default: 128 KiB, raised as large blocks come and go, at most 64 MiB).
pub const C_HEAP_TRIM: usize = 512 << 20;

/// Bytes glibc's heap grows by beyond what an allocation needs (its default: 128 KiB).
pub const C_HEAP_PAD: usize = 64 << 20;

/// Environment variables through which glibc's malloc is set instead.
pub const C_HEAP_ENVIRONMENT: [&str; 3] = [
    "GLIBC_TUNABLES",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

/// Applies the process's memory settings; `allow_thp` is the value of [`MIMALLOC_ALLOW_THP`].
pub fn apply(allow_thp: Option<std::ffi::OsString>) -> HugePages {
    if allow_thp.is_some() {
        return HugePages::LeftToMimalloc;
    }
    disable_thp()
}

/// Has glibc's heap keep what it freed ([`C_HEAP_TRIM`], [`C_HEAP_PAD`]), unless `env` (the
/// value of each of [`C_HEAP_ENVIRONMENT`]) sets glibc's malloc.
pub fn keep_c_heap(env: impl Fn(&str) -> Option<String>) -> CHeap {
    let set_by_environment = C_HEAP_ENVIRONMENT.iter().any(|name| match env(name) {
        Some(v) if *name == "GLIBC_TUNABLES" => v.contains("glibc.malloc."),
        Some(_) => true,
        None => false,
    });
    if set_by_environment {
        return CHeap::LeftToEnvironment;
    }
    set_c_heap()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_c_heap() -> CHeap {
    let value = |n: usize| libc::c_int::try_from(n).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt takes two integers and changes glibc's allocator parameters, which it
    // guards with its own lock; it touches no memory of ours.
    let ok = unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, value(C_HEAP_TRIM)) == 1
            && libc::mallopt(libc::M_TOP_PAD, value(C_HEAP_PAD)) == 1
    };
    if ok {
        CHeap::Kept
    } else {
        CHeap::Unchanged
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_c_heap() -> CHeap {
    CHeap::Unchanged
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn disable_thp() -> HugePages {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only and changes a flag of
    // this process's memory map; it touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r == 0 {
        HugePages::Off
    } else {
        HugePages::Unchanged
    }
}

#[cfg(not(target_os = "linux"))]
fn disable_thp() -> HugePages {
    HugePages::Unchanged
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn thp_disabled() -> bool {
        // SAFETY: as above; PR_GET_THP_DISABLE returns the flag.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
    }

    #[test]
    fn huge_pages_are_turned_off_unless_mimalloc_is_told_otherwise() {
        assert_eq!(apply(Some("1".into())), HugePages::LeftToMimalloc);
        assert_eq!(apply(None), HugePages::Off);
        assert!(thp_disabled(), "the process flag reads back as set");
        // The status line the kernel shows for the process says so too.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }

    #[test]
    fn the_environment_decides_over_glibcs_heap_when_it_sets_it() {
        let only = |name: &'static str, value: &'static str| {
            move |n: &str| (n == name).then(|| value.to_owned())
        };
        for (name, value) in [
            ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000"),
            ("MALLOC_TRIM_THRESHOLD_", "1000"),
            ("MALLOC_TOP_PAD_", "0"),
        ] {
            assert_eq!(
                keep_c_heap(only(name, value)),
                CHeap::LeftToEnvironment,
                "{name}={value}"
            );
        }
        // Tunables of something else do not count.
        assert_eq!(
            keep_c_heap(only("GLIBC_TUNABLES", "glibc.pthread.rseq=0")),
            CHeap::Kept
        );
    }

    #[cfg(target_env = "gnu")]
    #[test]
    #[allow(unsafe_code)]
    fn glibcs_heap_keeps_what_it_freed() {
        assert_eq!(keep_c_heap(|_| None), CHeap::Kept);
        // 96 MiB in 1 KiB blocks through glibc (Rust's own allocations go to mimalloc), freed
        // in order, so they fall together into free space at the heap's top. With glibc's
        // defaults most of it goes back to the kernel (all of it from the main thread's heap,
        // all but 64 MiB from another thread's); kept, glibc still counts it all free.
        const BLOCKS: usize = 96 * 1024;
        // SAFETY: mallinfo2 only reads glibc's statistics.
        let free = || unsafe { libc::mallinfo2() }.fordblks;
        let before = free();
        // SAFETY: each block comes from malloc, is checked, and is freed once, below.
        let blocks: Vec<*mut libc::c_void> =
            (0..BLOCKS).map(|_| unsafe { libc::malloc(1024) }).collect();
        assert!(blocks.iter().all(|b| !b.is_null()));
        for b in blocks {
            // SAFETY: from malloc above, freed once.
            unsafe { libc::free(b) };
        }
        let kept = free().saturating_sub(before);
        assert!(
            kept >= 90 << 20,
            "only {} MiB of the 96 MiB freed are kept",
            kept >> 20
        );
    }
}
