//! Jittered exponential backoff, so that a fleet of workers does not retry in lockstep.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The next delay: the current step with "equal jitter" (half fixed, half random), then the
    /// step doubles up to the cap.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// The delay before the `attempt`-th retry (1-based): `base · 2^(attempt−1)`, capped at `max`.
pub(crate) fn exponential(base: Duration, attempt: u32, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_within_their_step_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let steps = [100, 200, 400, 400];
        for step in steps {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(step / 2) && d <= Duration::from_millis(step),
                "{d:?} for step {step}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(exponential(s(10), 1, s(60)), s(10));
        assert_eq!(exponential(s(10), 2, s(60)), s(20));
        assert_eq!(exponential(s(10), 3, s(60)), s(40));
        assert_eq!(exponential(s(10), 4, s(60)), s(60));
        assert_eq!(exponential(s(10), 400, s(60)), s(60));
    }
}
