//! `nfq-delay`: the delay stage of the simulated WAN.
//!
//! It binds one NFQUEUE queue, holds every packet the kernel queues there for a fixed delay and
//! then accepts it. Packets are held side by side in a FIFO queue ordered by release time, so any
//! number of them can be in flight at once and they leave in the order they arrived. Only the
//! packets' metadata is copied to user space: the program never reads a payload, so no packet can
//! make it fail.
//!
//! It prints `ready` on standard output once the queue is bound, exits cleanly on SIGTERM or
//! SIGINT (and, with `--watch-stdin`, when its standard input closes), and accepts every packet it
//! still holds before it exits.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use nfq::{Message, Queue, Verdict};

/// How many packets the kernel may hold for this program before it drops new ones. At 75 ms a
/// packet this allows over 800,000 packets a second.
const QUEUE_MAX_LEN: u32 = 65_536;

/// The receive buffer of the netlink socket, so that a burst of queued packets is not lost before
/// the program reads it.
const RECEIVE_BUFFER: libc::c_int = 8 << 20;

/// Consecutive failed reads after which the program gives up.
const MAX_FAILURES: u32 = 100;

/// Holds every packet of one NFQUEUE queue for a delay, in arrival order, then accepts it.
#[derive(Parser)]
#[command(name = "nfq-delay", version)]
struct Args {
    /// The queue to bind, as in `iptables -j NFQUEUE --queue-num N`.
    #[arg(long, default_value_t = 0)]
    queue: u16,
    /// How long each packet is held, in milliseconds.
    #[arg(long)]
    delay_ms: u64,
    /// A random extra delay, uniform in -J..=+J ms, for each packet. Packets still leave in the
    /// order they arrived, so a packet never leaves before the one ahead of it.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Exit when standard input reaches end of file. The WAN harness holds the other end of a
    /// pipe, so the stage ends with the process that started it, however that process ends.
    #[arg(long)]
    watch_stdin: bool,
    /// The name in log lines and in `ps` output (the harness passes the namespace's name).
    #[arg(long, default_value = "nfq-delay")]
    label: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(&args.label, format_args!("{e}"));
            ExitCode::FAILURE
        }
    }
}

/// `e` with what was being done when it happened.
fn context(e: io::Error, doing: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{doing}: {e}"))
}

/// Writes one line to standard error, ignoring failure: a closed stderr must not stop the stage.
fn log(label: &str, message: std::fmt::Arguments) {
    let _ = writeln!(io::stderr(), "nfq-delay[{label}]: {message}");
}

fn run(args: &Args) -> io::Result<()> {
    // The signal handlers write to this socket pair, which wakes the poll below.
    let (signals, signal_writer) = UnixStream::pair()?;
    signals.set_nonblocking(true)?;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        signal_hook::low_level::pipe::register(signal, signal_writer.try_clone()?)?;
    }

    let queue_num = args.queue;
    let mut queue = Queue::open().map_err(|e| context(e, "opening a netfilter socket"))?;
    queue.bind(queue_num).map_err(|e| {
        context(
            e,
            &format!("binding queue {queue_num} (is another program bound to it?)"),
        )
    })?;
    queue
        .set_copy_range(queue_num, 0)
        .and_then(|()| queue.set_recv_gso(queue_num, true))
        .and_then(|()| queue.set_queue_max_len(queue_num, QUEUE_MAX_LEN))
        .map_err(|e| context(e, &format!("configuring queue {queue_num}")))?;
    queue.set_nonblocking(true);
    let socket = netfilter_socket()?;
    if let Err(e) = set_socket_option(socket, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER) {
        log(
            &args.label,
            format_args!("cannot grow the receive buffer: {e}"),
        );
    }

    let mut stdout = io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;

    let mut stage = Stage {
        queue,
        held: VecDeque::new(),
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        rng: Rng::seeded(),
        last_release: None,
        failures: 0,
        label: &args.label,
    };
    loop {
        let timeout = stage.release_due();
        let mut fds = [
            poll_fd(socket),
            poll_fd(signals.as_raw_fd()),
            poll_fd(io::stdin().as_raw_fd()),
        ];
        let watched = if args.watch_stdin { 3 } else { 2 };
        wait(&mut fds[..watched], timeout)?;
        if fds[1].revents != 0 {
            break;
        }
        if args.watch_stdin && fds[2].revents != 0 && stdin_closed() {
            break;
        }
        if fds[0].revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(io::Error::other("the netlink socket failed"));
        }
        if fds[0].revents & libc::POLLIN != 0 {
            stage.receive()?;
        }
    }
    stage.release_all();
    Ok(())
}

