//! Calibration checks of the WAN harness (`tools/wan`): the round-trip time and the loss of each
//! profile, measured with UDP echo probes from side A to side B, and the cleanup afterwards.
//!
//! These check that the harness builds the link it promises; they are not performance tests.
//! Every bound is wide (see `check_profile`), and the only tight one is a lower bound on the
//! round-trip time, which a slow or loaded machine cannot break: a packet is never released
//! early. The tests need root, `ip` and `iptables`; without them each one says why and passes.

#[path = "../tools/wan/src/lib.rs"]
mod wan;

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use wan::{Profile, Side, Wan};

/// Probes per profile, sent one every `INTERVAL`: 2 s of sending. At 1% loss each way, about 40
/// of them are lost; at 0.5%, about 20.
const PROBES: usize = 2000;
const INTERVAL: Duration = Duration::from_millis(1);

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid(2) has no requirements.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the WAN harness needs root".to_string());
    }
    for (tool, arg) in [("ip", "-V"), ("iptables", "--version")] {
        if Command::new(tool).arg(arg).output().is_err() {
            return Some(format!("the WAN harness needs `{tool}`"));
        }
    }
    None
}

macro_rules! skip_unless_able {
    () => {
        if let Some(reason) = skip_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

/// What the probes saw.
struct Probed {
    /// The round-trip times of the probes that came back, sorted.
    rtts: Vec<Duration>,
    lost: usize,
}

impl Probed {
    fn quantile(&self, q: f64) -> Duration {
        let i = ((self.rtts.len() as f64 - 1.0) * q).round() as usize;
        self.rtts[i]
    }
}

/// Sends `PROBES` UDP probes from side A to an echo server on side B, at a steady pace, and
/// collects the round-trip time of each reply. A probe whose reply has not come a second (plus
/// two round trips) after the last one was sent counts as lost.
fn probe(wan: &Wan) -> Probed {
    let server = wan
        .in_ns(Side::B, || UdpSocket::bind((Side::B.addr(), 0)))
        .unwrap()
        .unwrap();
    let client = wan
        .in_ns(Side::A, || UdpSocket::bind((Side::A.addr(), 0)))
        .unwrap()
        .unwrap();
    client.connect(server.local_addr().unwrap()).unwrap();
    for socket in [&server, &client] {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
    }
    let start = Instant::now();
    let deadline =
        start + INTERVAL * PROBES as u32 + 2 * wan.profile().rtt() + Duration::from_secs(1);
    let stop = AtomicBool::new(false);

    let rtts = thread::scope(|scope| {
        scope.spawn(|| {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = server.recv_from(&mut buf) {
                    let _ = server.send_to(&buf[..n], from);
                }
            }
        });
        let receiver = scope.spawn(|| {
            let mut rtts = vec![None; PROBES];
            let mut received = 0;
            let mut buf = [0u8; 64];
            while received < PROBES && Instant::now() < deadline {
                let Ok(12) = client.recv(&mut buf) else {
                    continue;
                };
                let seq = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
                let sent = Duration::from_nanos(u64::from_le_bytes(buf[4..12].try_into().unwrap()));
                if rtts[seq].is_none() {
                    rtts[seq] = Some(start.elapsed() - sent);
                    received += 1;
                }
            }
            rtts
        });
        for seq in 0..PROBES {
            let due = start + INTERVAL * seq as u32;
            thread::sleep(due.saturating_duration_since(Instant::now()));
            let mut payload = [0u8; 12];
            payload[..4].copy_from_slice(&(seq as u32).to_le_bytes());
            payload[4..].copy_from_slice(&(start.elapsed().as_nanos() as u64).to_le_bytes());
            client.send(&payload).unwrap();
        }
        let rtts = receiver.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        rtts
    });
    let mut rtts: Vec<Duration> = rtts.into_iter().flatten().collect();
    rtts.sort();
    Probed {
        lost: PROBES - rtts.len(),
        rtts,
    }
}

/// Namespaces whose names start with `name`, and live processes whose command line mentions it
/// (the delay stages carry their namespace's name in `--label`).
fn leftovers(name: &str) -> (Vec<String>, Vec<String>) {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let namespaces = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(name))
        .map(str::to_string)
        .collect();
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(name) {
            processes.push(cmdline);
        }
    }
    (namespaces, processes)
}

