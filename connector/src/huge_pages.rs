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

/// Turns transparent huge pages off for this process; call it before any thread starts.
/// `Ok(true)` when it did, `Ok(false)` when they were off already (inherited from the parent,
/// or set by mimalloc itself) or on systems other than Linux.
pub fn turn_off() -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use libc::c_ulong;
        // SAFETY: prctl(2) with PR_GET_THP_DISABLE / PR_SET_THP_DISABLE takes integer
        // arguments only (passed as the unsigned longs the kernel reads) and reads or sets a
        // flag of this process's memory map, inherited by its children.
        let already = unsafe {
            libc::prctl(
                libc::PR_GET_THP_DISABLE,
                0 as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
            )
        };
        if already < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if already == 1 {
            return Ok(false);
        }
        // SAFETY: as above.
        let set = unsafe {
            libc::prctl(
                libc::PR_SET_THP_DISABLE,
                1 as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
                0 as c_ulong,
            )
        };
        if set != 0 {
            return Err(std::io::Error::last_os_error());
        }
        TURNED_OFF.store(true, Ordering::Relaxed);
        Ok(true)
    }
    #[cfg(not(target_os = "linux"))]
    Ok(false)
}

/// Makes `cmd`'s program start with transparent huge pages as this process found them,
/// clearing the flag [`turn_off`] set.
pub fn as_found_for(cmd: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    if TURNED_OFF.load(Ordering::Relaxed) {
        use libc::c_ulong;
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec: it makes one system
        // call (async-signal-safe), allocates nothing and reads only errno.
        unsafe {
            cmd.pre_exec(|| {
                match libc::prctl(
                    libc::PR_SET_THP_DISABLE,
                    0 as c_ulong,
                    0 as c_ulong,
                    0 as c_ulong,
                    0 as c_ulong,
                ) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
