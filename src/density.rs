//! The Concrete / Gumbel-Softmax log-density (`shaders/concrete_density.wgsl`), one value per row.
//!
//! For logits `l`, temperature `tau` and a log-space sample `x = log y` of a row with `c` live
//! (unmasked) categories, with `s_i = l_i - tau * x_i`:
//!
//! `log p(x) = lgamma(c) + (c - 1) * log(tau) + sum_i s_i - c * logsumexp_i(s_i)`
//!
//! which is TensorFlow Probability's `ExpRelaxedOneHotCategorical.log_prob` and PyTorch's
//! `ExpRelaxedCategorical.log_prob` (`lgamma(K) - log(tau) * -(K - 1)` plus
//! `sum(score - logsumexp(score))`, `score = logits - value * tau`). On the simplex,
//! the density of `y` (with respect to Lebesgue measure on its first `c - 1` coordinates;
//! Maddison et al. 2017, eq. 3) is `log p(y) = log p(x) - sum_i x_i`.
//!
//! Masked (-inf) logits are left out: the row is a Concrete distribution over its live
//! categories, and `x` at masked entries is ignored. The density needs finite `x` at live
//! entries (a sample on the simplex's boundary has density 0 or unbounded) and no +inf logit.
//!
//! **Points off the simplex.** A density is only defined on the simplex, where the live entries'
//! `y` sum to 1, i.e. `logsumexp_i(x_i) = 0` over live entries. A row is refused (slice level:
//! [`Error::InvalidArgument`] naming the row; buffer level: NaN for that row; the CPU reference:
//! NaN) when
//!
//! `|logsumexp_live(x)| > SIMPLEX_TOLERANCE * max(1, (max_live |l_i| + 23) / tau)`
//!
//! ([`SIMPLEX_TOLERANCE`] = 1e-3), which covers `x_i > 0` beyond the tolerance too (the
//! logsumexp is at least the largest `x_i`). The scale is the largest `(l + g) / tau` a forward
//! pass could have rounded (its Gumbel noise stays below 23): the forward's `x` carries an f32
//! rounding error proportional to it. For `|l| <= 4` and `tau = 1` the tolerance is 0.027 on
//! the logsumexp (the live `y` summing to 1 within 2.7%). Measured on true samples
//! (`tests/density.rs`: k up to 65537, tau from 0.01 to 10, logits in [-4, 4) and shifted by
//! 30), the worst `|logsumexp(x)| / scale` is 1.2e-8 for the f64 forward rounded to f32 and
//! 2.7e-6 for a forward computed in f32 with a sequential sum (worse than the kernels' tree
//! sums): the tolerance has a margin of more than 300. TensorFlow Probability refuses such
//! points likewise ("samples must sum to 1").
//!
//! Strategies (each reads every entry once; tests force each): rows of up to
//! [`crate::ROW_PER_THREAD_MAX_K`] entries take one invocation per row, up to
//! [`crate::ROW_PER_TEAM_MAX_K`] a team of 32 invocations, longer rows a workgroup; rows of at
//! least [`crate::SPLIT_MIN_K`] entries, fewer than [`crate::SPLIT_MAX_ROWS`] of them, are split
//! over workgroups of 4096 entries whose partial states a second, tiny pass merges
//! (the path choice is [`crate::backward`]'s `row_path`, shared with the backward pass).

use crate::backward::{RowPath, TEAM_SIZE, row_groups, row_path};
use crate::family::{
    FamilyCore, FamilySpec, KernelFamily, Params, check_no_alias, check_slice, take, uniform_params,
};
use crate::logits::{LogitsView, check_rows, check_shape, check_tau, check_temperature};
use crate::shader::WG_SIZE;
use crate::{Error, Gpu, Temperature};
use std::sync::Arc;

/// The relative tolerance of the off-simplex check (see the module docs): a row whose live
/// entries' `|logsumexp(log y)|` exceeds `SIMPLEX_TOLERANCE * max(1, (max_live |l| + 23) / tau)`
/// is not a sample of the distribution.
pub const SIMPLEX_TOLERANCE: f32 = 1e-3;

/// The Gumbel noise's upper bound (`33 ln 2`, rounded up), in the off-simplex scale.
const GUMBEL_MAX: f64 = 23.0;

/// The off-simplex tolerance of a row whose live logits reach `max_abs_l` in magnitude.
pub(crate) fn simplex_tolerance(max_abs_l: f64, tau: f64) -> f64 {
    f64::from(SIMPLEX_TOLERANCE) * ((max_abs_l + GUMBEL_MAX) / tau).max(1.0)
}

