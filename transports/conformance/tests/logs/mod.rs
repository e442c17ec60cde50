//! What the transports' log tests share: capturing this thread's log lines, and the checks on
//! what a refusal logs.

use std::sync::{Arc, Mutex};

use tracing_subscriber::util::SubscriberInitExt;

/// The log lines written on this thread while the guard lives.
pub struct Captured {
    lines: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

/// Captures every event at every level on this thread (the runtime must be current-thread).
pub fn capture() -> Captured {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&lines);
    let guard = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_ansi(false)
        .with_writer(move || LogWriter(Arc::clone(&writer)))
        .set_default();
    Captured {
        lines,
        _guard: guard,
    }
}

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lines.lock().unwrap()).into_owned()
    }
}

/// Appends what it is given to a shared buffer.
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks `text`: a warning `unauthorized` with the peer for a wrong and for a missing token, a
/// warning `handshake` with the peer that names the missing certificate, and neither token
/// anywhere.
pub fn assert_refusals_logged(text: &str, unauthorized: &str, handshake: &str, tokens: [&str; 2]) {
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    for why in ["wrong token", "no token presented"] {
        assert!(
            warnings.iter().any(|line| line.contains(unauthorized)
                && line.contains(&format!("why=\"{why}\""))
                && line.contains("peer=127.0.0.1:")),
            "no warning says {why:?}: {warnings:#?}"
        );
    }
    assert!(
        warnings.iter().any(|line| line.contains(handshake)
            && line.contains("peer=127.0.0.1:")
            && line.to_lowercase().contains("certificate")),
        "no warning for the handshake without a client certificate: {warnings:#?}"
    );
    for token in tokens {
        assert!(!text.contains(token), "a token was logged: {token}");
    }
}
