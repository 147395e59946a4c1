//! The statistics of a benchmark's samples: sorted once, read by nearest rank.

use std::time::Duration;

/// Samples sorted from the smallest up; never empty.
#[derive(Debug, Clone)]
pub struct Sorted(Vec<f64>);

impl Sorted {
    /// `None` without samples.
    pub fn new(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        Some(Self(samples))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never: a `Sorted` has samples.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`-th percentile (`p` from 0 to 1) by nearest rank: the smallest sample that at
    /// least `p` of the samples do not exceed. The median of an even count is the lower middle.
    pub fn percentile(&self, p: f64) -> f64 {
        let rank = (p * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn min(&self) -> f64 {
        self.percentile(0.0)
    }

    pub fn max(&self) -> f64 {
        self.percentile(1.0)
    }

    pub fn mean(&self) -> f64 {
        self.0.iter().sum::<f64>() / self.0.len() as f64
    }
}

/// Whole milliseconds, for settings in a results file.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Sorted::new((1..=100).rev().map(f64::from).collect()).unwrap();
        assert_eq!(
            (s.percentile(0.5), s.percentile(0.9), s.percentile(0.99)),
            (50.0, 90.0, 99.0)
        );
        assert_eq!((s.min(), s.max(), s.mean()), (1.0, 100.0, 50.5));
        let one = Sorted::new(vec![7.0]).unwrap();
        assert_eq!((one.percentile(0.5), one.percentile(0.99)), (7.0, 7.0));
        let five = Sorted::new(vec![5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!(five.percentile(0.5), 3.0);
        assert!(Sorted::new(Vec::new()).is_none());
    }
}