/// Checks that a row's live `(category, logit, x)` entries lie on the simplex (module docs):
/// `None` if so, else what is wrong.
pub(crate) fn off_simplex(
    live: impl Iterator<Item = (usize, f64, f64)> + Clone,
    tau: f64,
) -> Option<String> {
    let max_abs_l = live.clone().fold(0.0f64, |m, (_, l, _)| m.max(l.abs()));
    let tol = simplex_tolerance(max_abs_l, tau);
    if let Some((j, _, x)) = live.clone().find(|&(_, _, x)| x > tol) {
        return Some(format!(
            "log y = {x} > 0 at category {j}: not a point of the simplex (tolerance {tol:e})"
        ));
    }
    let mx = live
        .clone()
        .fold(f64::NEG_INFINITY, |m, (_, _, x)| m.max(x));
    let lse = mx + live.map(|(_, _, x)| (x - mx).exp()).sum::<f64>().ln();
    (lse.abs() > tol).then(|| {
        format!(
            "the live entries' y sum to {} (logsumexp of log y = {lse:e}): not a point of the \
             simplex (tolerance {tol:e} on the logsumexp)",
            lse.exp()
        )
    })
}

/// One density job at the buffer level. Every slice may start at any multiple of 4 bytes of its
/// buffer (which needs `STORAGE` usage); a bad one is [`Error::InvalidArgument`] naming it
/// (`"logits"`, `"log_y"`, `"tau"`, `"out"`).
#[derive(Clone, Copy, Debug)]
pub struct DensityJob<'a> {
    /// Logits, `rows x k` in any format; -inf marks a masked category. Rows may be
    /// [`LogitsView::stride`] elements apart (`log_y` is dense).
    pub logits: LogitsView<'a>,
    /// The log-space samples `x = log y`, f32, `rows x k`.
    pub log_y: wgpu::BufferSlice<'a>,
    /// The distribution's temperature: a scalar (checked here: finite, normal, > 0), or a slice
    /// of `rows` f32 (a row whose value is not a positive normal f32 gets NaN).
    pub tau: Temperature<wgpu::BufferSlice<'a>>,
    /// `false`: the log-space density `log p(x)`; `true`: the simplex density `log p(y)`.
    pub simplex: bool,
    /// Receives one f32 per row: the density; -inf for a row with a non-finite `x` at a live
    /// entry, a +inf or NaN logit or no live entry; NaN for a row off the simplex (module docs).
    pub out: wgpu::BufferSlice<'a>,
}

uniform_params! {
    /// The density kernels' parameters (`shaders/concrete_density.wgsl`).
    struct DensityParams {
        /// Rows and k of this dispatch.
        rows: u32,
        k: u32,
        /// The logits' LogitsFormat code.
        format: u32,
        /// 1: the simplex density.
        simplex: u32,
        /// 1: per-row temperatures in binding 4; else tau and log_tau apply.
        per_row: u32,
        tau: f32,
        log_tau: f32,
        /// SIMPLEX_TOLERANCE.
        simplex_tol: f32,
        /// Element index of this dispatch's first element inside each binding (bindings start
        /// at device-aligned offsets): logits (in its format's elements), log_y, and the first
        /// row inside out and taus.
        logits_base: u32,
        log_y_base: u32,
        out_base: u32,
        tau_base: u32,
        /// Invocations per row in row_per_team.
        team: u32,
        /// Split rows: segments per row and entries per segment.
        segs: u32,
        seg_len: u32,
        /// The logits view's stride - k (elements between rows beyond k).
        row_pad: u32,
    }
}

/// Entries per segment of a split row (16 per invocation).
const SEG_LEN: u64 = 16 * WG_SIZE as u64;
/// 32-bit words of the shader's `State` (m, e, sum_s, sum_x, c, bad, mx, ex, max_l).
const STATE_WORDS: u64 = 9;

/// The Concrete log-density kernels: own their pipelines (on the shared family skeleton).
pub struct ConcreteDensity {
    core: FamilyCore,
    row_per_thread: wgpu::ComputePipeline,
    row_per_workgroup: wgpu::ComputePipeline,
    row_per_team: wgpu::ComputePipeline,
    segment_partials: wgpu::ComputePipeline,
    segment_finish: wgpu::ComputePipeline,
}

impl KernelFamily for ConcreteDensity {
    const SPEC: FamilySpec = FamilySpec {
        name: "concrete_density",
        source: include_str!("../shaders/concrete_density.wgsl"),
        params: DensityParams::WGSL,
        // logits, log_y, out, taus, partials
        storage_read_only: &[true, true, false, true, false],
        entry_points: &[
            "row_per_thread",
            "row_per_workgroup",
            "row_per_team",
            "segment_partials",
            "segment_finish",
        ],
        stepped: false,
    };

