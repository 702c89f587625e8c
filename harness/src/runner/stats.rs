//! Interval estimates over attempts: the 95% Wilson score interval of a pass rate.

/// A proportion with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// The interval of `f(p)` for a monotone increasing `f`.
    pub fn map(self, f: impl Fn(f64) -> f64) -> Interval {
        Interval {
            estimate: f(self.estimate),
            low: f(self.low),
            high: f(self.high),
        }
    }

    /// `0.967 (95% CI 0.833–0.994)`.
    pub fn show(self) -> String {
        format!(
            "{:.3} (95% CI {:.3}–{:.3})",
            self.estimate, self.low, self.high
        )
    }
}

/// The 95% Wilson score interval of `passes` successes in `attempts` trials. Unlike the normal
/// approximation it stays inside [0, 1] and is not degenerate at 0 or `attempts` passes: 30 of 30
/// gives 0.886–1, not 1–1. No attempts: the whole of [0, 1].
pub fn wilson(passes: usize, attempts: usize) -> Interval {
    if attempts == 0 {
        return Interval {
            estimate: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    const Z: f64 = 1.959_963_984_540_054; // the 97.5th percentile of the standard normal
    let n = attempts as f64;
    let p = passes as f64 / n;
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Interval {
        estimate: p,
        // Clamped to [0, 1] and around the estimate against rounding at 0 and `attempts` passes.
        low: (centre - half).clamp(0.0, p),
        high: (centre + half).clamp(p, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-4
    }

    #[test]
    fn known_values() {
        // Reference values from the closed form (e.g. statsmodels proportion_confint, "wilson").
        let i = wilson(30, 30);
        assert!(close(i.low, 0.8865) && close(i.high, 1.0), "{i:?}");
        let i = wilson(0, 10);
        assert!(close(i.low, 0.0) && close(i.high, 0.2775), "{i:?}");
        let i = wilson(5, 10);
        assert!(close(i.low, 0.2366) && close(i.high, 0.7634), "{i:?}");
        assert_eq!(wilson(0, 0).high, 1.0);
    }

    #[test]
    fn interval_holds_the_estimate() {
        for n in 1..40 {
            for x in 0..=n {
                let i = wilson(x, n);
                assert!(
                    i.low <= i.estimate && i.estimate <= i.high,
                    "{x}/{n}: {i:?}"
                );
                assert!(i.low >= 0.0 && i.high <= 1.0);
            }
        }
    }
}