/// The packets being held and the queue they came from.
struct Stage<'a> {
    queue: Queue,
    /// Packets in arrival order, each with its release time. Release times never decrease.
    held: VecDeque<(Instant, Message)>,
    delay: Duration,
    jitter: Duration,
    rng: Rng,
    /// The release time of the last packet received, which the next one may not precede.
    last_release: Option<Instant>,
    /// Reads that failed since the last one that succeeded.
    failures: u32,
    label: &'a str,
}

impl Stage<'_> {
    /// Reads every packet the kernel has queued and schedules its release.
    fn receive(&mut self) -> io::Result<()> {
        loop {
            match self.queue.recv() {
                Ok(message) => {
                    self.failures = 0;
                    let release = self.release_time(Instant::now());
                    self.held.push_back((release, message));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // The kernel reports a verdict it could not apply (for example on a packet
                    // that is gone) as an error on this socket; one such error is not fatal.
                    self.failures += 1;
                    if self.failures >= MAX_FAILURES {
                        return Err(e);
                    }
                    log(self.label, format_args!("receive: {e}"));
                    return Ok(());
                }
            }
        }
    }

    /// When a packet that arrives at `now` leaves: after the delay plus jitter, but never before
    /// the packet ahead of it.
    fn release_time(&mut self, now: Instant) -> Instant {
        let mut release = now + self.delay;
        if !self.jitter.is_zero() {
            let jitter = self.jitter.as_micros() as u64;
            let offset = self.rng.up_to(2 * jitter);
            release = if offset >= jitter {
                release + Duration::from_micros(offset - jitter)
            } else {
                release
                    .checked_sub(Duration::from_micros(jitter - offset))
                    .unwrap_or(now)
                    .max(now)
            };
        }
        if let Some(last) = self.last_release {
            release = release.max(last);
        }
        self.last_release = Some(release);
        release
    }

    /// Accepts every packet whose time has come. Returns how long until the next one is due, or
    /// `None` if no packet is held.
    fn release_due(&mut self) -> Option<Duration> {
        let now = Instant::now();
        while let Some(&(release, _)) = self.held.front() {
            if release > now {
                return Some(release - now);
            }
            if let Some((_, message)) = self.held.pop_front() {
                self.accept(message);
            }
        }
        None
    }

    /// Accepts every held packet at once, on the way out.
    fn release_all(&mut self) {
        while let Some((_, message)) = self.held.pop_front() {
            self.accept(message);
        }
    }

    fn accept(&mut self, mut message: Message) {
        message.set_verdict(Verdict::Accept);
        if let Err(e) = self.queue.verdict(message) {
            log(self.label, format_args!("verdict: {e}"));
        }
    }
}

/// Whether standard input, which poll reported ready, is at end of file (or failed).
fn stdin_closed() -> bool {
    let mut buf = [0u8; 256];
    !matches!(io::stdin().read(&mut buf), Ok(n) if n > 0)
}

fn poll_fd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Waits until one of `fds` is ready or `timeout` passes (`None`: no timeout). A signal ends the
/// wait early, which is not an error.
fn wait(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<()> {
    let timespec = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos().into(),
    });
    let timespec_ptr = timespec
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` points at `fds.len()` initialized pollfd structures that the call may write;
    // `timespec_ptr` is null or points at `timespec`, which outlives the call; a null signal mask
    // leaves the mask unchanged.
    let ready = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timespec_ptr,
            std::ptr::null(),
        )
    };
    if ready < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// The descriptor of the queue's netlink socket, which the program polls. nfq 0.2.5 does not
/// expose it (the crate's unreleased sources implement `AsFd`), so it is found among the
/// process's open descriptors: it is the only socket of protocol `NETLINK_NETFILTER`.
fn netfilter_socket() -> io::Result<RawFd> {
    let mut found = None;
    for entry in fs::read_dir("/proc/self/fd")? {
        let Ok(fd) = entry?.file_name().to_string_lossy().parse::<RawFd>() else {
            continue;
        };
        if socket_option(fd, libc::SO_DOMAIN) == Some(libc::AF_NETLINK)
            && socket_option(fd, libc::SO_PROTOCOL) == Some(libc::NETLINK_NETFILTER)
            && found.replace(fd).is_some()
        {
            return Err(io::Error::other("more than one netfilter socket is open"));
        }
    }
    found.ok_or_else(|| io::Error::other("the NFQUEUE socket is not among the open descriptors"))
}

/// An integer socket option of `fd`, or `None` if `fd` is not a socket.
fn socket_option(fd: RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` is the size of `value`. On a
    // descriptor that is not a socket (or not open) the call only fails.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

fn set_socket_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// xorshift64*, enough randomness for jitter.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// A number in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % (max.saturating_add(1)).max(1)
    }
}
