//! A simulated WAN for ltxd's replication tests and benchmarks.
//!
//! A [`Wan`] is two network namespaces, side A and side B, joined by a veth pair. Each side has
//! one interface, `wan0`, with address 10.77.0.1/24 (A) or 10.77.0.2/24 (B). Traffic between the
//! sides gets the delay and the loss of a [`Profile`]; loopback traffic inside a side gets none.
//!
//! The kernel here has no netem qdisc, so the link is built from netfilter instead. In each
//! namespace, the INPUT chain has two rules for packets that arrive on `wan0`:
//!
//! 1. `-m statistic --mode random --probability P -j DROP`, the loss. Dropping on arrival, rather
//!    than on the way out, makes the sender see a lost packet rather than a failed send.
//! 2. `-j NFQUEUE --queue-num 0 --queue-bypass`, the delay. An `nfq-delay` process in the
//!    namespace holds each queued packet for half the round-trip time, then accepts it. Should it
//!    die, `--queue-bypass` lets packets through undelayed instead of dropping them.
//!
//! Both directions are treated alike, so the round-trip time is the profile's and each packet is
//! lost with the profile's probability in each direction. The veths carry one MSS per packet
//! (`gso_max_segs 1`), so a packet on the link is a packet on a real wire and TCP sees a loss per
//! segment, not per 64 KiB burst.
//!
//! Processes enter a side's network namespace with `setns(2)` only, unlike `ip netns exec`, which
//! also gives them a private mount namespace. So a FUSE mount made by a process on one side is
//! visible to the test and to the other side.
//!
//! This file is also compiled into the root crate's tests with `#[path]`, so it uses only `std`
//! and `libc` and no `crate::` paths.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The prefix of every namespace's name. [`cleanup_stale`] removes `ltxd-<pid>-…` namespaces
/// whose process is gone.
pub const PREFIX: &str = "ltxd-";

/// The interface on each side.
const IFACE: &str = "wan0";

/// The NFQUEUE queue of the delay stage. Queues belong to a network namespace, so every side can
/// use the same number.
const QUEUE: &str = "0";

/// How long processes in a namespace get to exit after SIGTERM, and then after SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Gives each [`Wan`] of this process its own namespaces.
static NEXT_WAN: AtomicU32 = AtomicU32::new(0);

/// The link's behaviour between the two sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// No added delay or loss: a veth pair between namespaces.
    Lan,
    /// 50 ms round-trip time, 1% loss in each direction.
    Wan50,
    /// 150 ms round-trip time, 0.5% loss in each direction.
    Wan150,
}

impl Profile {
    /// Every profile, fastest first.
    pub const ALL: [Profile; 3] = [Profile::Lan, Profile::Wan50, Profile::Wan150];

    /// The name used by `scripts/wan`: `lan`, `wan50` or `wan150`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Wan50 => "wan50",
            Profile::Wan150 => "wan150",
        }
    }

    /// The round-trip time the link adds. Each direction gets half.
    pub fn rtt(self) -> Duration {
        match self {
            Profile::Lan => Duration::ZERO,
            Profile::Wan50 => Duration::from_millis(50),
            Profile::Wan150 => Duration::from_millis(150),
        }
    }

    /// The probability that a packet is lost, in each direction. A request and its reply are
    /// both lost with probability `1 - (1 - loss)²`.
    pub fn loss(self) -> f64 {
        match self {
            Profile::Lan => 0.0,
            Profile::Wan50 => 0.01,
            Profile::Wan150 => 0.005,
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Profile, String> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown profile {s:?}: expected lan, wan50 or wan150"))
    }
}

/// One end of the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Namespace `<name>-a`, address 10.77.0.1.
    A,
    /// Namespace `<name>-b`, address 10.77.0.2.
    B,
}

impl Side {
    /// Both sides.
    pub const BOTH: [Side; 2] = [Side::A, Side::B];

