//! Linux: workers start by `clone(CLONE_VM | CLONE_VFORK)`, children die
//! with the master by the parent-death signal, and glibc's allocator is
//! tuned for the master.

use std::io;
use std::os::fd::RawFd;

use super::{child_exec, ExecData, Launch, PROGRAM_MASK};

/// The child's stack while it shares the master's memory (a few system calls
/// and `execve`, which runs in the kernel, need little).
const CHILD_STACK: usize = 64 * 1024;

/// Starts the child the way `posix_spawn` does on Linux: `clone` with
/// `CLONE_VM | CLONE_VFORK`, so the child borrows the master's memory until it
/// calls `execve` instead of copying its page tables. A `fork` cost the master
/// about half a millisecond of CPU per worker, and the child as much again to
/// throw the copy away at `execve`, on CPUs busy serving the old worker's
/// requests. (`posix_spawn` itself cannot set the parent-death signal, nor
/// `LISTEN_PID`, which is the child's own pid.)
///
/// Signals are blocked across the `clone`, and the child sets every signal
/// with a handler back to its default before unblocking them, so no master
/// handler ever runs in the child; `SIGPIPE` goes back to its default too,
/// as `std::process::Command` does. The child then takes the mask the master
/// had before it blocked its own signals ([`block_signals`](super::block_signals)), as it would
/// have inherited from the master's parent. It reports a failure through
/// memory the two share, then exits with 127.
pub(super) fn start(_launch: &Launch, mut data: ExecData) -> io::Result<u32> {
    use std::sync::atomic::{AtomicI32, Ordering};

    struct Shared<'a> {
        data: &'a mut ExecData,
        mask: libc::sigset_t,
        errno: AtomicI32,
    }

    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `Shared` below, alive in the parent's frame,
        // which is suspended (CLONE_VFORK) until this child execs or exits.
        let shared = unsafe { &mut *arg.cast::<Shared<'_>>() };
        for signal in 1..NSIG {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            // SAFETY: sigaction is async-signal-safe; the zeroed structs are
            // valid (an empty mask, no flags, SIG_DFL). The C library refuses
            // the signals it keeps for itself, which is harmless here.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                    continue;
                }
                let handled =
                    old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
                if handled || signal == libc::SIGPIPE {
                    let default: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(signal, &default, std::ptr::null_mut());
                }
            }
        }
        // SAFETY: sets the mask prepared by the parent (the program's own,
        // as it would inherit from fork); async-signal-safe.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &shared.mask, std::ptr::null_mut()) };
        let error = child_exec(shared.data);
        let errno = error.raw_os_error().unwrap_or(libc::EINVAL);
        shared.errno.store(errno, Ordering::SeqCst);
        // SAFETY: _exit ends the child without running the master's atexit
        // handlers or flushing its buffers, which the child shares.
        unsafe { libc::_exit(127) }
    }

    let stack = ChildStack::new()?;
    let program_mask = PROGRAM_MASK.get().map(|set| *set.as_ref());
    // SAFETY: a zeroed sigset_t is a valid (empty) set; both are overwritten
    // below before they are read.
    let (mut own_mask, mask) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    let mut shared = Shared {
        data: &mut data,
        mask,
        errno: AtomicI32::new(0),
    };
    // SAFETY: pthread_sigmask with a filled set and a place for the old one;
    // clone gets a function that never returns into Rust frames of the
    // parent, its own stack, and a pointer to `shared`, which outlives the
    // call because CLONE_VFORK suspends this thread until the child has
    // exec'd or exited.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut own_mask);
        shared.mask = program_mask.unwrap_or(own_mask);
        let pid = libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut shared as *mut Shared<'_>).cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &own_mask, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    match shared.errno.load(Ordering::SeqCst) {
        0 => Ok(pid as u32),
        errno => {
            // The child has exited (127); reap it so it does not linger.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child's stack, mapped for one start with a guard page below it, and
/// unmapped after: the pages the child touched go back to the system rather
/// than staying in the master's heap.
struct ChildStack(*mut libc::c_void);

impl ChildStack {
    const GUARD: usize = 4096;

    fn new() -> io::Result<ChildStack> {
        // SAFETY: a fresh anonymous private mapping where the kernel chooses;
        // nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::GUARD + CHILD_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack(base);
        // SAFETY: the lowest page of the mapping just made; an overflow then
        // faults instead of writing below it.
        if unsafe { libc::mprotect(base, Self::GUARD, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// Where the stack starts: its top (page-aligned, so 16-byte aligned).
    fn top(&self) -> *mut libc::c_void {
        self.0.wrapping_byte_add(Self::GUARD + CHILD_STACK)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, whole, used by no one once the
        // child has exec'd or exited.
        unsafe { libc::munmap(self.0, Self::GUARD + CHILD_STACK) };
    }
}

/// Signal numbers are below this (Linux: 64 signals).
const NSIG: libc::c_int = 65;

/// Has the child `cmd` starts killed (SIGKILL) when the calling thread ends,
/// the master's death included (Linux's parent-death signal; elsewhere
/// nothing). For children that are not workers, started with
/// `std::process::Command` from a thread that lives as long as the master
/// (the sanity check, in a process group of its own that a kill of the
/// master's group does not reach).
pub(crate) fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe calls (prctl, getppid) with plain integers;
    // its errors are OS errors, which do not allocate.
    unsafe {
        cmd.pre_exec(move || child_dies_with_parent(parent));
    }
}

/// In a child about to exec: asks for SIGKILL when the thread that started
/// it ends, and fails (`ESRCH`) if `parent` is already gone. Only
/// async-signal-safe calls, and no allocation (no `io::Error::other`).
pub(super) fn child_dies_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and takes plain integers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // The master may have died between the start and prctl.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Keeps the master's heap small: its few threads share one malloc arena
/// (glibc otherwise gives each thread that allocates an arena of its own,
/// which keeps what it once held), and buffers of 128 KiB or more are mapped
/// and unmapped rather than kept in the heap (a fixed threshold: glibc would
/// raise it after the first large buffer is freed). Only the master calls
/// this; workers are new processes. Nothing happens with another C library,
/// and a custom global allocator is not affected.
pub(crate) fn tune_malloc_for_master() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is thread-safe and
    // takes effect for later allocations.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns memory that malloc holds but no longer uses to the system, after
/// work that allocated a lot and is done (a release downloaded and checked).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim walks the allocator's own free lists under its
    // locks and only gives pages back; it never touches memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Replaces this process's image by the executable open at `fd`.
pub(super) fn exec_fd(
    fd: std::os::fd::RawFd,
    argv: &[std::ffi::OsString],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
) -> io::Error {
    let result = super::exec_strings(argv, env)
        .and_then(|(argv, env)| nix::unistd::fexecve(fd, &argv, &env).map_err(io::Error::from));
    match result {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// The executable this process runs, through `/proc/self/exe`: the file
/// itself, even when its path was replaced or removed since.
pub(super) fn open_own_executable() -> io::Result<std::fs::File> {
    std::fs::File::open("/proc/self/exe")
}

/// Whether the calling thread is the process's main thread (the one whose
/// id is the pid): after an `execve`, the thread that called it is.
pub(crate) fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h: 51, as on MIPS;
/// SPARC numbers its options apart).
#[cfg(not(target_arch = "sparc64"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(target_arch = "sparc64")]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x0035;

/// Sends every new connection of `fd`'s `SO_REUSEPORT` group to the
/// group's socket number `index` (the order in which its sockets started
/// listening): a classic BPF program of one instruction, `ret #index`,
/// which needs no privilege. The program is the group's, whichever member
/// it is attached through, and replaces the previous one at once.
pub(crate) fn steer_group(fd: RawFd, index: u32) -> io::Result<()> {
    const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let mut program = [libc::sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: index,
    }];
    let fprog = libc::sock_fprog {
        len: 1,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, one valid instruction, both alive
    // for the call; the kernel copies the program before returning.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The connections waiting in listening TCP socket `fd`'s accept queue
/// (`TCP_INFO`'s `tcpi_unacked` on a listener), read through any copy of it.
pub(crate) fn accept_queue(fd: RawFd) -> io::Result<u32> {
    // SAFETY: `tcp_info` is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` are valid for writes of `len` bytes, and the
    // kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // TCP_LISTEN: the field counts queued connections only on a listener.
    if info.tcpi_state != 10 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a listening TCP socket",
        ));
    }
    Ok(info.tcpi_unacked)
}

/// How the threads of process group `pgid` have used the CPUs so far
/// (`/proc/PID/task/TID/schedstat` and `stat`), or `None` where the kernel
/// does not keep it. Reads `/proc` whole: for occasional use.
pub(crate) fn cpu_use(pgid: u32) -> Option<super::CpuUse> {
    let mut found: Option<super::CpuUse> = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != pgid && stat_field(&format!("/proc/{pid}/stat"), 2) != Some(pgid.to_string()) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Some((ran, waited)) = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| {
                    let mut fields = s.split_whitespace().map(|f| f.parse::<u64>().ok());
                    Some((fields.next()??, fields.next()??))
                })
            else {
                continue;
            };
            let runnable = stat_field(&task.path().join("stat").to_string_lossy(), 0)
                .is_some_and(|state| state == "R");
            let u = found.get_or_insert_with(super::CpuUse::default);
            u.ran = u.ran.max(std::time::Duration::from_nanos(ran));
            u.waited = u.waited.max(std::time::Duration::from_nanos(waited));
            u.runnable |= runnable;
        }
    }
    found
}

/// Field `n` after the command name of a `/proc/…/stat` file (0: the
/// state, 2: the process group); the name may hold spaces and parentheses.
fn stat_field(path: &str, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(path).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(n)?
            .to_string(),
    )
}
