//! Other Unix systems (macOS, the BSDs): workers start by `fork` through
//! `std::process::Command`; there is no parent-death signal (except on
//! Android), and the allocator is left as it is.

use std::io;

use super::{child_exec, ExecData, Launch};

// SAFETY: the pointers point into heap buffers owned by the same struct, which
// is moved as a whole into the `pre_exec` closure and only dereferenced in the
// forked child, which has its own copy of the address space.
unsafe impl Send for ExecData {}
// SAFETY: as above; the parent never dereferences the pointers.
unsafe impl Sync for ExecData {}

/// Elsewhere: `fork`, through `Command` and its `pre_exec` hook.
pub(super) fn start(launch: &Launch, mut data: ExecData) -> io::Result<u32> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(&launch.program);
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe calls (fcntl, dup2, prctl, getppid, getpid, execve)
    // on memory prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || Err(child_exec(&mut data)));
    }
    let child = cmd.spawn()?;
    // The master reaps its children itself (waitpid by pid), so the handle is
    // not needed; dropping it neither waits nor kills.
    Ok(child.id())
}

/// Has the child `cmd` starts killed (SIGKILL) when the calling thread ends,
/// the master's death included (Linux's parent-death signal; elsewhere
/// nothing). For children that are not workers, started with
/// `std::process::Command` from a thread that lives as long as the master
/// (the sanity check, in a process group of its own that a kill of the
/// master's group does not reach).
pub(crate) fn die_with_parent(cmd: &mut std::process::Command) {
    #[cfg(target_os = "android")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and makes
        // only async-signal-safe calls (prctl, getppid) with plain integers.
        unsafe {
            cmd.pre_exec(move || child_dies_with_parent(parent));
        }
    }
    #[cfg(not(target_os = "android"))]
    let _ = cmd;
}

/// In a child about to exec: the parent-death signal where there is one
/// (Android); elsewhere nothing to do.
pub(super) fn child_dies_with_parent(parent: libc::pid_t) -> io::Result<()> {
    #[cfg(target_os = "android")]
    {
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and takes plain integers.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    #[cfg(not(target_os = "android"))]
    let _ = parent;
    Ok(())
}

/// Keeps the master's heap small: its few threads share one malloc arena
/// (glibc otherwise gives each thread that allocates an arena of its own,
/// which keeps what it once held), and buffers of 128 KiB or more are mapped
/// and unmapped rather than kept in the heap (a fixed threshold: glibc would
/// raise it after the first large buffer is freed). Only the master calls
/// this; workers are new processes. Nothing happens with another C library,
/// and a custom global allocator is not affected.
pub(crate) fn tune_malloc_for_master() {}

/// Returns memory that malloc holds but no longer uses to the system, after
/// work that allocated a lot and is done (a release downloaded and checked).
pub(crate) fn release_free_memory() {}

/// Executing an open file needs `fexecve`, which this platform's build
/// does not use: the previous image is then found by its path.
pub(super) fn exec_fd(
    _fd: std::os::fd::RawFd,
    _argv: &[std::ffi::OsString],
    _env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "executing an open file is supported on Linux only",
    )
}

/// The file at this process's executable path.
pub(super) fn open_own_executable() -> io::Result<std::fs::File> {
    std::fs::File::open(std::env::current_exe()?)
}

/// Only Linux ties a child's fate to the thread that started it: any
/// thread is as good as the main one here.
pub(crate) fn on_main_thread() -> bool {
    true
}

/// Steering a `SO_REUSEPORT` group by classic BPF is Linux's.
pub(crate) fn steer_group(_fd: std::os::fd::RawFd, _index: u32) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "steering connections is supported on Linux only",
    ))
}

/// A listener's accept queue is read by `TCP_INFO` on Linux only.
pub(crate) fn accept_queue(_fd: std::os::fd::RawFd) -> io::Result<u32> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "reading an accept queue is supported on Linux only",
    ))
}

/// How a process group used the CPUs is read from `/proc` on Linux only.
pub(crate) fn cpu_use(_pgid: u32) -> Option<super::CpuUse> {
    None
}
