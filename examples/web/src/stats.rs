//! The page's statistics, in f64 and free of the GPU: `softmax`, a histogram, and Pearson's
//! chi-square test of counts against a law (with the p-value), so the page can say, for every
//! redraw, whether the draws agree with the law it shows. Unit-tested natively
//! (`cargo test` in examples/web).

/// `softmax(logits)` in f64.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&l| (l - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.iter().map(|&x| x / z).collect()
}

/// The counts of `values` in `0..bins`; values out of range are ignored (the caller counts them).
pub fn histogram(values: impl IntoIterator<Item = u32>, bins: usize) -> Vec<u32> {
    let mut counts = vec![0u32; bins];
    for v in values {
        if let Some(c) = counts.get_mut(v as usize) {
            *c += 1;
        }
    }
    counts
}

/// Pearson's chi-square test of `counts` against the law `law` (probabilities summing to 1).
#[derive(Clone, Debug, PartialEq)]
pub struct ChiSquare {
    /// The statistic, summed over the bins.
    pub statistic: f64,
    /// Bins - 1; 0 when the law has one bin only (then there is nothing to test).
    pub dof: usize,
    /// P(X >= statistic) for X chi-square with `dof` degrees of freedom (1 for `dof` 0).
    pub p_value: f64,
    /// Draws that landed where the law is 0: impossible, so any is a failure whatever `p_value`.
    pub impossible: u64,
    /// How many bins the test used after pooling.
    pub bins: usize,
}

/// Bins whose expected count is below this are pooled (the chi-square approximation needs
/// expected counts of about 5 and more).
pub const MIN_EXPECTED: f64 = 5.0;

/// Pearson's test of `counts` against `law`. Categories of positive law whose expected count is
/// below [`MIN_EXPECTED`] are pooled into one bin (merged into the smallest other bin if the pool
/// itself stays below it); counts where the law is 0 are reported as `impossible`.
pub fn chi_square(counts: &[u32], law: &[f64]) -> ChiSquare {
    assert_eq!(counts.len(), law.len(), "one count per category");
    let n: f64 = counts.iter().map(|&c| f64::from(c)).sum();
    let mut impossible = 0u64;
    // (observed, expected) per bin.
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let mut pool = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(law) {
        if p <= 0.0 {
            impossible += u64::from(c);
            continue;
        }
        let e = n * p;
        if e < MIN_EXPECTED {
            pool.0 += f64::from(c);
            pool.1 += e;
        } else {
            bins.push((f64::from(c), e));
        }
    }
    if pool.1 > 0.0 {
        if pool.1 >= MIN_EXPECTED || bins.is_empty() {
            bins.push(pool);
        } else {
            let smallest = (0..bins.len())
                .min_by(|&a, &b| bins[a].1.total_cmp(&bins[b].1))
                .expect("not empty");
            bins[smallest].0 += pool.0;
            bins[smallest].1 += pool.1;
        }
    }
    let statistic: f64 = bins.iter().map(|&(o, e)| (o - e) * (o - e) / e).sum();
    let dof = bins.len().saturating_sub(1);
    let p_value = if dof == 0 {
        1.0
    } else {
        chi_square_sf(statistic, dof as f64)
    };
    ChiSquare {
        statistic,
        dof,
        p_value,
        impossible,
        bins: bins.len(),
    }
}

/// `P(X >= x)` for `X` chi-square with `dof` degrees of freedom: the regularized upper
/// incomplete gamma function `Q(dof / 2, x / 2)`.
pub fn chi_square_sf(x: f64, dof: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(dof / 2.0, x / 2.0)
}

/// `Q(a, x) = Gamma(a, x) / Gamma(a)`: the series of `P` below `x < a + 1`, Lentz's continued
/// fraction of `Q` above (the textbook split, where each converges fast).
fn gamma_q(a: f64, x: f64) -> f64 {
    const EPS: f64 = 1e-15;
    let log_prefactor = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * EPS {
                break;
            }
        }
        (1.0 - sum * log_prefactor.exp()).max(0.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -f64::from(i) * (f64::from(i) - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let step = d * c;
            h *= step;
            if (step - 1.0).abs() < EPS {
                break;
            }
        }
        (log_prefactor.exp() * h).min(1.0)
    }
}

