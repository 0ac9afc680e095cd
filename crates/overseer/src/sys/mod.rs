//! Every `unsafe` operation of the crate, each with the reason it is sound.
//!
//! The rest of the crate denies `unsafe_code`. What lives here: starting a
//! worker (a `clone` that shares the master's memory until `execve`, and fd
//! placement in the child, where only async-signal-safe calls are allowed),
//! the parent-death signal for the sanity check,
//! adopting inherited descriptors, and dying by a signal to proxy a worker's
//! death.
//!
//! One facade, two implementations with identical signatures: `linux.rs`
//! and `unix.rs` (every other Unix). The rest of the crate calls `sys::…`
//! and never names a platform.
#![allow(unsafe_code)]

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod platform;
#[cfg(not(target_os = "linux"))]
#[path = "unix.rs"]
mod platform;

pub(crate) use platform::{
    accept_queue, cpu_use, die_with_parent, on_main_thread, release_free_memory, steer_group,
    tune_malloc_for_master,
};

/// How a process group has used the CPUs ([`cpu_use`]), per thread: the
/// longest any ran and waited, ready to run, for a CPU (`run_delay`, which
/// counts a wait once it is over: not the one going on now), and whether
/// one is ready to run (or running) now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuUse {
    pub ran: std::time::Duration,
    pub waited: std::time::Duration,
    pub runnable: bool,
}

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How to start a worker: built once by the master, the worker's own
/// variables set on it before each start, and converted to C strings only by
/// [`spawn`], before the clone.
#[derive(Debug)]
pub(crate) struct Launch {
    /// The executable.
    pub program: PathBuf,
    /// `argv[0]`.
    pub arg0: OsString,
    /// `argv[1..]`.
    pub args: Vec<OsString>,
    /// The complete environment, without `LISTEN_PID` (filled in by the child).
    pub env: Vec<(OsString, OsString)>,
    /// Descriptors to place at 3, 4, … in order.
    pub fds: Vec<RawFd>,
    /// Whether to set `LISTEN_PID` to the child's own pid.
    pub listen_pid: bool,
    /// Kill the child if the spawning thread dies (Linux parent-death signal).
    pub die_with_parent: bool,
}

impl Launch {
    /// Sets the environment variable `key` to `value`, in place if it is
    /// there already.
    pub fn set_var(&mut self, key: &str, value: impl Into<OsString>) {
        let value = value.into();
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.env.push((key.into(), value)),
        }
    }

    /// Removes the environment variable `key`.
    pub fn remove_var(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }
}