    /// The address of this side's interface. Every link uses the same two addresses: they exist
    /// only inside its own namespaces.
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Side::A => Ipv4Addr::new(10, 77, 0, 1),
            Side::B => Ipv4Addr::new(10, 77, 0, 2),
        }
    }

    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// The name of the namespace of `side` in the link called `name`: `<name>-a` or `<name>-b`.
pub fn netns_name(name: &str, side: Side) -> String {
    match side {
        Side::A => format!("{name}-a"),
        Side::B => format!("{name}-b"),
    }
}

/// A running simulated WAN, torn down on drop.
///
/// Dropping it ends the delay stages, kills every process still in either namespace (including
/// the ones started with [`Wan::spawn_in`] and their children), and deletes the namespaces, which
/// deletes the veth pair and the netfilter rules with them.
pub struct Wan {
    name: String,
    profile: Profile,
    /// Open handles on the namespaces, A then B, for `setns(2)`.
    netns: Vec<Arc<File>>,
    /// The delay stages (none for [`Profile::Lan`]), each with the pipe that keeps it running.
    stages: Vec<(Child, ChildStdin)>,
}

impl Wan {
    /// Builds the link with `profile`, in two new namespaces named `ltxd-<pid>-<n>-a` and `-b`.
    /// First it removes the namespaces of earlier runs that died (see [`cleanup_stale`]).
    ///
    /// Needs root, `ip` and `iptables`. For a delaying profile it also needs the `nfq-delay`
    /// binary: `$LTXD_NFQ_DELAY` if set, else the one in the same target directory as the running
    /// executable. When the running executable is a test built by cargo, it first builds
    /// `nfq-delay` there with `cargo build -p ltxd-wan`, so the binary is never stale.
    pub fn start(profile: Profile) -> io::Result<Wan> {
        let binary = if profile.rtt().is_zero() {
            None
        } else {
            Some(nfq_delay_binary()?)
        };
        // Housekeeping only: a failure here does not stop this link from being built.
        if let Err(e) = cleanup_stale() {
            eprintln!("wan: removing stale namespaces: {e}");
        }
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT_WAN.fetch_add(1, Ordering::Relaxed)
        );
        // From here on, an early return drops `wan`, which removes whatever was built.
        let mut wan = Wan {
            name,
            profile,
            netns: Vec::new(),
            stages: Vec::new(),
        };
        wan.netns = build_link(&wan.name, profile)?;
        if let Some(binary) = binary {
            for side in Side::BOTH {
                let mut child = start_stage(&binary, &wan.name, side, profile, Detach::No)?;
                let stdin = child.stdin.take().ok_or_else(|| {
                    io::Error::other("the delay stage's standard input is not a pipe")
                });
                match stdin {
                    Ok(stdin) => wan.stages.push((child, stdin)),
                    Err(e) => {
                        stop_child(child);
                        return Err(e);
                    }
                }
                add_queue_rule(&wan.name, side)?;
            }
        }
        Ok(wan)
    }

    /// The profile the link was built with.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The link's name; the namespaces are `<name>-a` and `<name>-b`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of `side`'s namespace, for `ip netns exec` and the like.
    pub fn netns(&self, side: Side) -> String {
        netns_name(&self.name, side)
    }

    /// A command that runs `program` in `side`'s network namespace.
    pub fn command(&self, side: Side, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        enter_on_exec(&self.netns[side.index()], &mut command);
        command
    }

    /// Starts `command` in `side`'s network namespace. The process, and any process it starts
    /// there, is killed when the `Wan` is dropped.
    pub fn spawn_in(&self, side: Side, mut command: Command) -> io::Result<Child> {
        enter_on_exec(&self.netns[side.index()], &mut command);
        command.spawn()
    }

    /// Runs `f` on a new thread in `side`'s network namespace and returns its result. Sockets
    /// that `f` creates stay in that namespace wherever they are used afterwards, so a test can
    /// make a listener on each side in-process. A panic in `f` is passed on.
    pub fn in_ns<T: Send>(&self, side: Side, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let netns = &self.netns[side.index()];
        thread::scope(|scope| {
            let handle = scope.spawn(|| {
                enter(netns)?;
                Ok(f())
            });
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        // Closing a stage's standard input makes it accept what it holds and exit.
        for (child, stdin) in self.stages.drain(..) {
            drop(stdin);
            stop_child(child);
        }
        if let Err(e) = teardown(&self.name) {
            eprintln!("wan: tearing down {}: {e}", self.name);
        }
    }
}

/// Builds the link `name` with `profile` for a script: namespaces `<name>-a` and `<name>-b`
/// with the same setup as [`Wan::start`], and delay stages that keep running, in their own
/// sessions, after this process exits. Their log is `<temp dir>/<namespace>.nfq-delay.log`.
/// [`down`] removes it all.
///
/// Fails, and changes nothing, if either namespace already exists.
pub fn up(name: &str, profile: Profile) -> io::Result<()> {
    let existing = list_netns()?;
    for side in Side::BOTH {
        let netns = netns_name(name, side);
        if existing.contains(&netns) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("namespace {netns} exists; run `wan down` first"),
            ));
        }
    }
    let binary = if profile.rtt().is_zero() {
        None
    } else {
        Some(nfq_delay_binary()?)
    };
    let built = build_link(name, profile).and_then(|_| {
        if let Some(binary) = &binary {
            for side in Side::BOTH {
                // The child is not waited for: it outlives this process.
                start_stage(binary, name, side, profile, Detach::Yes)?;
                add_queue_rule(name, side)?;
            }
        }
        Ok(())
    });
    if let Err(e) = built {
        let _ = teardown(name);
        return Err(e);
    }
    Ok(())
}