    fn new(core: FamilyCore, pipelines: Vec<wgpu::ComputePipeline>) -> Result<Self, Error> {
        let [
            row_per_thread,
            row_per_workgroup,
            row_per_team,
            segment_partials,
            segment_finish,
        ] = take(pipelines)?;
        Ok(ConcreteDensity {
            core,
            row_per_thread,
            row_per_workgroup,
            row_per_team,
            segment_partials,
            segment_finish,
        })
    }
}

impl ConcreteDensity {
    /// Records the log-density of every row of `job` into `encoder`. Never submits. Inputs
    /// larger than one storage binding are split into dispatches of whole rows; the split-row
    /// path keeps its partial states in a scratch buffer reused across calls. Rows outside the
    /// domain get -inf, rows off the simplex NaN (see [`DensityJob::out`]). `Err` for a bad view
    /// or slice (naming it) or a bad scalar temperature.
    pub fn record(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &DensityJob<'_>,
    ) -> Result<(), Error> {
        self.record_path(encoder, job, RowPath::Auto)
    }

    /// [`Self::record`] with the kernel chosen by the caller (tests reach every path with it).
    #[doc(hidden)]
    pub fn record_path(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        job: &DensityJob<'_>,
        path: RowPath,
    ) -> Result<(), Error> {
        // A strided view is read in place (row r at element r * stride); log_y stays dense
        // `rows x k`. rows * k <= rows * stride, which the check bounds.
        job.logits.check_strided("logits")?;
        let LogitsView { rows, k, .. } = job.logits;
        let (len, stride) = (rows * k, job.logits.row_stride());
        check_slice("log_y", job.log_y, len * 4)?;
        check_slice("out", job.out, rows * 4)?;
        check_temperature(&job.tau, rows)?;
        check_no_alias(
            &[
                ("logits", Some(job.logits.data)),
                ("log_y", Some(job.log_y)),
                ("tau", job.tau.per_row()),
            ],
            &[("out", Some(job.out))],
        )?;
        if len == 0 {
            return Ok(());
        }
        let path = row_path(rows, k, path);
        let segs = k.div_ceil(SEG_LEN);
        let per_dispatch = self.core.rows_per_dispatch(rows, stride)?;
        let core = &self.core;
        core.scoped(|| {
            let mut r0 = 0u64;
            while r0 < rows {
                let n = per_dispatch.min(rows - r0);
                let (e0, len) = (r0 * k, n * k);
                let logits = core.window(
                    job.logits.data,
                    r0 * stride,
                    job.logits.span(n),
                    job.logits.format.bytes(),
                );
                let log_y = core.window(job.log_y, e0, len, 4);
                let out = core.window(job.out, r0, n, 4);
                let (tau, taus) = match job.tau {
                    Temperature::Scalar(t) => (t, core.unused(4)),
                    Temperature::PerRow(s) => (1.0, core.window(s, r0, n, 4)),
                };
                let partials = match path {
                    RowPath::SplitRows => n * segs,
                    _ => 1,
                };
                // Other paths leave the binding unused, but it must hold one State.
                let partials = core.scratch(STATE_WORDS * 4 * partials)?;
                let params = DensityParams {
                    rows: n as u32,
                    k: k as u32,
                    format: job.logits.format.code(),
                    simplex: u32::from(job.simplex),
                    per_row: u32::from(matches!(job.tau, Temperature::PerRow(_))),
                    tau,
                    log_tau: f64::from(tau).ln() as f32,
                    simplex_tol: SIMPLEX_TOLERANCE,
                    logits_base: logits.base,
                    log_y_base: log_y.base,
                    out_base: out.base,
                    tau_base: taus.base,
                    team: TEAM_SIZE,
                    segs: segs as u32,
                    seg_len: SEG_LEN as u32,
                    row_pad: (stride - k) as u32,
                };
                let bindings = [
                    logits.binding,
                    log_y.binding,
                    out.binding,
                    taus.binding,
                    partials.as_entire_buffer_binding(),
                ];
                let per_thread = row_groups(RowPath::RowPerThread, n, segs);
                let passes: &[(&wgpu::ComputePipeline, u64)] = match path {
                    RowPath::RowPerThread => &[(&self.row_per_thread, per_thread)],
                    RowPath::RowPerTeam => &[(&self.row_per_team, row_groups(path, n, segs))],
                    RowPath::SplitRows => &[
                        (&self.segment_partials, row_groups(path, n, segs)),
                        (&self.segment_finish, per_thread),
                    ],
                    _ => &[(&self.row_per_workgroup, row_groups(path, n, segs))],
                };
                core.dispatch(encoder, &params, &bindings, passes)?;
                r0 += n;
            }
            Ok(())
        })
    }
}

