//! Exponential backoff for retrying a failed lease watch, as a plain state machine.

use std::time::Duration;

/// The delay before the next attempt: `first`, doubled after every failure up to `max`, and
/// back to `first` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `first` and never above `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// An attempt failed: how long to wait before the next one.
    pub fn failed(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// An attempt succeeded: the next failure waits `first` again.
    pub fn succeeded(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    #[test]
    fn doubles_up_to_the_limit_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(500), ms(3000));
        let delays: Vec<_> = (0..5).map(|_| backoff.failed()).collect();
        assert_eq!(delays, [ms(500), ms(1000), ms(2000), ms(3000), ms(3000)]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), ms(500));
    }

    #[test]
    fn a_minute_of_failures_takes_few_attempts() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let (mut elapsed, mut attempts) = (Duration::ZERO, 0);
        while elapsed < Duration::from_secs(60) {
            elapsed += backoff.failed();
            attempts += 1;
        }
        assert!(attempts <= 9, "{attempts} attempts in a minute");
    }
}