/// Builds a link with `profile`, probes it, checks the numbers, then drops it and checks that
/// nothing is left.
///
/// The bounds, for N = 2000 probes:
/// - every round trip takes at least the profile's RTT (the stages never release a packet early);
/// - the median is between 0.9 and 1.4 times the RTT (LAN: below 10 ms);
/// - p99 is below twice the RTT plus 200 ms, which only a stuck stage would exceed;
/// - a probe is lost with q = 1 - (1 - loss)² (a probe and its reply each cross the link once),
///   and the number lost is between q·N/4 and 3·q·N. For Wan150, q·N ≈ 20, and the chance of
///   fewer than 5 is about 2·10⁻⁵; for Wan50, q·N ≈ 40. On the LAN, at most 1% may be lost.
fn check_profile(profile: Profile) {
    let wan = Wan::start(profile).unwrap();
    let name = wan.name().to_string();
    let stages = if profile.rtt().is_zero() { 0 } else { 2 };
    assert_eq!(leftovers(&name).1.len(), stages, "delay stages of {name}");

    let probed = probe(&wan);
    let (min, median, p99) = (probed.rtts[0], probed.quantile(0.5), probed.quantile(0.99));
    let loss = probed.lost as f64 / PROBES as f64;
    eprintln!(
        "{profile}: {} probes, RTT min {min:.2?} median {median:.2?} p99 {p99:.2?} max {:.2?}, \
         lost {} ({:.2}%)",
        PROBES,
        probed.rtts[probed.rtts.len() - 1],
        probed.lost,
        loss * 100.0
    );

    let rtt = profile.rtt();
    if rtt.is_zero() {
        assert!(
            median < Duration::from_millis(10),
            "{profile}: median {median:?}"
        );
        assert!(
            probed.lost <= PROBES / 100,
            "{profile}: lost {}",
            probed.lost
        );
    } else {
        assert!(min >= rtt, "{profile}: a probe came back in {min:?}");
        assert!(
            median >= rtt.mul_f64(0.9) && median <= rtt.mul_f64(1.4),
            "{profile}: median {median:?}"
        );
        assert!(
            p99 < 2 * rtt + Duration::from_millis(200),
            "{profile}: p99 {p99:?}"
        );
        let q = 1.0 - (1.0 - profile.loss()).powi(2);
        let expected = q * PROBES as f64;
        let lost = probed.lost as f64;
        assert!(
            lost >= expected / 4.0 && lost <= expected * 3.0,
            "{profile}: lost {lost} of {PROBES}, expected about {expected:.0}"
        );
    }

    drop(wan);
    assert_eq!(leftovers(&name), (vec![], vec![]), "left behind by {name}");
}

#[test]
fn lan_profile_adds_no_delay_or_loss() {
    skip_unless_able!();
    check_profile(Profile::Lan);
}

#[test]
fn wan50_profile_has_50ms_rtt_and_1pct_loss() {
    skip_unless_able!();
    check_profile(Profile::Wan50);
}

#[test]
fn wan150_profile_has_150ms_rtt_and_half_pct_loss() {
    skip_unless_able!();
    check_profile(Profile::Wan150);
}

/// Commands run in a side's namespace see its interface, and whatever runs there is killed when
/// the link is dropped.
#[test]
fn commands_run_in_a_side_and_die_with_the_link() {
    skip_unless_able!();
    let wan = Wan::start(Profile::Lan).unwrap();
    for side in Side::BOTH {
        let out = wan
            .command(side, "ip")
            .args(["-o", "-4", "addr", "show", "dev", "wan0"])
            .output()
            .unwrap();
        let addrs = String::from_utf8_lossy(&out.stdout);
        assert!(
            addrs.contains(&format!("{}/24", side.addr())),
            "{}: {addrs}",
            wan.netns(side)
        );
    }
    let mut sleeper = Command::new("sleep");
    sleeper.arg("600");
    let mut child = wan.spawn_in(Side::B, sleeper).unwrap();
    assert!(child.try_wait().unwrap().is_none());

    drop(wan);
    let status = child.wait().unwrap();
    assert!(!status.success(), "sleep was not killed: {status}");
}

/// The path `scripts/wan` takes: `up` leaves the link running with detached delay stages, refuses
/// to build over an existing link, and `down` removes everything.
#[test]
fn up_and_down_leave_nothing_behind() {
    skip_unless_able!();
    let name = format!("{}{}-script", wan::PREFIX, std::process::id());
    wan::up(&name, Profile::Wan150).unwrap();
    let (namespaces, processes) = leftovers(&name);
    assert_eq!(namespaces.len(), 2, "namespaces of {name}: {namespaces:?}");
    assert_eq!(processes.len(), 2, "delay stages of {name}: {processes:?}");

    let again = wan::up(&name, Profile::Lan).unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(
        leftovers(&name).0.len(),
        2,
        "a refused `up` removed the link"
    );

    wan::down(&name).unwrap();
    assert_eq!(leftovers(&name), (vec![], vec![]), "left behind by {name}");
    wan::down(&name).unwrap();
}

/// Namespaces of a process that is gone are removed; the check runs in every `Wan::start` too.
#[test]
fn stale_namespaces_are_removed() {
    skip_unless_able!();
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = wan::netns_name(&format!("{}{pid}-0", wan::PREFIX), Side::A);
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success());

    wan::cleanup_stale().unwrap();
    // Another test's `Wan::start` may have removed it first; either way it is gone.
    assert_eq!(leftovers(&stale).0, Vec::<String>::new());
}
