//! Time buckets for frequency series: their width and boundaries (local days and weeks that
//! start on Monday), and filling a series so every group has every bucket, zero where it had
//! no deployment (Grafana's time series want no gaps). Pure arithmetic on epoch milliseconds.

use std::collections::{BTreeMap, BTreeSet};

use super::DAY_MS;

/// Bucket widths: fixed milliseconds, weeks starting on Monday.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    Hour,
    Day,
    Week,
}

impl Width {
    /// The bucket length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => DAY_MS,
            Self::Week => 7 * DAY_MS,
        }
    }

    /// Where the bucket containing `t` starts, with local time at `offset` from UTC.
    pub fn floor(self, t: i64, offset: i64) -> i64 {
        let shift = self.shift(offset);
        (t + shift).div_euclid(self.millis()) * self.millis() - shift
    }

    /// The epoch began on a Thursday: weeks start three days later (Monday).
    pub fn shift(self, offset: i64) -> i64 {
        match self {
            Self::Week => offset + 3 * DAY_MS,
            _ => offset,
        }
    }
}

/// Counts per (bucket start, group), filled: every group seen has every bucket from `first`
/// to `to`, zero where it had none. `whole` names the one group of an ungrouped series, which
/// gets its buckets even when nothing was counted.
pub struct Series<G> {
    counts: BTreeMap<(i64, G), i64>,
    groups: BTreeSet<G>,
}

impl<G: Ord + Clone> Series<G> {
    /// The counted buckets, in any order.
    pub fn new(counted: impl IntoIterator<Item = ((i64, G), i64)>, whole: Option<G>) -> Self {
        let mut counts = BTreeMap::new();
        let mut groups = BTreeSet::new();
        for ((start, group), count) in counted {
            groups.insert(group.clone());
            counts.insert((start, group), count);
        }
        if groups.is_empty()
            && let Some(whole) = whole
        {
            groups.insert(whole);
        }
        Self { counts, groups }
    }

    /// How many groups the series has.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Every (bucket start, group, count), ascending by time, then by group.
    pub fn points(&self, first: i64, to: i64, width: Width) -> Vec<(i64, &G, i64)> {
        let buckets = ((to - first) / width.millis() + 1).max(0) as usize;
        let mut points = Vec::with_capacity(buckets * self.groups.len());
        let mut start = first;
        while start <= to {
            for group in &self.groups {
                let count = self.counts.get(&(start, group.clone())).copied().unwrap_or(0);
                points.push((start, group, count));
            }
            start += width.millis();
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday_and_days_at_local_midnight() {
        // 2026-11-26 is a Thursday; its week started on Monday 2026-11-23.
        let thursday = 1_795_700_000_000;
        let monday = Width::Week.floor(thursday, 0);
        assert_eq!(monday, 1_795_392_000_000);
        // UTC+2: a local day starts two hours before UTC midnight.
        let day = Width::Day.floor(thursday, 2 * 3_600_000);
        assert_eq!(day % DAY_MS, DAY_MS - 2 * 3_600_000);
    }

    #[test]
    fn every_group_gets_every_bucket_with_zeros_filled_in() {
        let series = Series::new([((0, "a"), 2), ((2 * DAY_MS, "b"), 1)], None);
        let points = series.points(0, 2 * DAY_MS, Width::Day);
        assert_eq!(points.len(), 6);
        assert_eq!(points[0], (0, &"a", 2));
        assert_eq!(points[1], (0, &"b", 0));
        assert_eq!(points[5], (2 * DAY_MS, &"b", 1));
    }

    #[test]
    fn an_ungrouped_series_has_its_buckets_even_when_empty() {
        let series: Series<()> = Series::new([], Some(()));
        assert_eq!(
            series.points(0, DAY_MS, Width::Day),
            vec![(0, &(), 0), (DAY_MS, &(), 0)]
        );
        let grouped: Series<&str> = Series::new([], None);
        assert!(grouped.points(0, DAY_MS, Width::Day).is_empty());
    }
}
