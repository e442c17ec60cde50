//! `exec`: the application commands `ltxd mount` runs once the node is ready, as LiteFS does.
//!
//! All commands but the last run to completion, in order (migrations, for example); a failing one
//! stops the rest. The last runs for the daemon's lifetime: SIGINT and SIGTERM are forwarded to
//! it and the daemon shuts down once it has exited, and if it exits by itself, the daemon shuts
//! down and exits with its status. Commands inherit the daemon's environment and standard
//! streams; no shell is run.

use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use ltxd::config::{machine_hostname, process_env, Env, ExecConfig};

/// How often the runner looks at the node's readiness and at its running command.
const POLL: Duration = Duration::from_millis(20);

/// The command lines to run on this node, each split into words. Arguments given after `--`
/// replace the configuration's `exec`, as in LiteFS; entries marked `if-candidate` are dropped
/// on a node that is not a lease candidate.
pub fn command_lines(
    config: &[ExecConfig],
    args: &[String],
    candidate: bool,
) -> anyhow::Result<Vec<Vec<String>>> {
    if !args.is_empty() {
        return Ok(vec![args.to_vec()]);
    }
    config
        .iter()
        .filter(|exec| candidate || !exec.if_candidate)
        .map(|exec| {
            ltxd::config::split_command(&exec.cmd)
                .ok_or_else(|| anyhow::anyhow!("exec: cannot split {:?} into words", exec.cmd))
        })
        .collect()
}

/// What the runner thread shares with the daemon's main thread.
#[derive(Default)]
struct Shared {
    /// The command running now. It is only reaped under this lock, so a signal sent under it
    /// never reaches a recycled process ID.
    running: Mutex<Option<Child>>,
    /// Set once the daemon is shutting down: no further command starts.
    stopping: AtomicBool,
}

impl Shared {
    fn running(&self) -> MutexGuard<'_, Option<Child>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The thread that runs the `exec` commands.
pub struct Exec {
    shared: Arc<Shared>,
    thread: JoinHandle<Option<ExitStatus>>,
}

impl Exec {
    /// Starts a thread that waits until `ready()` is true, then runs `lines`. `finished` is
    /// called when the thread ends by itself: the last command exited, or a command failed or
    /// could not start.
    pub fn start(
        lines: Vec<Vec<String>>,
        ready: impl Fn() -> bool + Send + 'static,
        finished: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Exec> {
        let shared = Arc::new(Shared::default());
        let runner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("exec".into())
            .spawn(move || {
                let status = run(&runner, &lines, ready);
                if !runner.stopping.load(Ordering::SeqCst) {
                    finished();
                }
                status
            })?;
        Ok(Exec { shared, thread })
    }

    /// Starts no further command, and sends `signal` to the one running, if any.
    pub fn signal(&self, signal: i32) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(child) = self.shared.running().as_ref() {
            tracing::info!(pid = child.id(), signal, "exec: forwarding the signal");
            // SAFETY: the child has not been reaped (that happens under the same lock), so its
            // process ID is still its own.
            unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        }
    }

    /// Waits for the runner thread; the status of the command that ended it, if one ran.
    pub fn wait(self) -> Option<ExitStatus> {
        self.thread.join().unwrap_or_else(|_| {
            tracing::error!("exec: the runner thread panicked");
            None
        })
    }
}

/// The exit code that passes `status` on: its code, or 128 plus the signal that killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    u8::try_from(code).unwrap_or(1)
}

fn run(shared: &Shared, lines: &[Vec<String>], ready: impl Fn() -> bool) -> Option<ExitStatus> {
    while !ready() {
        if shared.stopping.load(Ordering::SeqCst) {
            return None;
        }
        std::thread::sleep(POLL);
    }
    let mut last = None;
    for (i, line) in lines.iter().enumerate() {
        let is_last = i + 1 == lines.len();
        let status = {
            let mut running = shared.running();
            if shared.stopping.load(Ordering::SeqCst) {
                return last;
            }
            let Some((program, args)) = line.split_first() else {
                continue;
            };
            match command(program, args, &process_env).spawn() {
                Ok(child) => {
                    tracing::info!(pid = child.id(), command = ?line, "exec: started");
                    *running = Some(child);
                }
                Err(err) => {
                    tracing::error!(command = ?line, %err, "exec: cannot start the command");
                    return Some(std::os::unix::process::ExitStatusExt::from_raw(127 << 8));
                }
            }
            drop(running);
            wait(shared)
        };
        if is_last {
            tracing::info!(%status, "exec: the application exited");
        } else if !status.success() {
            tracing::error!(command = ?line, %status, "exec: the command failed; the rest are not run");
            return Some(status);
        }
        last = Some(status);
    }
    last
}

