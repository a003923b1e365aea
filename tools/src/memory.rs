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

/// Applies the process's memory settings; `allow_thp` is the value of [`MIMALLOC_ALLOW_THP`].
pub fn apply(allow_thp: Option<std::ffi::OsString>) -> HugePages {
    if allow_thp.is_some() {
        return HugePages::LeftToMimalloc;
    }
    disable_thp()
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
}