/// Raw pointers into buffers the closure owns; only read in the forked child.
struct ExecData {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` followed by room for the digits and a NUL.
    pid_entry: Vec<u8>,
    pid_slot: Option<usize>,
    fds: Vec<RawFd>,
    tmp_fds: Vec<RawFd>,
    die_with_parent: bool,
    parent: libc::pid_t,
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "NUL byte in argument or environment",
        )
    })
}

/// Starts a worker and returns its pid. Must be called from a thread that lives
/// as long as the master when `die_with_parent` is set: Linux delivers the
/// parent-death signal when the *thread* that forked exits.
pub(crate) fn spawn(launch: &Launch) -> io::Result<u32> {
    let path = cstring(launch.program.as_os_str().as_bytes())?;
    let mut argv = vec![cstring(launch.arg0.as_bytes())?];
    for a in &launch.args {
        argv.push(cstring(a.as_bytes())?);
    }
    let mut env = Vec::with_capacity(launch.env.len());
    for (k, v) in &launch.env {
        let mut entry = k.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(v.as_bytes());
        env.push(cstring(&entry)?);
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    let mut pid_entry = LISTEN_PID_PREFIX.to_vec();
    pid_entry.resize(LISTEN_PID_PREFIX.len() + 24, 0);
    let pid_slot = if launch.listen_pid {
        env_ptrs.push(std::ptr::null());
        Some(env_ptrs.len() - 1)
    } else {
        None
    };
    env_ptrs.push(std::ptr::null());
    let data = ExecData {
        path,
        _argv: argv,
        argv_ptrs,
        _env: env,
        env_ptrs,
        pid_entry,
        pid_slot,
        fds: launch.fds.clone(),
        tmp_fds: vec![-1; launch.fds.len()],
        die_with_parent: launch.die_with_parent,
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
    };
    platform::start(launch, data)
}

/// Runs in the child. Returns only on failure, with the reason.
fn child_exec(d: &mut ExecData) -> io::Error {
    let n = d.fds.len() as libc::c_int;
    // Move the sockets to 3..3+n without clobbering a source that sits in
    // that range: first copy each above the range, then into place.
    for (i, &fd) in d.fds.iter().enumerate() {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) is async-signal-safe; an invalid fd is reported as an error.
        let tmp = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + n) };
        if tmp < 0 {
            return io::Error::last_os_error();
        }
        d.tmp_fds[i] = tmp;
    }
    for (i, &tmp) in d.tmp_fds.iter().enumerate() {
        // SAFETY: dup2 is async-signal-safe; the target loses FD_CLOEXEC, the
        // temporary copies keep it and vanish at exec.
        if unsafe { libc::dup2(tmp, 3 + i as libc::c_int) } < 0 {
            return io::Error::last_os_error();
        }
    }
    if d.die_with_parent {
        if let Err(e) = platform::child_dies_with_parent(d.parent) {
            return e;
        }
    }
    if let Some(slot) = d.pid_slot {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        write_decimal(&mut d.pid_entry[LISTEN_PID_PREFIX.len()..], pid as u64);
        d.env_ptrs[slot] = d.pid_entry.as_ptr().cast();
    }
    // SAFETY: path, argv and envp are NUL-terminated strings in NULL-terminated
    // arrays, all alive in this process image until exec replaces it.
    unsafe { libc::execve(d.path.as_ptr(), d.argv_ptrs.as_ptr(), d.env_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// Writes `value` as decimal digits followed by NUL, without allocating.
fn write_decimal(buf: &mut [u8], mut value: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[i] = digits[len - 1 - i];
    }
    buf[len] = 0;
}

/// Takes ownership of an inherited descriptor (socket activation passes
/// ownership of fds 3.. to the process named by `LISTEN_PID`) and marks it
/// close-on-exec so the program's own children do not inherit it.
pub(crate) fn adopt_fd(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD on any integer is harmless; it reports EBADF when closed.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open, and the protocol hands it to this process
    // alone; the caller adopts each number at most once (guarded by a flag).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: F_SETFD on a descriptor we own.
    if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Has the child `cmd` starts close `fds` before anything else it does.
pub(crate) fn close_in_child(cmd: &mut std::process::Command, fds: Vec<RawFd>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls close (async-signal-safe) on plain integers, ignoring errors
    // (one already closed is fine): no allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                libc::close(fd);
            }
            Ok(())
        });
    }
}

/// Puts the running process `pid` (a child that has executed its program)
/// at the lowest CPU priority (nice 19), so that it takes the CPUs only when
/// the serving workers leave them. Set from the parent once the child has
/// executed: set in the child before its exec, a starved child would hold
/// the master's descriptors (and locks) until it got the CPU to exec.
pub(crate) fn lowest_priority(pid: u32) {
    // SAFETY: setpriority takes plain integers and touches no memory of
    // this process; an error (the child already gone) is ignored.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, 19);
    }
}

/// A copy (close-on-exec) of the inherited descriptor `raw`, which stays
/// open and unowned: read through the copy, it can still be passed on.
pub(crate) fn dup_fd(raw: RawFd) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    let copy = fcntl(raw, FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: `copy` was just returned by the kernel as a new descriptor
    // that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Keeps `fd` open across `execve` (`inherited`), or closes it there again.
pub(crate) fn set_inherited(fd: RawFd, inherited: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if inherited {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Converts `argv` and `env` to the C strings `execve` takes.
fn exec_strings(
    argv: &[OsString],
    env: &[(OsString, OsString)],
) -> io::Result<(Vec<CString>, Vec<CString>)> {
    let argv = argv
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let env = env
        .iter()
        .map(|(k, v)| {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            cstring(&entry)
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok((argv, env))
}

/// Replaces this process's image by `program` run with `argv` and `env`
/// (same pid, same children, the descriptors without close-on-exec).
/// Returns only on failure. Threads other than the caller end; children
/// started by the calling thread keep their parent (Linux ties the
/// parent-death signal to the thread that started a child).
pub(crate) fn exec(program: &Path, argv: &[OsString], env: &[(OsString, OsString)]) -> io::Error {
    let result = cstring(program.as_os_str().as_bytes()).and_then(|path| {
        let (argv, env) = exec_strings(argv, env)?;
        nix::unistd::execve(&path, &argv, &env).map_err(io::Error::from)
    });
    match result {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// Like [`exec`], with the executable open at `fd` (one whose path may have
/// been replaced since): Linux only.
pub(crate) fn exec_fd(fd: RawFd, argv: &[OsString], env: &[(OsString, OsString)]) -> io::Error {
    platform::exec_fd(fd, argv, env)
}

/// This process's own executable, opened (not close-on-exec is up to the
/// caller): on Linux the very file that runs, even if its path now holds
/// another one; elsewhere the file at `current_exe`.
pub(crate) fn open_own_executable() -> io::Result<std::fs::File> {
    platform::open_own_executable()
}

/// The time on the system's monotonic clock, in nanoseconds: the same clock
/// before and after an `execve`, unlike an `Instant`, which cannot cross it.
pub(crate) fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        Err(_) => 0,
    }
}

/// The signals blocked before [`block_signals`] (the mask workers start
/// with), as numbers, for a new image of the master to take over.
pub(crate) fn program_mask() -> Vec<i32> {
    let Some(mask) = PROGRAM_MASK.get() else {
        return Vec::new();
    };
    mask.iter().map(|s| s as i32).collect()
}

/// Sets the mask workers start with to `signals`: a new image of the master
/// starts with the previous image's signals blocked, which are not the
/// program's. Call before [`block_signals`].
pub(crate) fn set_program_mask(signals: &[i32]) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for &signal in signals {
        if let Ok(s) = Signal::try_from(signal) {
            set.add(s);
        }
    }
    let _ = PROGRAM_MASK.set(set);
}

/// The signal mask of the master's thread before [`block_signals`]: what
/// its workers start with.
static PROGRAM_MASK: std::sync::OnceLock<nix::sys::signal::SigSet> = std::sync::OnceLock::new();

/// Blocks `signals` in the calling thread, and so in every thread it starts
/// from then on, until the returned guard is dropped.
///
/// The master calls it before it starts any thread, so that the signals it
/// handles are delivered to the one thread that unblocks them (the signal
/// thread) rather than to whichever thread the kernel picks: no helper
/// thread's system call is interrupted by them. Workers still start with the
/// mask from before (see [`spawn`]); `die_by_signal` unblocks its signal.
pub(crate) fn block_signals(signals: &[i32]) -> io::Result<BlockedSignals> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for &signal in signals {
        set.add(Signal::try_from(signal).map_err(io::Error::from)?);
    }
    let old = set.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
    let _ = PROGRAM_MASK.set(old);
    Ok(BlockedSignals { old })
}

/// Unblocks `signals` in the calling thread.
pub(crate) fn unblock_signals(signals: &[i32]) -> io::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for &signal in signals {
        set.add(Signal::try_from(signal).map_err(io::Error::from)?);
    }
    Ok(set.thread_unblock()?)
}

/// The mask before [`block_signals`], set again in its thread when dropped.
#[must_use = "dropping the guard unblocks the signals at once"]
pub(crate) struct BlockedSignals {
    old: nix::sys::signal::SigSet,
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        let _ = self.old.thread_set_mask();
    }
}

/// Ends this process the way a child ended: by the same signal.
///
/// Restores the default action, unblocks it and raises it. When that does not
/// end the process (a signal whose default is to ignore, or PID 1, which the
/// kernel shields from default actions), exits with 128 + signal like a shell.
pub(crate) fn die_by_signal(signal: i32) -> ! {
    // SAFETY: installing SIG_DFL is always valid; no handler code is involved.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
    // SAFETY: a zeroed sigset is then initialised by sigemptyset/sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

/// Turns off core dumps for this process (used before proxying a crash signal
/// when the worker already dumped core, so one crash leaves one core).
pub(crate) fn disable_core_dumps() {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid struct; lowering a limit cannot fail harmfully.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[cfg(target_os = "linux")]
    #[test]
    fn the_cpu_use_of_this_process_group_is_read() {
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let used = super::cpu_use(pgid).unwrap();
        // This thread has run, and is running now.
        assert!(used.ran > std::time::Duration::ZERO, "{used:?}");
        assert!(used.runnable, "{used:?}");
        // A group with no process: nothing read.
        assert_eq!(super::cpu_use(u32::MAX), None);
    }

    #[test]
    fn decimal() {
        let mut buf = [0xffu8; 24];
        super::write_decimal(&mut buf, 4194304);
        assert_eq!(&buf[..8], b"4194304\0");
        super::write_decimal(&mut buf, 0);
        assert_eq!(&buf[..2], b"0\0");
    }

    /// Runs `script` under `sh` as a worker with one socket at fd 3, and
    /// returns its exit status and what it wrote.
    fn run_child(script: &str) -> (nix::sys::wait::WaitStatus, String) {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let spec = super::Launch {
            program: "/bin/sh".into(),
            arg0: "sh".into(),
            args: vec![
                "-c".into(),
                format!("exec > '{}'; {script}", out.display()).into(),
            ],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            fds: vec![socket.as_raw_fd()],
            listen_pid: true,
            die_with_parent: true,
        };
        let pid = super::spawn(&spec).unwrap();
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        (status, std::fs::read_to_string(&out).unwrap_or_default())
    }

    #[test]
    fn a_worker_gets_its_socket_its_pid_and_default_sigpipe() {
        // This test process ignores SIGPIPE (the Rust runtime does); the
        // worker must not inherit that, nor any handler of the master.
        let (status, out) =
            run_child("echo pid=$$ listen=$LISTEN_PID; test -S /proc/self/fd/3 && echo socket; grep ^SigIgn /proc/self/status");
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{status:?}: {out}"
        );
        let pid = status.pid().unwrap().as_raw();
        assert!(out.contains(&format!("pid={pid} listen={pid}\n")), "{out}");
        assert!(out.contains("socket\n"), "{out}");
        let ignored = out
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no SigIgn in {out}"));
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored: {out}"
        );
    }

    #[test]
    fn a_program_that_cannot_be_run_is_an_error_with_its_reason() {
        let spec = super::Launch {
            program: "/nonexistent/overseer-program".into(),
            arg0: "program".into(),
            args: Vec::new(),
            env: Vec::new(),
            fds: Vec::new(),
            listen_pid: false,
            die_with_parent: true,
        };
        let error = super::spawn(&spec).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    }
}