/// The command line `program args`, with `HOSTNAME` set to the machine's hostname when `env`
/// has it unset or empty, as LiteFS sets it for the processes it starts.
fn command(program: &str, args: &[String], env: Env<'_>) -> Command {
    let mut command = Command::new(program);
    command.args(args);
    if env("HOSTNAME").is_none_or(|name| name.is_empty()) {
        if let Some(name) = machine_hostname() {
            command.env("HOSTNAME", name);
        }
    }
    command
}

/// Waits for the running command, reaping it under the lock.
fn wait(shared: &Shared) -> ExitStatus {
    loop {
        {
            let mut running = shared.running();
            let Some(child) = running.as_mut() else {
                return std::os::unix::process::ExitStatusExt::from_raw(0);
            };
            match child.try_wait() {
                Ok(Some(status)) => {
                    *running = None;
                    return status;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::error!(%err, "exec: cannot wait for the command");
                    *running = None;
                    return std::os::unix::process::ExitStatusExt::from_raw(1 << 8);
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cmds: &[&str]) -> Vec<Vec<String>> {
        cmds.iter()
            .map(|c| ltxd::config::split_command(c).unwrap())
            .collect()
    }

    #[test]
    fn arguments_replace_the_configuration_and_if_candidate_entries_run_on_candidates_only() {
        let mut migrate = ExecConfig::new("migrate --up 'two words'");
        migrate.if_candidate = true;
        let config = vec![migrate, ExecConfig::new("app")];
        assert_eq!(
            command_lines(&config, &[], true).unwrap(),
            lines(&["migrate --up 'two words'", "app"])
        );
        assert_eq!(command_lines(&config, &[], false).unwrap(), lines(&["app"]));
        let args = vec!["other".to_string(), "x y".to_string()];
        assert_eq!(command_lines(&config, &args, true).unwrap(), vec![args]);
    }

    #[test]
    fn commands_run_in_order_and_the_last_status_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("echo one >> {0}; echo two >> {0}", out.display());
        let exec = Exec::start(
            vec![
                vec![
                    "sh".into(),
                    "-c".into(),
                    format!("echo first > {}", out.display()),
                ],
                vec!["sh".into(), "-c".into(), format!("{script}; exit 3")],
            ],
            || true,
            || {},
        )
        .unwrap();
        let status = exec.wait().unwrap();
        assert_eq!(exit_code(status), 3);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "first\none\ntwo\n");
    }

    #[test]
    fn hostname_is_set_for_commands_only_when_unset() {
        let hostname = |command: &Command| {
            command
                .get_envs()
                .find(|(name, _)| *name == "HOSTNAME")
                .and_then(|(_, value)| value)
                .map(|value| value.to_string_lossy().into_owned())
        };
        let args = ["-c".to_string(), "true".to_string()];
        let unset = command("sh", &args, &|_| None);
        assert_eq!(hostname(&unset), machine_hostname());
        let empty = command("sh", &args, &|_| Some(String::new()));
        assert_eq!(hostname(&empty), machine_hostname());
        let set = command("sh", &args, &|_| Some("web-1".into()));
        assert_eq!(hostname(&set), None, "an inherited HOSTNAME is left alone");
    }

    #[test]
    fn a_failing_command_stops_the_rest() {
        let exec = Exec::start(lines(&["false", "sh -c 'exit 5'"]), || true, || {}).unwrap();
        assert_eq!(exit_code(exec.wait().unwrap()), 1);
    }

    #[test]
    fn a_missing_program_exits_127() {
        let exec = Exec::start(lines(&["/nonexistent/program"]), || true, || {}).unwrap();
        assert_eq!(exit_code(exec.wait().unwrap()), 127);
    }

    #[test]
    fn a_signal_reaches_the_running_command_and_nothing_starts_before_ready() {
        let exec = Exec::start(lines(&["sleep 30"]), || true, || {}).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while exec.shared.running().is_none() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(POLL);
        }
        exec.signal(libc::SIGTERM);
        assert_eq!(exit_code(exec.wait().unwrap()), 128 + libc::SIGTERM as u8);

        let never = Exec::start(lines(&["true"]), || false, || {}).unwrap();
        never.signal(libc::SIGTERM);
        assert!(never.wait().is_none());
    }
}
