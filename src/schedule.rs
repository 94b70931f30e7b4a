//! Temperature annealing for Gumbel-Softmax training (Jang, Gu & Poole 2017, section 4):
//! `tau(t) = max(tau_min, tau_0 * exp(-r * t))`, updated every `every` steps.

use crate::Error;

/// The temperature of a forward or backward pass: one for every row, or one per row (`T` is a
/// `&[f32]` in the slice API and a `&wgpu::Buffer` of `rows` f32 at the buffer level).
#[derive(Clone, Copy, Debug)]
pub enum Temperature<T> {
    /// The same tau for every row.
    Scalar(f32),
    /// `tau[r]` for row `r`.
    PerRow(T),
}

impl<T: Copy> Temperature<T> {
    /// The per-row temperatures, if any.
    pub fn per_row(&self) -> Option<T> {
        match *self {
            Temperature::Scalar(_) => None,
            Temperature::PerRow(t) => Some(t),
        }
    }
}

/// An exponential temperature schedule `tau(step) = max(tau_min, tau_0 * exp(-rate * s))`, with
/// `s = step` rounded down to a multiple of `every` (the paper updates tau every N steps,
/// N in {500, 1000}, with r in {1e-5, 1e-4}, tau_0 = 1, tau_min = 0.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TemperatureSchedule {
    tau0: f64,
    tau_min: f64,
    rate: f64,
    every: u64,
}

impl TemperatureSchedule {
    /// A schedule; `tau0` and `tau_min` must be finite and > 0, `rate` finite and >= 0,
    /// `every` >= 1.
    pub fn new(tau0: f64, tau_min: f64, rate: f64, every: u64) -> Result<Self, Error> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(tau0) || !positive(tau_min) {
            return Err(Error::InvalidArgument(format!(
                "temperatures tau0 = {tau0} and tau_min = {tau_min} must be finite and > 0"
            )));
        }
        if !(rate.is_finite() && rate >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "annealing rate {rate} must be finite and >= 0"
            )));
        }
        if every == 0 {
            return Err(Error::InvalidArgument(
                "the update interval must be at least 1 step".into(),
            ));
        }
        Ok(TemperatureSchedule {
            tau0,
            tau_min,
            rate,
            every,
        })
    }

    /// The paper's schedule: `tau = max(0.5, exp(-rate * t))`, updated every `every` steps.
    pub fn jang2017(rate: f64, every: u64) -> Result<Self, Error> {
        TemperatureSchedule::new(1.0, 0.5, rate, every)
    }

    /// The temperature at training step `step`, as the f32 the kernels take.
    pub fn at(&self, step: u64) -> f32 {
        let s = (step / self.every * self.every) as f64;
        self.tau_min.max(self.tau0 * (-self.rate * s).exp()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decays_exponentially_in_steps_of_every_down_to_the_floor() {
        let s = TemperatureSchedule::new(2.0, 0.25, 1e-3, 100).unwrap();
        assert_eq!(s.at(0), 2.0);
        assert_eq!(s.at(99), 2.0, "held until the next update");
        assert_eq!(s.at(100), (2.0 * (-0.1f64).exp()) as f32);
        assert_eq!(s.at(250), (2.0 * (-0.2f64).exp()) as f32);
        // 2 e^{-r s} = 0.25 at s = ln(8) / r ~ 2079: the floor from step 2100 on.
        assert!(s.at(2000) > 0.25);
        assert_eq!(s.at(2100), 0.25);
        assert_eq!(s.at(u64::MAX), 0.25);
        let steps: Vec<f32> = (0..5000).step_by(7).map(|t| s.at(t)).collect();
        assert!(steps.windows(2).all(|w| w[1] <= w[0]), "never increases");
        let paper = TemperatureSchedule::jang2017(1e-4, 500).unwrap();
        assert_eq!(paper.at(0), 1.0);
        assert_eq!(paper.at(1000), (-0.1f64).exp() as f32);
        assert_eq!(paper.at(10_000_000), 0.5);
        assert_eq!(
            TemperatureSchedule::new(1.0, 2.0, 0.0, 1).unwrap().at(5),
            2.0,
            "the floor wins"
        );
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(TemperatureSchedule::new(0.0, 0.5, 1e-4, 1).is_err());
        assert!(TemperatureSchedule::new(1.0, -0.5, 1e-4, 1).is_err());
        assert!(TemperatureSchedule::new(f64::NAN, 0.5, 1e-4, 1).is_err());
        assert!(TemperatureSchedule::new(1.0, 0.5, -1.0, 1).is_err());
        assert!(TemperatureSchedule::new(1.0, 0.5, f64::INFINITY, 1).is_err());
        assert!(TemperatureSchedule::new(1.0, 0.5, 1e-4, 0).is_err());
    }
}