/// Removes the link `name` that [`up`] built: stops every process in its namespaces, deletes
/// them, and deletes the delay stages' logs. Removing a link that does not exist is not an error.
pub fn down(name: &str) -> io::Result<()> {
    teardown(name)?;
    for side in Side::BOTH {
        match std::fs::remove_file(stage_log(&netns_name(name, side))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Removes the namespaces that a crashed test left behind: those named `ltxd-<pid>-…` whose
/// process `<pid>` no longer runs. The processes in them are killed first. Returns their names.
///
/// Namespaces of running processes, and those of `scripts/wan` (whose names have no pid), are
/// left alone.
pub fn cleanup_stale() -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for netns in list_netns()? {
        let Some(pid) = owner_pid(&netns) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let result = stop_processes(&netns).and_then(|()| ip(&["netns", "del", &netns]));
        match result {
            Ok(()) => removed.push(netns),
            // Another process (or thread) cleaning up at the same time got there first.
            Err(_) if !list_netns()?.contains(&netns) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The pid in a namespace name `ltxd-<pid>-…`.
fn owner_pid(netns: &str) -> Option<u32> {
    let (pid, _) = netns.strip_prefix(PREFIX)?.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Creates both namespaces, the veth pair, the addresses and the loss rules, and returns handles
/// on the namespaces. On failure it removes what it made.
fn build_link(name: &str, profile: Profile) -> io::Result<Vec<Arc<File>>> {
    let result = build_link_steps(name, profile);
    if result.is_err() {
        let _ = teardown(name);
    }
    result
}

fn build_link_steps(name: &str, profile: Profile) -> io::Result<Vec<Arc<File>>> {
    let [a, b] = Side::BOTH.map(|side| netns_name(name, side));
    for netns in [&a, &b] {
        ip(&["netns", "add", netns])?;
    }
    ip(&[
        "link", "add", IFACE, "netns", &a, "type", "veth", "peer", "name", IFACE, "netns", &b,
    ])?;
    let mut handles = Vec::new();
    for side in Side::BOTH {
        let netns = netns_name(name, side);
        let addr = format!("{}/24", side.addr());
        ip(&["-n", &netns, "addr", "add", &addr, "dev", IFACE])?;
        ip(&["-n", &netns, "link", "set", IFACE, "gso_max_segs", "1"])?;
        ip(&["-n", &netns, "link", "set", IFACE, "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        let handle = Arc::new(File::open(netns_path(&netns))?);
        if profile.loss() > 0.0 {
            let probability = profile.loss().to_string();
            iptables(
                &handle,
                &[
                    "-A",
                    "INPUT",
                    "-i",
                    IFACE,
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &probability,
                    "-j",
                    "DROP",
                ],
            )?;
        }
        handles.push(handle);
    }
    Ok(handles)
}

/// Sends the packets that arrive on `side`'s interface to the delay stage. The rule comes after
/// the loss rule, so lost packets are never held.
fn add_queue_rule(name: &str, side: Side) -> io::Result<()> {
    let handle = Arc::new(File::open(netns_path(&netns_name(name, side)))?);
    iptables(
        &handle,
        &[
            "-A",
            "INPUT",
            "-i",
            IFACE,
            "-j",
            "NFQUEUE",
            "--queue-num",
            QUEUE,
            "--queue-bypass",
        ],
    )
}

/// Whether a delay stage ends with this process or outlives it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Detach {
    /// The stage watches a pipe from this process and exits when it closes.
    No,
    /// The stage runs in its own session and logs to a file.
    Yes,
}

/// Starts `nfq-delay` in `side`'s namespace and waits until it has bound the queue.
fn start_stage(
    binary: &Path,
    name: &str,
    side: Side,
    profile: Profile,
    detach: Detach,
) -> io::Result<Child> {
    let netns = netns_name(name, side);
    let handle = Arc::new(File::open(netns_path(&netns))?);
    let one_way = (profile.rtt() / 2).as_millis().to_string();
    let mut command = Command::new(binary);
    command
        .args(["--queue", QUEUE, "--delay-ms", &one_way, "--label", &netns])
        .stdout(Stdio::piped());
    match detach {
        Detach::No => {
            command.arg("--watch-stdin").stdin(Stdio::piped());
        }
        Detach::Yes => {
            command
                .stdin(Stdio::null())
                .stderr(File::create(stage_log(&netns))?);
            // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    enter_on_exec(&handle, &mut command);
    let mut child = command.spawn()?;
    let ready = child.stdout.take().map(|stdout| {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    match ready {
        Some(Ok(line)) if line.trim_end() == "ready" => Ok(child),
        other => {
            let detail = match other {
                Some(Err(e)) => e.to_string(),
                _ => "it exited before it was ready".to_string(),
            };
            let status = stop_child(child);
            Err(io::Error::other(format!(
                "nfq-delay in {netns} did not start ({detail}; {status})"
            )))
        }
    }
}

/// The log of a detached delay stage in `netns`.
fn stage_log(netns: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{netns}.nfq-delay.log"))
}

/// Stops a child: waits for it to exit, SIGTERM after a moment, SIGKILL after [`STOP_GRACE`].
/// Returns a description of how it ended.
fn stop_child(mut child: Child) -> String {
    let start = Instant::now();
    let mut signalled = false;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => {}
            Err(e) => return e.to_string(),
        }
        let waited = start.elapsed();
        if waited > STOP_GRACE {
            let _ = child.kill();
            return match child.wait() {
                Ok(status) => format!("killed: {status}"),
                Err(e) => e.to_string(),
            };
        }
        if !signalled && waited > Duration::from_millis(200) {
            signal(child.id(), libc::SIGTERM);
            signalled = true;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Stops every process in both namespaces of `name`, then deletes the namespaces.
fn teardown(name: &str) -> io::Result<()> {
    let existing = list_netns()?;
    let mut first_error = None;
    for side in Side::BOTH {
        let netns = netns_name(name, side);
        if !existing.contains(&netns) {
            continue;
        }
        let result = stop_processes(&netns).and_then(|()| ip(&["netns", "del", &netns]));
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Sends SIGTERM to every process in `netns`, and SIGKILL to those still there after
/// [`STOP_GRACE`]. Zombies are not in the list, so a killed child of this process counts as gone
/// even before it is waited for.
fn stop_processes(netns: &str) -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let pids = netns_pids(netns)?;
        if pids.is_empty() {
            return Ok(());
        }
        for &pid in &pids {
            signal(pid, sig);
        }
        let start = Instant::now();
        while start.elapsed() < STOP_GRACE {
            if netns_pids(netns)?.is_empty() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    Err(io::Error::other(format!(
        "processes in {netns} survived SIGKILL: {:?}",
        netns_pids(netns)?
    )))
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) has no memory-safety requirements.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The pids of the processes in `netns`.
fn netns_pids(netns: &str) -> io::Result<Vec<u32>> {
    let out = ip_output(&["netns", "pids", netns])?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// The names of all named network namespaces.
fn list_netns() -> io::Result<Vec<String>> {
    let out = ip_output(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Where `ip netns add` puts the namespace's handle.
fn netns_path(netns: &str) -> PathBuf {
    Path::new("/run/netns").join(netns)
}

/// Moves the calling thread into the network namespace `netns`.
fn enter(netns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on an open namespace descriptor; it touches no memory.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `command`'s process enter the network namespace `netns` before it executes.
fn enter_on_exec(netns: &Arc<File>, command: &mut Command) {
    let netns = Arc::clone(netns);
    // SAFETY: the hook runs in the child between fork and exec and calls only setns(2), which is
    // async-signal-safe, on a descriptor the parent keeps open; building the error on failure
    // does not allocate.
    unsafe {
        command.pre_exec(move || enter(&netns));
    }
}

fn iptables(netns: &Arc<File>, args: &[&str]) -> io::Result<()> {
    let mut command = Command::new("iptables");
    command.arg("-w").args(args);
    enter_on_exec(netns, &mut command);
    run(command).map(|_| ())
}

fn ip(args: &[&str]) -> io::Result<()> {
    ip_output(args).map(|_| ())
}

fn ip_output(args: &[&str]) -> io::Result<String> {
    let mut command = Command::new("ip");
    command.args(args);
    run(command)
}

/// Runs `command` to completion and returns its standard output. A failure names the command
/// and carries its standard error.
fn run(mut command: Command) -> io::Result<String> {
    let described = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{described}: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{described}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `nfq-delay` binary; see [`Wan::start`].
fn nfq_delay_binary() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LTXD_NFQ_DELAY") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("the running executable has no directory"))?;
    // Cargo puts tests in target/<profile>/deps and binaries in target/<profile>.
    if dir.file_name() == Some(OsStr::new("deps")) {
        dir = dir.parent().unwrap_or(dir);
        build_nfq_delay(dir)?;
    }
    let binary = dir.join("nfq-delay");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} does not exist: build it with `cargo build -p ltxd-wan`, or set LTXD_NFQ_DELAY",
                binary.display()
            ),
        ))
    }
}

/// Builds `nfq-delay` into the target directory `dir` (`target/debug`, `target/release`, …) with
/// the cargo that runs this test, once per process. Does nothing outside `cargo test`.
fn build_nfq_delay(dir: &Path) -> io::Result<()> {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let mut built = BUILT.lock().unwrap_or_else(|poison| poison.into_inner());
    if *built {
        return Ok(());
    }
    let mut command = Command::new(cargo);
    command.args(["build", "--quiet", "-p", "ltxd-wan", "--bin", "nfq-delay"]);
    match dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some(profile) => {
            command.args(["--profile", profile]);
        }
    }
    run(command)?;
    *built = true;
    Ok(())
}
