//! Transparent huge pages off for the connector's own memory, and as they were for the
//! programs it starts.
//!
//! The connector allocates with mimalloc (`main.rs`), which asks the kernel for transparent
//! huge pages on its arenas (the kernel grants them on request under Debian's and Ubuntu's
//! default `madvise` setting, and unasked under `always`) and gives freed memory back to the
//! system in pieces a second later. Where a whole 2 MiB range had been given back, the next
//! allocation there faulted in a new huge page, which the kernel zeroes whole first: that
//! zeroing (`clear_page_erms`) was a quarter of the connector's CPU in a `perf` of
//! `remote-write-bench --rollouts 30`, and disappeared with huge pages off
//! (docs/storage.md, "Write path", has the bench's numbers). mimalloc's own switch
//! (`MIMALLOC_ALLOW_THP=0`) is read from the environment only; `PR_SET_THP_DISABLE` does the
//! same from the code, for mappings made before as well as after (Linux 5.0 or newer checks
//! it at every page fault). The flag is inherited by child processes across exec, so the
//! programs the connector starts (its embedded PostgreSQL) get it cleared again.

#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether [`turn_off`] set the flag (and so whether children should have it cleared).
#[cfg(target_os = "linux")]
static TURNED_OFF: AtomicBool = AtomicBool::new(false);

/// prctl(2) on the flag: `option` is `PR_GET_THP_DISABLE` (answers it) or
/// `PR_SET_THP_DISABLE` (sets it to `value`). Makes one system call, allocates nothing and
/// reads only errno: safe between fork and exec.
#[cfg(target_os = "linux")]
fn thp_disable(option: libc::c_int, value: libc::c_ulong) -> std::io::Result<libc::c_int> {
    // SAFETY: these two options take integer arguments only (passed as the unsigned longs
    // the kernel reads) and read or set a flag of this process's memory map, inherited by
    // its children.
    match unsafe {
        libc::prctl(
            option,
            value,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    } {
        r if r < 0 => Err(std::io::Error::last_os_error()),
        r => Ok(r),
    }
}

/// Turns transparent huge pages off for this process, unless they are off already
/// (inherited from the parent, or set by mimalloc itself); call it before any thread starts.
/// Does nothing on systems other than Linux.
pub fn turn_off() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if thp_disable(libc::PR_GET_THP_DISABLE, 0)? == 0 {
        thp_disable(libc::PR_SET_THP_DISABLE, 1)?;
        TURNED_OFF.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Makes `cmd`'s program start with transparent huge pages as this process found them,
/// clearing the flag [`turn_off`] set.
pub fn as_found_for(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    if TURNED_OFF.load(Ordering::Relaxed) {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // thp_disable, which is safe there.
        unsafe {
            cmd.pre_exec(|| thp_disable(libc::PR_SET_THP_DISABLE, 0).map(drop));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
