//! The one median every report uses, and the median-and-range of a metric
//! over repeats.

use serde::Serialize;

/// The median of `values` (the mean of the middle two for an even count),
/// None when there are none. NaNs sort last (`f64::total_cmp`).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Median and range of one metric over the repeats (NaN when empty).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(values: Vec<f64>) -> Stat {
        let min = values.iter().copied().min_by(f64::total_cmp);
        let max = values.iter().copied().max_by(f64::total_cmp);
        Stat {
            median: median(values).unwrap_or(f64::NAN),
            min: min.unwrap_or(f64::NAN),
            max: max.unwrap_or(f64::NAN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
        assert_eq!(Stat::of(vec![3.0, 1.0, 2.0]).median, 2.0);
        let s = Stat::of(vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(Stat::of(vec![]).median.is_nan());
    }
}