/// `ln Gamma(a)` for `a > 0` (Lanczos, g = 7, 9 terms: about 15 digits).
fn ln_gamma(a: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if a < 0.5 {
        // Reflection: Gamma(a) Gamma(1 - a) = pi / sin(pi a).
        return (std::f64::consts::PI / (std::f64::consts::PI * a).sin()).ln() - ln_gamma(1.0 - a);
    }
    let a = a - 1.0;
    let t = a + 7.5;
    let mut s = G[0];
    for (i, &g) in G.iter().enumerate().skip(1) {
        s += g / (a + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (a + 0.5) * t.ln() - t + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn ln_gamma_matches_factorials_and_half_integers() {
        let mut f = 1.0f64;
        for n in 1..30 {
            // Gamma(n) = (n - 1)!
            assert!(
                (ln_gamma(f64::from(n)) - f.ln()).abs() < 1e-12 * f.ln().max(1.0),
                "n = {n}"
            );
            f *= f64::from(n);
        }
        // Gamma(1/2) = sqrt(pi).
        let sqrt_pi = std::f64::consts::PI.sqrt();
        assert!(close(ln_gamma(0.5), sqrt_pi.ln(), 1e-13));
        // Gamma(7/2) = 15 sqrt(pi) / 8.
        assert!(close(ln_gamma(3.5), (15.0 * sqrt_pi / 8.0).ln(), 1e-13));
    }

    #[test]
    fn survival_function_equals_closed_forms_for_even_dof() {
        // Q(1, y) = e^-y, Q(2, y) = e^-y (1 + y), Q(3, y) = e^-y (1 + y + y^2 / 2).
        for x in [0.01, 0.5, 1.0, 2.0, 3.9, 4.1, 7.0, 20.0, 80.0] {
            let y = x / 2.0;
            assert!(
                close(chi_square_sf(x, 2.0), (-y).exp(), 1e-12),
                "dof 2, x {x}"
            );
            assert!(
                close(chi_square_sf(x, 4.0), (-y).exp() * (1.0 + y), 1e-12),
                "dof 4, x {x}"
            );
            assert!(
                close(
                    chi_square_sf(x, 6.0),
                    (-y).exp() * (1.0 + y + y * y / 2.0),
                    1e-12
                ),
                "dof 6, x {x}"
            );
        }
    }

    #[test]
    fn survival_function_at_tabulated_quantiles() {
        // 95% and 99.9% quantiles of chi-square (standard tables, 5-6 digits).
        for (dof, x95, x999) in [
            (1.0, 3.841_459, 10.827_566),
            (3.0, 7.814_728, 16.266_236),
            (10.0, 18.307_038, 29.588_298),
            (63.0, 82.528_727, 103.442_358),
        ] {
            assert!(close(chi_square_sf(x95, dof), 0.05, 1e-5), "dof {dof}");
            assert!(close(chi_square_sf(x999, dof), 0.001, 1e-4), "dof {dof}");
        }
        assert_eq!(chi_square_sf(0.0, 5.0), 1.0);
    }

    #[test]
    fn chi_square_pools_small_bins_and_counts_impossible_draws() {
        let law = [0.5, 0.3, 0.19, 0.006, 0.004, 0.0];
        let counts = [520, 290, 180, 7, 2, 1];
        let t = chi_square(&counts, &law);
        // 1000 draws: the 0.004 bin (4 expected) is pooled, and the pool, below 5, joins the
        // smallest bin, the 0.006 one (6 expected).
        assert_eq!((t.bins, t.dof, t.impossible), (4, 3, 1));
        // n counts every draw, the impossible one too: 520 + 290 + 180 + 7 + 2 + 1.
        let n = 1000.0;
        let want: f64 = [(520.0, 0.5), (290.0, 0.3), (180.0, 0.19), (9.0, 0.01)]
            .iter()
            .map(|&(o, p)| (o - n * p) * (o - n * p) / (n * p))
            .sum();
        assert!(close(t.statistic, want, 1e-12));
        assert!(close(t.p_value, chi_square_sf(want, 3.0), 1e-12));
        // A pool below 5 expected joins the smallest bin.
        let t = chi_square(&[60, 38, 2], &[0.6, 0.38, 0.02]);
        assert_eq!((t.bins, t.dof), (2, 1));
        // One bin: nothing to test.
        let t = chi_square(&[10, 0], &[1.0, 0.0]);
        assert_eq!((t.dof, t.p_value, t.impossible), (0, 1.0, 0));
    }

    #[test]
    fn exact_counts_pass_and_skewed_counts_fail() {
        let law = softmax(&[0.0, -0.5, -1.0, -2.0]);
        let exact: Vec<u32> = law.iter().map(|p| (p * 10_000.0).round() as u32).collect();
        assert!(chi_square(&exact, &law).p_value > 0.99);
        let mut skewed = exact.clone();
        skewed[0] += 300;
        skewed[1] -= 300;
        assert!(chi_square(&skewed, &law).p_value < 1e-6);
    }

    #[test]
    fn softmax_and_histogram() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!(close(p.iter().sum(), 1.0, 1e-15));
        assert!(close(p[2] / p[1], 1f64.exp(), 1e-14));
        assert_eq!(histogram([0, 2, 2, 7], 3), vec![1, 0, 2]);
    }
}