impl Gpu {
    /// The Concrete log-density kernels of this device (built on first use).
    pub fn concrete_density_kernels(&self) -> Result<Arc<ConcreteDensity>, Error> {
        self.family::<ConcreteDensity>()
    }

    /// The general slice-level density, with the kernel chosen by `path`.
    #[doc(hidden)]
    pub fn concrete_log_prob_with(
        &self,
        logits: &[f32],
        log_y: &[f32],
        k: usize,
        tau: f32,
        simplex: bool,
        path: RowPath,
    ) -> Result<Vec<f32>, Error> {
        check_tau(tau)?;
        let rows = check_shape(logits.len(), k)?;
        if log_y.len() != logits.len() {
            return Err(Error::InvalidArgument(format!(
                "{} samples for {} logits",
                log_y.len(),
                logits.len()
            )));
        }
        check_rows(logits.iter().copied(), k)?;
        for (i, (&l, &x)) in logits.iter().zip(log_y).enumerate() {
            if l == f32::INFINITY {
                return Err(Error::InvalidArgument(format!(
                    "logit {} of row {} is +inf: the Concrete density needs finite logits \
                     (or -inf to mask a category)",
                    i % k,
                    i / k
                )));
            }
            if l != f32::NEG_INFINITY && !x.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "log y = {x} at live category {} of row {}: the density needs finite log y \
                     (use the log-space sample, which does not underflow)",
                    i % k,
                    i / k
                )));
            }
        }
        for (r, (lr, xr)) in logits.chunks(k).zip(log_y.chunks(k)).enumerate() {
            let live = lr
                .iter()
                .zip(xr)
                .enumerate()
                .filter(|(_, (l, _))| **l != f32::NEG_INFINITY)
                .map(|(j, (&l, &x))| (j, f64::from(l), f64::from(x)));
            if let Some(what) = off_simplex(live, f64::from(tau)) {
                return Err(Error::InvalidArgument(format!("row {r}: {what}")));
            }
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        if u32::try_from(k).is_err() {
            return Err(Error::TooLarge(format!("k = {k}")));
        }
        let kernels = self.concrete_density_kernels()?;
        let l = self.upload("density logits", logits)?;
        let x = self.upload("density log_y", log_y)?;
        let out = self.storage_buffer("density out", rows as u64 * 4)?;
        let job = DensityJob {
            logits: LogitsView::f32(l.slice(..), rows as u64, k as u64),
            log_y: x.slice(..),
            tau: Temperature::Scalar(tau),
            simplex,
            out: out.slice(..),
        };
        self.submit(|enc| kernels.record_path(enc, &job, path))?;
        self.read_buffer(&out, rows)
    }

    /// Per row, the log-density of the log-space sample `log_y` under the Concrete distribution
    /// with `logits` and temperature `tau` (TFP's ExpRelaxedOneHotCategorical, PyTorch's
    /// ExpRelaxedCategorical; see the module docs), blocking. Masked (-inf) logits are left out.
    /// Errors: shapes, bad `tau`, NaN or all -inf rows of logits, +inf logits, non-finite
    /// `log_y` at a live category, and a row off the simplex (its live entries' `y` do not sum
    /// to 1 within the tolerance of the module docs; [`Error::InvalidArgument`] naming the row).
    pub fn concrete_log_prob(
        &self,
        logits: &[f32],
        log_y: &[f32],
        k: usize,
        tau: f32,
    ) -> Result<Vec<f32>, Error> {
        self.concrete_log_prob_with(logits, log_y, k, tau, false, RowPath::Auto)
    }

    /// Per row, the log-density on the simplex of `y = exp(log_y)` (the Concrete density of
    /// Maddison et al.): [`Gpu::concrete_log_prob`] minus `sum_i log_y_i` over live entries.
    /// Takes the log-space sample for accuracy. Errors as [`Gpu::concrete_log_prob`].
    pub fn concrete_log_prob_simplex(
        &self,
        logits: &[f32],
        log_y: &[f32],
        k: usize,
        tau: f32,
    ) -> Result<Vec<f32>, Error> {
        self.concrete_log_prob_with(logits, log_y, k, tau, true, RowPath::Auto)
    }
}
