//! The fused Gumbel-Softmax forward pass on a real adapter against the f64 reference: every
//! kernel path, soft / hard / log outputs, scalar and per-row temperatures, f32 / f16 / bf16
//! logits, masked and +inf entries, bad rows at the buffer level, and the slice API's errors.
//!
//! Accuracy is measured two ways: against the f64 reference fed the GPU's own f32 noise (the
//! kernel's arithmetic alone; this is where the tight bounds apply) and against the pure f64
//! reference (adds the f32 noise's own error, ~4e-6 |g|, scaled by 1 / tau).

mod common;
use common::*;
use gumbel_wgpu::logits::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
use gumbel_wgpu::{
    Error, Gpu, GumbelSoftmax, LogitsFormat, LogitsSlice, LogitsView, SoftmaxJob, SoftmaxMode,
    SoftmaxStrategy, Stream, Temperature, cpu, softmax_max_register_k,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const NEG_INF_BITS: u32 = 0xff80_0000;

const BAD_ROW_BITS: u32 = 0x7fc0_0000;

/// The shapes of the accuracy sweep: (k, rows), around workgroup and Philox-block boundaries
/// and the kernels' limits (register groups of 1 to 256 threads, 4093 on chip); the element
/// counts are kept moderate for software adapters.
const SHAPES: &[(usize, usize)] = &[
    (1, 1000),
    (2, 500),
    (3, 333),
    (7, 301),
    (31, 97),
    (32, 64),
    (33, 65),
    (255, 17),
    (256, 9),
    (257, 11),
    (1000, 7),
    (4097, 5),
    (65537, 3),
    (262_144, 2),
];

const TAUS: &[f32] = &[0.1, 0.5, 1.0, 10.0];

/// Random logits, row by row of one of three kinds: N(0, 3)-ish; 1e4 + U(-5, 5) (large
/// magnitude, yet a real mixture, so precision loss in l + g would show); U(-1e4, 1e4). About
/// 10% of entries are masked (-inf), never a whole row.
fn random_logits(rng: &mut StdRng, rows: usize, k: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * k);
    for _ in 0..rows {
        let kind = rng.random_range(0..3u32);
        let keep = rng.random_range(0..k);
        for j in 0..k {
            let x: f32 = match kind {
                0 => (rng.random::<f32>() - 0.5) * 6.0 + (rng.random::<f32>() - 0.5) * 6.0,
                1 => 1e4 + (rng.random::<f32>() - 0.5) * 10.0,
                _ => (rng.random::<f32>() - 0.5) * 2e4,
            };
            v.push(if j != keep && rng.random::<f32>() < 0.1 {
                f32::NEG_INFINITY
            } else {
                x
            });
        }
    }
    v
}

fn random_stream(rng: &mut StdRng) -> Stream {
    Stream {
        seed: rng.random(),
        offset: rng.random::<u64>() >> 8,
    }
}

/// `l + g` in f64 with the GPU's own f32 noise (masked entries stay -inf).
fn perturbed_with_gpu_noise(gpu: &Gpu, logits: &[f32], stream: Stream) -> Vec<f64> {
    let g = gpu.gumbel(stream, logits.len()).unwrap();
    logits
        .iter()
        .zip(&g)
        .map(|(&l, &g)| f64::from(l) + f64::from(g))
        .collect()
}

/// Runs `mode` through the buffer-level API into a poisoned buffer (plus a poisoned tail that
/// must stay untouched) and returns the outputs' bits.
#[allow(clippy::too_many_arguments)]
fn run_job(
    gpu: &Gpu,
    mode: SoftmaxMode,
    format: LogitsFormat,
    words: &[u32],
    k: usize,
    rows: usize,
    tau: Temperature<&[f32]>,
    stream: Stream,
    strategy: SoftmaxStrategy,
) -> Vec<u32> {
    let len = rows * k;
    let logits = gpu.upload("logits", words).unwrap();
    let out = poisoned(gpu, len + 5);
    let tau_buf = match tau {
        Temperature::PerRow(t) => Some(gpu.upload("taus", t).unwrap()),
        Temperature::Scalar(_) => None,
    };
    let job = SoftmaxJob {
        mode,
        logits: LogitsView {
            data: logits.slice(..),
            format,
            rows: rows as u64,
            k: k as u64,
            stride: 0,
        },
        tau: match (&tau_buf, tau) {
            (Some(b), _) => Temperature::PerRow(b.slice(..)),
            (None, Temperature::Scalar(t)) => Temperature::Scalar(t),
            (None, _) => unreachable!(),
        },
        stream,
        out: out.slice(..),
        status: None,
    };
    let kernels = gpu.gumbel_softmax_kernels().unwrap();
    run(gpu, |enc| kernels.record_with(enc, &job, strategy).unwrap());
    let got: Vec<u32> = gpu.read_buffer(&out, len + 5).unwrap();
    assert!(
        got[len..].iter().all(|&w| w == SENTINEL),
        "k {k} rows {rows}: wrote past the end"
    );
    got[..len].to_vec()
}

/// Worst errors seen by `check_soft_and_log`.
#[derive(Default, Debug)]
struct Worst {
    /// max |y - y_ref|, reference fed the GPU's noise.
    y: f64,
    /// max |log y - ref| / its bound (<= 1 passes).
    log: f64,
    /// max |y - y_ref|, pure f64 reference (its own noise).
    y_vs_pure_f64: f64,
}

/// Soft and log outputs of `logits` vs the f64 reference fed the GPU's noise, plus the hard
/// output's agreement with both. `taus(r)` is row r's temperature.
#[allow(clippy::too_many_arguments)]
fn check_soft_and_log(
    gpu: &Gpu,
    widened: &[f32],
    format: LogitsFormat,
    words: &[u32],
    k: usize,
    tau: Temperature<&[f32]>,
    stream: Stream,
    strategy: SoftmaxStrategy,
    worst: &mut Worst,
) {
    let rows = widened.len() / k;
    let tau_of = |r: usize| match tau {
        Temperature::Scalar(t) => f64::from(t),
        Temperature::PerRow(t) => f64::from(t[r]),
    };
    let what = format!("k {k} rows {rows} {format:?} {strategy:?} {stream:?}");
    // (Auto at k <= 64 sums up to 16 terms per thread; k bounds that too.)
    let row_per_thread =
        strategy == SoftmaxStrategy::RowPerThread || (strategy == SoftmaxStrategy::Auto && k <= 64);
    // Terms one thread sums in sequence (then a tree of 8 levels in the workgroup kernels).
    let sum_len = if row_per_thread {
        k as f64
    } else {
        (k / 256 + 9) as f64
    };
    let z = perturbed_with_gpu_noise(gpu, widened, stream);
    let want_log = cpu::log_softmax_perturbed(&z, k, tau_of);
    let pure_log = cpu::gumbel_softmax_log_per_row(
        widened,
        k,
        &(0..rows).map(tau_of).collect::<Vec<_>>(),
        stream,
    );
    let job = |mode| run_job(gpu, mode, format, words, k, rows, tau, stream, strategy);
    let soft = job(SoftmaxMode::Soft);
    let log = job(SoftmaxMode::Log);
    for i in 0..widened.len() {
        let tau = tau_of(i / k);
        let y = f32::from_bits(soft[i]);
        let ly = f32::from_bits(log[i]);
        if widened[i] == f32::NEG_INFINITY {
            assert_eq!(soft[i], 0, "{what}: masked element {i} has y = {y}");
            assert_eq!(
                log[i], NEG_INF_BITS,
                "{what}: masked element {i} has log y {ly}"
            );
            continue;
        }
        assert!(
            y.is_finite() && ly.is_finite(),
            "{what}: element {i}: {y} {ly}"
        );
        let err = (f64::from(y) - want_log[i].exp()).abs();
        worst.y = worst.y.max(err);
        assert!(
            err < 1e-5,
            "{what} tau {tau}: y[{i}] = {y}, want {}",
            want_log[i].exp()
        );
        // log y: a few f32 roundings of (l - l_a) + (g - g_a) (|.| < 32) scaled by 1 / tau,
        // the relative rounding of a large result, and the f32 sum's rounding in log s (grows
        // like the square root of the terms one thread adds in sequence).
        let lerr = (f64::from(ly) - want_log[i]).abs();
        let bound = 8e-6 / tau + 2e-6 * want_log[i].abs() + 2.4e-7 * sum_len.sqrt();
        worst.log = worst.log.max(lerr / bound);
        assert!(
            lerr <= bound,
            "{what} tau {tau}: log y[{i}] = {ly}, want {}",
            want_log[i]
        );
        // Against the pure f64 reference the f32 noise's error (4e-6 |g|) enters, scaled by
        // 1 / tau: y errs by at most about y * 2e-4 / tau.
        let perr = (f64::from(y) - pure_log[i].exp()).abs();
        worst.y_vs_pure_f64 = worst.y_vs_pure_f64.max(perr);
        assert!(
            perr <= 3e-4 / tau,
            "{what}: y[{i}] = {y} vs pure f64 {}",
            pure_log[i].exp()
        );
    }
    // Rows sum to 1.
    for (r, row) in soft.chunks(k).enumerate() {
        let sum: f64 = row.iter().map(|&b| f64::from(f32::from_bits(b))).sum();
        assert!(
            (sum - 1.0).abs() < 1e-5 * (1.0 + (k as f64).sqrt() / 16.0),
            "{what}: row {r} sums to {sum}"
        );
    }
    check_hard(gpu, widened, format, words, k, tau, stream, strategy, &soft);
}

/// The hard output is one-hot at the argmax of l + g (GPU noise, exact in f64; ties to the
/// lowest index), up to a near-tie that f32 cannot resolve, and the soft row peaks there too.
#[allow(clippy::too_many_arguments)]
fn check_hard(
    gpu: &Gpu,
    widened: &[f32],
    format: LogitsFormat,
    words: &[u32],
    k: usize,
    tau: Temperature<&[f32]>,
    stream: Stream,
    strategy: SoftmaxStrategy,
    soft: &[u32],
) {
    let rows = widened.len() / k;
    let what = format!("k {k} rows {rows} {format:?} {strategy:?} {stream:?}");
    let hard = run_job(
        gpu,
        SoftmaxMode::Hard,
        format,
        words,
        k,
        rows,
        tau,
        stream,
        strategy,
    );
    let g = gpu.gumbel(stream, widened.len()).unwrap();
    for r in 0..rows {
        let (l, g) = (&widened[r * k..][..k], &g[r * k..][..k]);
        let row = &hard[r * k..][..k];
        let hot: Vec<usize> = (0..k).filter(|&j| row[j] != 0).collect();
        assert_eq!(hot.len(), 1, "{what}: row {r} is not one-hot");
        let h = hot[0];
        assert_eq!(row[h], 1f32.to_bits(), "{what}: row {r}");
        let z: Vec<f64> = (0..k).map(|j| f64::from(l[j]) + f64::from(g[j])).collect();
        let a = cpu::argmax(&z);
        // The kernel compares (l_h - l_a) + (g_h - g_a) in f32: exact unless l or g differ by
        // more than a factor of two, when the rounding is below 2^-24 of the larger difference.
        let slack =
            2f64.powi(-23) * ((z[a] - z[h]).abs() + (f64::from(l[a]) - f64::from(l[h])).abs());
        assert!(
            h == a || (z[a] - z[h] <= slack && z[a] >= z[h]),
            "{what}: row {r}: hot {h} but l + g peaks at {a}"
        );
        let ys = &soft[r * k..][..k];
        let ymax = ys.iter().map(|&b| f32::from_bits(b)).fold(0.0, f32::max);
        assert_eq!(
            f32::from_bits(ys[h]),
            ymax,
            "{what}: row {r}: soft max not at hot {h}"
        );
    }
}

#[test]
fn soft_log_and_hard_match_the_f64_reference_at_every_shape_and_temperature() {
    let mut rng = StdRng::seed_from_u64(10);
    for gpu in gpus() {
        let mut worst = Worst::default();
        for &(k, rows) in SHAPES {
            for &tau in TAUS {
                let logits = random_logits(&mut rng, rows, k);
                let stream = random_stream(&mut rng);
                check_soft_and_log(
                    gpu,
                    &logits,
                    LogitsFormat::F32,
                    bytemuck::cast_slice(&logits),
                    k,
                    Temperature::Scalar(tau),
                    stream,
                    SoftmaxStrategy::Auto,
                    &mut worst,
                );
            }
        }
        eprintln!("{}: worst errors {worst:?}", gpu.describe());
    }
}

#[test]
fn every_kernel_path_gives_the_reference_at_every_shape_it_takes() {
    let mut rng = StdRng::seed_from_u64(11);
    let k_max = softmax_max_register_k() as usize;
    let gpu = gpu();
    let mut worst = Worst::default();
    for strategy in [
        SoftmaxStrategy::RowPerThread,
        SoftmaxStrategy::Registers,
        SoftmaxStrategy::Online,
        SoftmaxStrategy::Split,
        SoftmaxStrategy::OnChip,
    ] {
        for (k, rows) in [
            (1, 300),
            (3, 100),
            (13, 50),
            (14, 50),
            (33, 40),
            (62, 20),
            (64, 9),
            (65, 9),
            (257, 5),
            (509, 9),
            (510, 9),
            (1000, 3),
            (2000, 5),
            (k_max, 2),
            (k_max + 1, 2),
            (20_000, 2),
        ] {
            if strategy == SoftmaxStrategy::Registers && k > k_max
                || strategy == SoftmaxStrategy::OnChip && k as u64 > onchip_max_k(gpu)
            {
                continue;
            }
            for tau in [0.1, 1.0] {
                let logits = random_logits(&mut rng, rows, k);
                check_soft_and_log(
                    gpu,
                    &logits,
                    LogitsFormat::F32,
                    bytemuck::cast_slice(&logits),
                    k,
                    Temperature::Scalar(tau),
                    random_stream(&mut rng),
                    strategy,
                    &mut worst,
                );
            }
        }
    }
    eprintln!("worst errors over forced paths {worst:?}");
}

#[test]
fn the_register_kernel_refuses_rows_it_cannot_hold() {
    let gpu = gpu();
    let k = softmax_max_register_k() as usize + 1;
    let logits = vec![0f32; k];
    let err = gpu
        .gumbel_softmax_strategy(
            LogitsSlice::F32(&logits),
            k,
            Temperature::Scalar(1.0),
            SoftmaxMode::Soft,
            Stream::new(1),
            SoftmaxStrategy::Registers,
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
}

#[test]
fn per_row_temperatures_match_the_reference() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut worst = Worst::default();
    for gpu in gpus() {
        for (k, rows) in [(5, 200), (100, 20), (5000, 3)] {
            let logits = random_logits(&mut rng, rows, k);
            let taus: Vec<f32> = (0..rows).map(|r| TAUS[r % TAUS.len()]).collect();
            check_soft_and_log(
                gpu,
                &logits,
                LogitsFormat::F32,
                bytemuck::cast_slice(&logits),
                k,
                Temperature::PerRow(&taus),
                random_stream(&mut rng),
                SoftmaxStrategy::Auto,
                &mut worst,
            );
            // The slice API gives the same numbers.
            let stream = random_stream(&mut rng);
            let got = gpu
                .gumbel_softmax_with(
                    LogitsSlice::F32(&logits),
                    k,
                    Temperature::PerRow(&taus),
                    SoftmaxMode::Soft,
                    stream,
                )
                .unwrap();
            let want = cpu::gumbel_softmax_per_row(
                &logits,
                k,
                &taus.iter().map(|&t| f64::from(t)).collect::<Vec<_>>(),
                stream,
            );
            for (i, (&y, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(y) - w).abs() <= 3e-4 / f64::from(taus[i / k]),
                    "{i}"
                );
            }
        }
    }
    eprintln!("per-row tau worst errors {worst:?}");
}

#[test]
fn f16_and_bf16_logits_match_the_reference_on_their_widened_values() {
    let mut rng = StdRng::seed_from_u64(13);
    let mut worst = Worst::default();
    for gpu in gpus() {
        for (k, rows) in [(1, 7), (3, 101), (33, 31), (1000, 5), (4097, 3), (65537, 1)] {
            let logits = random_logits(&mut rng, rows, k);
            for format in [LogitsFormat::F16, LogitsFormat::Bf16] {
                let (bits, widened): (Vec<u16>, Vec<f32>) = match format {
                    LogitsFormat::F16 => {
                        let b: Vec<u16> = logits.iter().map(|&x| f32_to_f16(x)).collect();
                        let w = b.iter().map(|&h| f16_to_f32(h)).collect();
                        (b, w)
                    }
                    _ => {
                        let b: Vec<u16> = logits.iter().map(|&x| f32_to_bf16(x)).collect();
                        let w = b.iter().map(|&h| bf16_to_f32(h)).collect();
                        (b, w)
                    }
                };
                let words = gumbel_wgpu::logits::pack_u16(&bits);
                check_soft_and_log(
                    gpu,
                    &widened,
                    format,
                    &words,
                    k,
                    Temperature::Scalar(0.5),
                    random_stream(&mut rng),
                    SoftmaxStrategy::Auto,
                    &mut worst,
                );
                // The slice API takes the bits directly.
                let stream = random_stream(&mut rng);
                let slice = match format {
                    LogitsFormat::F16 => LogitsSlice::F16(&bits),
                    _ => LogitsSlice::Bf16(&bits),
                };
                let got = gpu
                    .gumbel_softmax_with(
                        slice,
                        k,
                        Temperature::Scalar(0.5),
                        SoftmaxMode::Log,
                        stream,
                    )
                    .unwrap();
                let via_f32 = gpu.gumbel_softmax_log(&widened, k, 0.5, stream).unwrap();
                assert_eq!(
                    got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    via_f32.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{format:?} k {k}: same values as f32 logits"
                );
            }
        }
    }
    eprintln!("f16/bf16 worst errors {worst:?}");
}

#[test]
fn positive_infinite_logits_share_the_mass_equally() {
    let inf = f32::INFINITY;
    let ninf = f32::NEG_INFINITY;
    // (k, logits, soft y)
    let cases: &[(usize, Vec<f32>, Vec<f32>)] = &[
        (1, vec![inf], vec![1.0]),
        (3, vec![0.0, inf, 5.0], vec![0.0, 1.0, 0.0]),
        (4, vec![inf, 1e4, ninf, inf], vec![0.5, 0.0, 0.0, 0.5]),
        (
            5,
            vec![inf, ninf, inf, inf, -3.0],
            vec![1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0 / 3.0, 0.0],
        ),
    ];
    for gpu in gpus() {
        for strategy in [
            SoftmaxStrategy::RowPerThread,
            SoftmaxStrategy::Registers,
            SoftmaxStrategy::Online,
            SoftmaxStrategy::Split,
            SoftmaxStrategy::OnChip,
        ] {
            for (k, logits, want) in cases {
                let k = *k;
                let s = Stream::new(3);
                let slice = LogitsSlice::F32(logits);
                let t = Temperature::Scalar(0.7);
                let run = |mode| {
                    gpu.gumbel_softmax_strategy(slice, k, t, mode, s, strategy)
                        .unwrap()
                };
                assert_eq!(&run(SoftmaxMode::Soft), want, "{strategy:?} {logits:?}");
                let first = logits.iter().position(|&x| x == inf).unwrap();
                let hard: Vec<f32> = (0..k).map(|j| f32::from(u8::from(j == first))).collect();
                assert_eq!(run(SoftmaxMode::Hard), hard, "{strategy:?} {logits:?}");
                let n = logits.iter().filter(|&&x| x == inf).count() as f32;
                let log: Vec<f32> = logits
                    .iter()
                    .map(|&x| if x == inf { -n.ln() } else { ninf })
                    .collect();
                let got = run(SoftmaxMode::Log);
                for (g, w) in got.iter().zip(&log) {
                    assert!(
                        g == w || (g - w).abs() < 1e-6,
                        "{strategy:?} {logits:?}: {got:?}"
                    );
                }
                // The reference agrees.
                let reference = cpu::gumbel_softmax(logits, k, 0.7, s);
                assert!(
                    reference
                        .iter()
                        .zip(want)
                        .all(|(r, &w)| (r - f64::from(w)).abs() < 1e-7)
                );
            }
        }
    }
}

#[test]
fn log_space_stays_finite_where_y_underflows() {
    // Logits 1e4 apart at tau 0.1: y underflows to 0, log y is about -1e5 and exact-ish.
    let logits = [0.0f32, 1e4, -1e4, 5.0];
    let s = Stream::new(9);
    let got = gpu().gumbel_softmax_log(&logits, 4, 0.1, s).unwrap();
    let want = cpu::gumbel_softmax_log(&logits, 4, 0.1, s);
    let soft = gpu().gumbel_softmax(&logits, 4, 0.1, s).unwrap();
    for j in 0..4 {
        assert!(got[j].is_finite(), "{got:?}");
        assert!(
            (f64::from(got[j]) - want[j]).abs() <= 2e-6 * want[j].abs() + 1e-3,
            "{got:?} {want:?}"
        );
    }
    assert_eq!(soft[0], 0.0);
    assert_eq!(soft[1], 1.0);
}

/// A k = 1 row is always y = 1 (log y = 0, hard = 1), whatever its logit and tau.
#[test]
fn single_category_rows_are_certain() {
    let logits = [-1e30f32, 0.0, 3.5, 1e30, f32::INFINITY];
    for tau in [1e-30f32, 0.1, 1e30] {
        let s = Stream::new(4);
        assert_eq!(
            gpu().gumbel_softmax(&logits, 1, tau, s).unwrap(),
            vec![1.0; 5]
        );
        assert_eq!(
            gpu().gumbel_softmax_hard(&logits, 1, tau, s).unwrap(),
            vec![1.0; 5]
        );
        assert_eq!(
            gpu().gumbel_softmax_log(&logits, 1, tau, s).unwrap(),
            vec![0.0; 5]
        );
    }
}

/// Extreme but legal inputs produce finite, normalised rows (no inf/NaN is formed inside).
#[test]
fn extreme_logits_and_temperatures_stay_finite() {
    let logits = [f32::MAX, -f32::MAX, 0.0, 1e38, f32::MIN_POSITIVE, -1e-30];
    for tau in [f32::MIN_POSITIVE, 1e-20, 1.0, 1e20, f32::MAX] {
        let s = Stream::new(5);
        let y = gpu().gumbel_softmax(&logits, 6, tau, s).unwrap();
        let sum: f32 = y.iter().sum();
        assert!(
            y.iter().all(|v| v.is_finite()) && (sum - 1.0).abs() < 1e-5,
            "tau {tau}: {y:?}"
        );
        let ly = gpu().gumbel_softmax_log(&logits, 6, tau, s).unwrap();
        assert!(ly.iter().all(|v| v.is_finite()), "tau {tau}: {ly:?}");
    }
}

#[test]
fn bad_rows_at_the_buffer_level_become_nan_rows_and_are_reported() {
    let nan = f32::NAN;
    let ninf = f32::NEG_INFINITY;
    let mut rng = StdRng::seed_from_u64(14);
    for strategy in [
        SoftmaxStrategy::RowPerThread,
        SoftmaxStrategy::Registers,
        SoftmaxStrategy::Online,
        SoftmaxStrategy::Split,
        SoftmaxStrategy::OnChip,
    ] {
        for k in [1usize, 3, 300, 5000, 9000] {
            if strategy == SoftmaxStrategy::Registers && k > softmax_max_register_k() as usize
                || strategy == SoftmaxStrategy::OnChip && k as u64 > onchip_max_k(gpu())
            {
                continue;
            }
            let rows = 6;
            let mut logits = random_logits(&mut rng, rows, k);
            // Row 1: a NaN; row 3: all -inf; row 4: a bad per-row tau; row 5: NaN and -inf.
            logits[k + k / 2] = nan;
            logits[3 * k..4 * k].fill(ninf);
            logits[5 * k..6 * k].fill(ninf);
            logits[5 * k] = nan;
            let mut taus = vec![0.5f32; rows];
            taus[4] = 0.0;
            let gpu = gpu();
            let stream = random_stream(&mut rng);
            for mode in [SoftmaxMode::Soft, SoftmaxMode::Hard, SoftmaxMode::Log] {
                let logits_buf = gpu.upload("logits", &logits).unwrap();
                let tau_buf = gpu.upload("taus", &taus).unwrap();
                let out = poisoned(gpu, rows * k);
                let status = gpu.upload("status", &GumbelSoftmax::STATUS_CLEAR).unwrap();
                let job = SoftmaxJob {
                    mode,
                    logits: LogitsView::f32(logits_buf.slice(..), rows as u64, k as u64),
                    tau: Temperature::PerRow(tau_buf.slice(..)),
                    stream,
                    out: out.slice(..),
                    status: Some(status.slice(..)),
                };
                let kernels = gpu.gumbel_softmax_kernels().unwrap();
                run(gpu, |enc| kernels.record_with(enc, &job, strategy).unwrap());
                let got: Vec<u32> = gpu.read_buffer(&out, rows * k).unwrap();
                let words: Vec<u32> = gpu
                    .read_buffer(&status, GumbelSoftmax::STATUS_WORDS)
                    .unwrap();
                let what = format!("{strategy:?} {mode:?} k {k}");
                assert_eq!(words, vec![1, 3, 4], "{what}: status");
                assert_eq!(
                    GumbelSoftmax::status_result(&words),
                    Err(Error::NanInRow { row: 1 })
                );
                for r in [1, 3, 4, 5] {
                    assert!(
                        got[r * k..][..k].iter().all(|&b| b == BAD_ROW_BITS),
                        "{what}: row {r} is not all NaN bits"
                    );
                }
                // The good rows are what a job of them alone gives.
                for r in [0, 2] {
                    let alone = gpu
                        .gumbel_softmax_strategy(
                            LogitsSlice::F32(&logits[r * k..][..k]),
                            k,
                            Temperature::Scalar(0.5),
                            mode,
                            stream.advance((r * k) as u64),
                            strategy,
                        )
                        .unwrap();
                    let alone: Vec<u32> = alone.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(&got[r * k..][..k], &alone[..], "{what}: row {r}");
                }
            }
        }
    }
}

#[test]
fn status_stays_clear_for_good_rows_and_is_optional() {
    let gpu = gpu();
    let logits = [1.0f32, 2.0, f32::NEG_INFINITY, 0.5];
    let logits_buf = gpu.upload("logits", &logits).unwrap();
    let out = poisoned(gpu, 4);
    let status = gpu.upload("status", &GumbelSoftmax::STATUS_CLEAR).unwrap();
    let kernels = gpu.gumbel_softmax_kernels().unwrap();
    let job = SoftmaxJob {
        mode: SoftmaxMode::Soft,
        logits: LogitsView::f32(logits_buf.slice(..), 2, 2),
        tau: Temperature::Scalar(1.0),
        stream: Stream::new(8),
        out: out.slice(..),
        status: Some(status.slice(..)),
    };
    run(gpu, |enc| kernels.record(enc, &job).unwrap());
    let words: Vec<u32> = gpu
        .read_buffer(&status, GumbelSoftmax::STATUS_WORDS)
        .unwrap();
    assert_eq!(words, GumbelSoftmax::STATUS_CLEAR.to_vec());
    assert_eq!(GumbelSoftmax::status_result(&words), Ok(()));
}

#[test]
fn the_slice_api_rejects_bad_input_with_clear_errors() {
    let gpu = gpu();
    let s = Stream::new(1);
    let ninf = f32::NEG_INFINITY;
    let ok = [0.0f32; 6];
    let invalid = |r: Result<Vec<f32>, Error>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(gpu.gumbel_softmax(&ok, 0, 1.0, s)), "k = 0");
    assert!(invalid(gpu.gumbel_softmax(&ok, 4, 1.0, s)), "len % k != 0");
    for tau in [0.0, -1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-40] {
        assert!(invalid(gpu.gumbel_softmax(&ok, 3, tau, s)), "tau {tau}");
        assert!(
            invalid(gpu.gumbel_softmax_hard(&ok, 3, tau, s)),
            "tau {tau}"
        );
        assert!(invalid(gpu.gumbel_softmax_log(&ok, 3, tau, s)), "tau {tau}");
        let taus = [1.0, tau];
        let r = gpu.gumbel_softmax_with(
            LogitsSlice::F32(&ok),
            3,
            Temperature::PerRow(&taus),
            SoftmaxMode::Soft,
            s,
        );
        assert!(
            matches!(&r, Err(Error::InvalidArgument(m)) if m.contains("row 1")),
            "{r:?}"
        );
    }
    let r = gpu.gumbel_softmax_with(
        LogitsSlice::F32(&ok),
        3,
        Temperature::PerRow(&[1.0]),
        SoftmaxMode::Soft,
        s,
    );
    assert!(invalid(r), "one tau for two rows");
    let mut nan_row = [0.0f32; 9];
    nan_row[7] = f32::NAN;
    let mut masked_row = [0.0f32; 9];
    masked_row[3..6].fill(ninf);
    for mode in [SoftmaxMode::Soft, SoftmaxMode::Hard, SoftmaxMode::Log] {
        let call = |x: &[f32]| {
            gpu.gumbel_softmax_with(LogitsSlice::F32(x), 3, Temperature::Scalar(1.0), mode, s)
        };
        assert_eq!(call(&nan_row), Err(Error::NanInRow { row: 2 }));
        assert_eq!(call(&masked_row), Err(Error::AllMaskedRow { row: 1 }));
    }
    // The same checks on half-precision bits.
    let h = [0x3c00u16, 0x7e00, 0xfc00, 0xfc00];
    let call = |x: LogitsSlice| {
        gpu.gumbel_softmax_with(x, 2, Temperature::Scalar(1.0), SoftmaxMode::Soft, s)
    };
    assert_eq!(call(LogitsSlice::F16(&h)), Err(Error::NanInRow { row: 0 }));
    let b = [0x3f80u16, 0x0000, 0xff80, 0xff80];
    assert_eq!(
        call(LogitsSlice::Bf16(&b)),
        Err(Error::AllMaskedRow { row: 1 })
    );
}

#[test]
fn empty_input_gives_empty_output() {
    let gpu = gpu();
    let s = Stream::new(1);
    assert_eq!(gpu.gumbel_softmax(&[], 3, 1.0, s), Ok(vec![]));
    assert_eq!(gpu.gumbel_softmax_hard(&[], 1, 1.0, s), Ok(vec![]));
    assert_eq!(gpu.gumbel_softmax_log(&[], 7, 1.0, s), Ok(vec![]));
    // At the buffer level, zero rows record nothing and leave the output alone.
    let logits = gpu.upload("logits", &[0u32; 4]).unwrap();
    let out = poisoned(gpu, 4);
    let kernels = gpu.gumbel_softmax_kernels().unwrap();
    let job = SoftmaxJob {
        mode: SoftmaxMode::Soft,
        logits: LogitsView::f32(logits.slice(..), 0, 4),
        tau: Temperature::Scalar(1.0),
        stream: s,
        out: out.slice(..),
        status: None,
    };
    run(gpu, |enc| kernels.record(enc, &job).unwrap());
    let got: Vec<u32> = gpu.read_buffer(&out, 4).unwrap();
    assert_eq!(got, vec![SENTINEL; 4]);
}

#[test]
fn the_buffer_level_checks_its_buffers_and_arguments() {
    let gpu = gpu();
    let kernels = gpu.gumbel_softmax_kernels().unwrap();
    let logits = gpu.upload("logits", &[0f32; 8]).unwrap();
    let out = gpu.storage_buffer("out", 32).unwrap();
    let taus = gpu.upload("taus", &[1f32; 2]).unwrap();
    let status = gpu.upload("status", &GumbelSoftmax::STATUS_CLEAR).unwrap();
    // A buffer the kernels cannot bind: no STORAGE usage.
    let plain = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("no storage"),
        size: 64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let job = SoftmaxJob {
        mode: SoftmaxMode::Soft,
        logits: LogitsView::f32(logits.slice(..), 2, 4),
        tau: Temperature::PerRow(taus.slice(..)),
        stream: Stream::new(1),
        out: out.slice(..),
        status: Some(status.slice(..)),
    };
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let mut record = |job: SoftmaxJob| kernels.record(&mut enc, &job);
    assert_eq!(record(job), Ok(()));
    // Each bad view is refused, naming its argument.
    let named = |r: Result<(), Error>, what: &str, why: &str| match r {
        Err(Error::InvalidArgument(m)) => {
            assert!(m.starts_with(&format!("{what}:")), "{why}: {m}")
        }
        other => panic!("{why}: {other:?}"),
    };
    let view = |data| LogitsView::f32(data, 2, 4);
    for (bad, why) in [
        (logits.slice(2..), "offset 2"),
        (logits.slice(4..), "too small"),
        (plain.slice(..), "no STORAGE"),
    ] {
        named(
            record(SoftmaxJob {
                logits: view(bad),
                ..job
            }),
            "logits",
            why,
        );
    }
    for (bad, why) in [
        (out.slice(2..), "offset 2"),
        (out.slice(..28), "too small"),
        (plain.slice(..), "no STORAGE"),
    ] {
        named(record(SoftmaxJob { out: bad, ..job }), "out", why);
    }
    for (bad, why) in [
        (taus.slice(2..), "offset 2"),
        (taus.slice(..4), "too small"),
        (plain.slice(..), "no STORAGE"),
    ] {
        let tau = Temperature::PerRow(bad);
        named(record(SoftmaxJob { tau, ..job }), "tau", why);
    }
    for (bad, why) in [
        (status.slice(2..), "offset 2"),
        (status.slice(..8), "too small"),
        (plain.slice(..), "no STORAGE"),
    ] {
        let status = Some(bad);
        named(record(SoftmaxJob { status, ..job }), "status", why);
    }
    // Shapes and scalar temperatures.
    let shaped = |rows, k| LogitsView {
        rows,
        k,
        ..job.logits
    };
    named(
        record(SoftmaxJob {
            logits: shaped(2, 0),
            ..job
        }),
        "logits",
        "k = 0",
    );
    named(
        record(SoftmaxJob {
            logits: shaped(3, 4),
            ..job
        }),
        "logits",
        "more rows than the logits hold",
    );
    for bad in [0.0, -0.5, f32::NAN, f32::INFINITY, 1e-40] {
        let r = record(SoftmaxJob {
            tau: Temperature::Scalar(bad),
            ..job
        });
        assert!(
            matches!(r, Err(Error::InvalidArgument(_))),
            "tau {bad}: {r:?}"
        );
    }
    // f16 logits need half the bytes; a 4-byte offset is enough whatever the device's alignment.
    let half = LogitsView {
        format: LogitsFormat::F16,
        ..view(logits.slice(4..20))
    };
    assert_eq!(
        record(SoftmaxJob {
            logits: half,
            ..job
        }),
        Ok(())
    );
    let half = LogitsView {
        format: LogitsFormat::Bf16,
        ..view(logits.slice(4..16))
    };
    named(
        record(SoftmaxJob {
            logits: half,
            ..job
        }),
        "logits",
        "short bf16",
    );
}

/// One case of the offset test: rows x k logits on `gpu` (a small-binding device forces
/// several dispatches), with a NaN in row 1 and, for per-row temperatures, a bad one in row 2.
struct OffsetCase {
    gpu: &'static Gpu,
    k: usize,
    rows: usize,
    what: &'static str,
}

/// A device whose storage bindings hold `elements` 4-byte elements, so jobs split into
/// dispatches of whole rows.
fn gpu_with_small_bindings(elements: u64) -> &'static Gpu {
    Box::leak(Box::new(chunked_gpu(elements)))
}

/// Every input and output of the forward at byte offsets 4, 260 and 1028 inside buffers it shares
/// with other data: logits and per-row taus in one read-only buffer, the output and the status
/// words in another. Every other word keeps its sentinel, and the results are bit for bit those
/// of the same job at offset 0 in buffers of its own (and near the CPU reference), in every
/// mode and format, with scalar and per-row temperatures, on every path: registers, split rows,
/// and jobs chunked into several dispatches (registers and split).
#[test]
fn every_view_works_at_any_4_byte_offset_inside_shared_buffers() {
    let cases = [
        OffsetCase {
            gpu: gpu(),
            k: 7,
            rows: 9,
            what: "registers",
        },
        OffsetCase {
            gpu: gpu(),
            k: 5000,
            rows: 3,
            what: "split rows",
        },
        OffsetCase {
            gpu: gpu_with_small_bindings(1024),
            k: 33,
            rows: 100,
            what: "registers, chunked",
        },
        OffsetCase {
            gpu: gpu_with_small_bindings(12_288),
            k: 5000,
            rows: 5,
            what: "split rows, chunked",
        },
    ];
    // Bytes of each region of a shared buffer: an argument sits at `offset` inside its region,
    // sentinels fill the rest (past every window's aligned start, so windows never overlap).
    let region = |bytes: u64| (bytes + 1028 + 512).next_multiple_of(256);
    let mut rng = StdRng::seed_from_u64(18);
    for case in &cases {
        let (k, rows, gpu) = (case.k, case.rows, case.gpu);
        let len = rows * k;
        let mut logits = random_logits(&mut rng, rows, k);
        logits[k + 2] = f32::NAN;
        let mut taus: Vec<f32> = (0..rows).map(|r| TAUS[r % TAUS.len()]).collect();
        taus[2] = -1.0;
        let stream = random_stream(&mut rng);
        let kernels = gpu.gumbel_softmax_kernels().unwrap();
        for format in [LogitsFormat::F32, LogitsFormat::F16, LogitsFormat::Bf16] {
            let (words, widened): (Vec<u32>, Vec<f32>) = match format {
                LogitsFormat::F32 => (bytemuck::cast_slice(&logits).to_vec(), logits.clone()),
                LogitsFormat::F16 => {
                    let b: Vec<u16> = logits.iter().map(|&x| f32_to_f16(x)).collect();
                    let w = b.iter().map(|&h| f16_to_f32(h)).collect();
                    (gumbel_wgpu::logits::pack_u16(&b), w)
                }
                LogitsFormat::Bf16 => {
                    let b: Vec<u16> = logits.iter().map(|&x| f32_to_bf16(x)).collect();
                    let w = b.iter().map(|&h| bf16_to_f32(h)).collect();
                    (gumbel_wgpu::logits::pack_u16(&b), w)
                }
            };
            let logit_bytes = format.buffer_bytes(len as u64);
            assert_eq!(logit_bytes, words.len() as u64 * 4);
            let (in_region, out_region) = (region(logit_bytes), region(len as u64 * 4));
            for per_row in [false, true] {
                let tau = if per_row {
                    Temperature::PerRow(&taus[..])
                } else {
                    Temperature::Scalar(0.7)
                };
                let tau_of = |r: usize| if per_row { taus[r] } else { 0.7 };
                for mode in [SoftmaxMode::Soft, SoftmaxMode::Hard, SoftmaxMode::Log] {
                    let what = format!("{} k {k} {format:?} per-row {per_row} {mode:?}", case.what);
                    // The job at offset 0, in buffers of its own, on the default device.
                    let (want, want_status) = {
                        let g = common::gpu();
                        let l = g.upload("logits", &words).unwrap();
                        let t = g.upload("taus", &taus).unwrap();
                        let out = poisoned(g, len);
                        let status = g.upload("status", &GumbelSoftmax::STATUS_CLEAR).unwrap();
                        let job = SoftmaxJob {
                            mode,
                            logits: LogitsView {
                                data: l.slice(..),
                                format,
                                rows: rows as u64,
                                k: k as u64,
                                stride: 0,
                            },
                            tau: match tau {
                                Temperature::PerRow(_) => Temperature::PerRow(t.slice(..)),
                                Temperature::Scalar(x) => Temperature::Scalar(x),
                            },
                            stream,
                            out: out.slice(..),
                            status: Some(status.slice(..)),
                        };
                        let kernels = g.gumbel_softmax_kernels().unwrap();
                        run(g, |enc| kernels.record(enc, &job).unwrap());
                        let got: Vec<u32> = g.read_buffer(&out, len).unwrap();
                        let st: Vec<u32> = g.read_buffer(&status, 3).unwrap();
                        (got, st)
                    };
                    let bad_tau = if per_row { 2 } else { u32::MAX };
                    assert_eq!(want_status, vec![1, u32::MAX, bad_tau], "{what}");
                    check_against_cpu(&widened, &want, k, mode, &tau_of, stream, &what);
                    for offset in [4u64, 260, 1028] {
                        // Inputs: logits in region 0, taus in region 1.
                        let mut input =
                            vec![SENTINEL; ((in_region + region(rows as u64 * 4)) / 4) as usize];
                        let at = |o: u64| (o / 4) as usize;
                        input[at(offset)..][..words.len()].copy_from_slice(&words);
                        let tau_at = in_region + offset;
                        input[at(tau_at)..][..rows].copy_from_slice(bytemuck::cast_slice(&taus));
                        let input_buf = gpu.upload("shared input", &input).unwrap();
                        // Outputs: out in region 0, status in region 1.
                        let out_len = ((out_region + region(12)) / 4) as usize;
                        let mut output = vec![SENTINEL; out_len];
                        let status_at = out_region + offset;
                        output[at(status_at)..][..3].copy_from_slice(&GumbelSoftmax::STATUS_CLEAR);
                        let output_buf = gpu.upload("shared output", &output).unwrap();
                        let job = SoftmaxJob {
                            mode,
                            logits: LogitsView {
                                data: input_buf.slice(offset..offset + logit_bytes),
                                format,
                                rows: rows as u64,
                                k: k as u64,
                                stride: 0,
                            },
                            tau: match tau {
                                Temperature::PerRow(_) => Temperature::PerRow(
                                    input_buf.slice(tau_at..tau_at + rows as u64 * 4),
                                ),
                                Temperature::Scalar(x) => Temperature::Scalar(x),
                            },
                            stream,
                            out: output_buf.slice(offset..offset + len as u64 * 4),
                            status: Some(output_buf.slice(status_at..status_at + 12)),
                        };
                        run(gpu, |enc| kernels.record(enc, &job).unwrap());
                        let what = format!("{what} offset {offset}");
                        let got_in: Vec<u32> = gpu.read_buffer(&input_buf, input.len()).unwrap();
                        assert!(got_in == input, "{what}: the input buffer changed");
                        let got: Vec<u32> = gpu.read_buffer(&output_buf, out_len).unwrap();
                        let (o, s) = (at(offset), at(status_at));
                        assert!(
                            got[o..][..len] == want[..],
                            "{what}: out differs from offset 0"
                        );
                        assert_eq!(&got[s..][..3], &want_status[..], "{what}: status");
                        for (i, &w) in got.iter().enumerate() {
                            let inside = (o..o + len).contains(&i) || (s..s + 3).contains(&i);
                            assert!(inside || w == SENTINEL, "{what}: word {i} overwritten");
                        }
                    }
                }
            }
        }
    }
}

/// The good rows of a forward output (bits) against the f64 reference: soft and log within the
/// f32 noise's error, hard one-hot where the soft reference peaks (up to a near-tie). Bad rows
/// (NaN logits, bad temperatures) are all NaN bits.
fn check_against_cpu(
    widened: &[f32],
    got: &[u32],
    k: usize,
    mode: SoftmaxMode,
    tau_of: &dyn Fn(usize) -> f32,
    stream: Stream,
    what: &str,
) {
    let rows = widened.len() / k;
    let taus: Vec<f64> = (0..rows).map(|r| f64::from(tau_of(r))).collect();
    let log = cpu::gumbel_softmax_log_per_row(widened, k, &taus, stream);
    for r in 0..rows {
        let row = &got[r * k..][..k];
        let (l, want) = (&widened[r * k..][..k], &log[r * k..][..k]);
        let tau = tau_of(r);
        if l.iter().any(|x| x.is_nan()) || !(tau.is_normal() && tau > 0.0) {
            assert!(
                row.iter().all(|&b| b == BAD_ROW_BITS),
                "{what}: bad row {r}"
            );
            continue;
        }
        let tol = 3e-4 / f64::from(tau);
        match mode {
            SoftmaxMode::Soft => {
                for (j, (&b, &w)) in row.iter().zip(want).enumerate() {
                    let y = f64::from(f32::from_bits(b));
                    assert!(
                        (y - w.exp()).abs() <= tol,
                        "{what}: y[{r}, {j}] = {y}, want {}",
                        w.exp()
                    );
                }
            }
            SoftmaxMode::Log => {
                for (j, (&b, &w)) in row.iter().zip(want).enumerate() {
                    let ly = f64::from(f32::from_bits(b));
                    let ok = if w == f64::NEG_INFINITY {
                        b == NEG_INF_BITS
                    } else {
                        (ly - w).abs() <= 1e-3 * (1.0 + w.abs()) / f64::from(tau).min(1.0)
                    };
                    assert!(ok, "{what}: log y[{r}, {j}] = {ly}, want {w}");
                }
            }
            SoftmaxMode::Hard => {
                let hot: Vec<usize> = (0..k).filter(|&j| row[j] != 0).collect();
                assert_eq!(hot.len(), 1, "{what}: row {r} not one-hot");
                assert_eq!(row[hot[0]], 1f32.to_bits(), "{what}: row {r}");
                let a = cpu::argmax(want);
                assert!(
                    hot[0] == a || want[a] - want[hot[0]] < 1e-4,
                    "{what}: row {r}: hot {} but the reference peaks at {a}",
                    hot[0]
                );
            }
        }
    }
}

#[test]
fn split_jobs_give_the_same_numbers_as_one_dispatch() {
    // As if storage bindings held 4096 elements: dispatches of whole rows (4032 / k of them,
    // less on devices with a coarser offset alignment), the stream continuing across them,
    // per-row taus and f16 logits (odd element offsets) windowed with them.
    let small = chunked_gpu(4096);
    let mut rng = StdRng::seed_from_u64(15);
    for (k, rows) in [(1usize, 20_000usize), (7, 1000), (31, 300)] {
        let logits = random_logits(&mut rng, rows, k);
        let taus: Vec<f32> = (0..rows).map(|r| TAUS[r % 4]).collect();
        let bits: Vec<u16> = logits.iter().map(|&x| f32_to_f16(x)).collect();
        let stream = random_stream(&mut rng);
        for mode in [SoftmaxMode::Soft, SoftmaxMode::Hard, SoftmaxMode::Log] {
            for input in [LogitsSlice::F32(&logits), LogitsSlice::F16(&bits)] {
                let t = Temperature::PerRow(&taus[..]);
                let split = small
                    .gumbel_softmax_with(input, k, t, mode, stream)
                    .unwrap();
                let whole = gpu()
                    .gumbel_softmax_with(input, k, t, mode, stream)
                    .unwrap();
                assert!(
                    split
                        .iter()
                        .zip(&whole)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "k {k} {mode:?}"
                );
            }
        }
    }
}

/// SoftmaxStrategy::Auto picks by shape: registers up to softmax_max_register_k(), the on-chip
/// kernel up to GumbelSoftmax::onchip_max_k(), then split rows below 128 rows and online rows
/// from 128 on. Each choice
/// is seen through bit-identical outputs (different kernels sum in different orders).
#[test]
fn auto_picks_the_kernel_by_shape() {
    let gpu = gpu();
    let mut rng = StdRng::seed_from_u64(16);
    let k_max = softmax_max_register_k() as usize;
    let onchip = onchip_max_k(gpu) as usize;
    assert!(
        onchip > k_max,
        "this device grants the on-chip kernel no room"
    );
    for (k, rows, want) in [
        (1, 300, SoftmaxStrategy::Registers),
        (64, 40, SoftmaxStrategy::Registers),
        (65, 40, SoftmaxStrategy::Registers),
        (k_max, 3, SoftmaxStrategy::Registers),
        (k_max + 1, 3, SoftmaxStrategy::OnChip),
        (onchip, 3, SoftmaxStrategy::OnChip),
        (onchip + 1, 127, SoftmaxStrategy::Split),
        (onchip + 1, 128, SoftmaxStrategy::Online),
    ] {
        let logits = random_logits(&mut rng, rows, k);
        let stream = random_stream(&mut rng);
        let call = |s| {
            let y = gpu
                .gumbel_softmax_strategy(
                    LogitsSlice::F32(&logits),
                    k,
                    Temperature::Scalar(0.5),
                    SoftmaxMode::Log,
                    stream,
                    s,
                )
                .unwrap();
            y.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(
            call(SoftmaxStrategy::Auto),
            call(want),
            "k {k} rows {rows}: {want:?}"
        );
    }
}

/// A device that allows only 100 workgroups per grid dimension, so modest jobs need the 2-D
/// grid (the real limit, 65535, takes too long to reach on software adapters).
fn gpu_with_small_grid() -> Gpu {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits {
            max_compute_workgroups_per_dimension: 100,
            ..adapter.limits()
        },
        ..Default::default()
    }))
    .unwrap();
    Gpu::from_wgpu(device, queue)
}

/// Jobs of more workgroups than one grid dimension holds; a stream whose word index wraps past
/// u64::MAX continues as the contract says.
#[test]
fn two_dimensional_grids_and_a_wrapping_stream() {
    let mut rng = StdRng::seed_from_u64(17);
    let small = gpu_with_small_grid();
    let mut worst = Worst::default();
    for (gpu, k, rows, stream, strategy) in [
        // 32 rows per workgroup (8 threads each): 104 workgroups.
        (
            &small,
            65,
            3300,
            random_stream(&mut rng),
            SoftmaxStrategy::Registers,
        ),
        (
            &small,
            3,
            30_000,
            random_stream(&mut rng),
            SoftmaxStrategy::RowPerThread,
        ),
        (
            &small,
            700,
            110,
            random_stream(&mut rng),
            SoftmaxStrategy::Online,
        ),
        // Two segments per row.
        (
            &small,
            5000,
            60,
            random_stream(&mut rng),
            SoftmaxStrategy::Split,
        ),
        (
            gpu(),
            7,
            100,
            Stream {
                seed: 3,
                offset: u64::MAX - 100,
            },
            SoftmaxStrategy::Auto,
        ),
        (
            gpu(),
            5000,
            3,
            Stream {
                seed: 4,
                offset: u64::MAX - 5001,
            },
            SoftmaxStrategy::Auto,
        ),
    ] {
        let logits = random_logits(&mut rng, rows, k);
        check_soft_and_log(
            gpu,
            &logits,
            LogitsFormat::F32,
            bytemuck::cast_slice(&logits),
            k,
            Temperature::Scalar(1.0),
            stream,
            strategy,
            &mut worst,
        );
        // Against the pure f64 reference as well (its own Philox, so the stream wraps there too).
        let y = gpu
            .gumbel_softmax_strategy(
                LogitsSlice::F32(&logits),
                k,
                Temperature::Scalar(1.0),
                SoftmaxMode::Soft,
                stream,
                strategy,
            )
            .unwrap();
        let want = cpu::gumbel_softmax(&logits, k, 1.0, stream);
        assert!(
            y.iter()
                .zip(&want)
                .all(|(&a, &b)| (f64::from(a) - b).abs() < 1e-4)
        );
    }
}

/// The largest `k` the on-chip (one-read) kernel holds on `gpu`.
fn onchip_max_k(gpu: &Gpu) -> u64 {
    gpu.gumbel_softmax_kernels().unwrap().onchip_max_k()
}

/// The shipping device, the portable runtime-checked one, and the shipping one without
/// subgroups (the workgroup-memory reductions, as on GL).
fn forward_gpus() -> Vec<&'static Gpu> {
    let mut v = gpus();
    v.push(gpu_without_subgroups());
    v
}

/// Every forward variant (subgroups or not, each workgroup-memory tier) composes and validates
/// with naga; a subgroup variant only where the device has subgroups.
#[test]
fn every_forward_variant_validates() {
    use gumbel_wgpu::shader::{ShaderConfig, compose};
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    for (needs_subgroups, spec) in GumbelSoftmax::variant_specs() {
        for cfg in ShaderConfig::all() {
            if needs_subgroups && !cfg.subgroups {
                continue;
            }
            let mut caps = Capabilities::empty();
            if cfg.int64 {
                caps |= Capabilities::SHADER_INT64;
            }
            if cfg.subgroups {
                caps |= Capabilities::SUBGROUP;
            }
            if cfg.f16 {
                caps |= Capabilities::SHADER_FLOAT16;
            }
            let src = compose(&spec, &cfg).unwrap();
            assert_eq!(
                src.contains("enable subgroups;"),
                needs_subgroups,
                "{cfg:?}"
            );
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{cfg:?}: {}", e.emit_to_string(&src)));
            Validator::new(ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| panic!("{cfg:?}: {}", e.emit_to_string(&src)));
        }
    }
}

/// The one-read kernel at and around its capacity and past the register kernel's, forced and
/// under Auto, into poisoned outputs (run_job checks the tail; every output is compared), on
/// every device configuration: soft, log and hard against the f64 reference.
#[test]
fn the_onchip_kernel_matches_the_reference_around_its_capacity() {
    let mut rng = StdRng::seed_from_u64(21);
    for gpu in forward_gpus() {
        let cap = onchip_max_k(gpu) as usize;
        assert!(cap > softmax_max_register_k() as usize);
        let mut worst = Worst::default();
        for k in [4094, 4097, 8191, 8193, cap - 1, cap, cap + 1] {
            let strategies: &[SoftmaxStrategy] = if k <= cap {
                &[SoftmaxStrategy::OnChip, SoftmaxStrategy::Auto]
            } else {
                &[SoftmaxStrategy::Auto]
            };
            for &strategy in strategies {
                let rows = 3;
                let logits = random_logits(&mut rng, rows, k);
                check_soft_and_log(
                    gpu,
                    &logits,
                    LogitsFormat::F32,
                    bytemuck::cast_slice(&logits),
                    k,
                    Temperature::Scalar(0.3),
                    random_stream(&mut rng),
                    strategy,
                    &mut worst,
                );
            }
        }
        eprintln!(
            "{}: on-chip capacity {cap}, worst {worst:?}",
            gpu.describe()
        );
    }
}

/// The on-chip kernel refuses rows past its capacity, and gives the online kernel's hard rows
/// (same argmax, exact one-hot) where both run.
#[test]
fn the_onchip_kernel_refuses_rows_it_cannot_hold_and_agrees_with_online() {
    let mut rng = StdRng::seed_from_u64(22);
    for gpu in forward_gpus() {
        let cap = onchip_max_k(gpu) as usize;
        let logits = random_logits(&mut rng, 1, cap + 1);
        let err = gpu
            .gumbel_softmax_strategy(
                LogitsSlice::F32(&logits),
                cap + 1,
                Temperature::Scalar(1.0),
                SoftmaxMode::Soft,
                Stream::new(1),
                SoftmaxStrategy::OnChip,
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        for k in [4094, cap] {
            let logits = random_logits(&mut rng, 2, k);
            let stream = random_stream(&mut rng);
            let call = |s| {
                gpu.gumbel_softmax_strategy(
                    LogitsSlice::F32(&logits),
                    k,
                    Temperature::Scalar(1.0),
                    SoftmaxMode::Hard,
                    stream,
                    s,
                )
                .unwrap()
            };
            assert_eq!(
                call(SoftmaxStrategy::OnChip),
                call(SoftmaxStrategy::Online),
                "k {k}"
            );
        }
    }
}

/// The forward's output bits for `words` read as `rows x k` logits with rows `stride` elements
/// apart (`None`: a dense view), into a poisoned `out` whose tail must stay untouched.
#[allow(clippy::too_many_arguments)]
fn strided_forward(
    gpu: &Gpu,
    mode: SoftmaxMode,
    format: LogitsFormat,
    words: &[u32],
    rows: usize,
    k: usize,
    stride: Option<usize>,
    strategy: SoftmaxStrategy,
    stream: Stream,
) -> Result<Vec<u32>, Error> {
    let len = rows * k;
    let logits = gpu.upload("logits", words).unwrap();
    let out = poisoned(gpu, len + 5);
    let mut view = LogitsView::new(logits.slice(..), format, rows as u64, k as u64);
    if let Some(s) = stride {
        view = view.with_stride(s as u64);
    }
    let job = SoftmaxJob {
        mode,
        logits: view,
        tau: Temperature::Scalar(0.7),
        stream,
        out: out.slice(..),
        status: None,
    };
    let kernels = gpu.gumbel_softmax_kernels().unwrap();
    let mut result = Ok(());
    run(gpu, |enc| result = kernels.record_with(enc, &job, strategy));
    result?;
    let got: Vec<u32> = gpu.read_buffer(&out, len + 5).unwrap();
    assert!(got[len..].iter().all(|&w| w == SENTINEL), "wrote past out");
    Ok(got[..len].to_vec())
}

#[test]
fn a_row_stride_reads_padded_logits_in_place() {
    // Rows k + pad elements apart, the pads poisoned (NaN / the largest finite value): every
    // path, format and mode gives the bits of the same job on the dense copy, also split into
    // several dispatches (a chunked adapter: windows start at unaligned, strided rows).
    let gpu = common::gpu();
    let chunked = chunked_gpu(5000);
    let mut rng = StdRng::seed_from_u64(0x5717_de16);
    let strategies = [
        SoftmaxStrategy::Auto,
        SoftmaxStrategy::RowPerThread,
        SoftmaxStrategy::Registers,
        SoftmaxStrategy::OnChip,
        SoftmaxStrategy::Online,
        SoftmaxStrategy::Split,
    ];
    let modes = [SoftmaxMode::Soft, SoftmaxMode::Hard, SoftmaxMode::Log];
    let mut runs = 0;
    for &(k, rows) in STRIDE_SHAPES {
        let logits = random_logits(&mut rng, rows, k);
        let stream = random_stream(&mut rng);
        for (f, format) in [LogitsFormat::F32, LogitsFormat::F16, LogitsFormat::Bf16]
            .into_iter()
            .enumerate()
        {
            for (s, &strategy) in strategies.iter().enumerate() {
                let mode = modes[(f + s) % 3];
                let (dense, _) = strided_words(&logits, k, 0, format);
                let want =
                    strided_forward(gpu, mode, format, &dense, rows, k, None, strategy, stream);
                for &pad in STRIDE_PADS {
                    let what =
                        format!("k {k} rows {rows} pad {pad} {format:?} {strategy:?} {mode:?}");
                    let (_, words) = strided_words(&logits, k, pad, format);
                    let got = strided_forward(
                        gpu,
                        mode,
                        format,
                        &words,
                        rows,
                        k,
                        Some(k + pad),
                        strategy,
                        stream,
                    );
                    match (&want, &got) {
                        (Ok(w), Ok(g)) => {
                            assert!(w == g, "{what}: differs from the dense view");
                            runs += 1;
                        }
                        (Err(_), Err(_)) => {} // a path that does not hold this k
                        _ => panic!(
                            "{what}: dense {:?} vs strided {:?}",
                            want.is_ok(),
                            got.is_ok()
                        ),
                    }
                    if strategy == SoftmaxStrategy::Auto && (k + pad) * 3 <= 5000 {
                        let got = strided_forward(
                            &chunked,
                            mode,
                            format,
                            &words,
                            rows,
                            k,
                            Some(k + pad),
                            strategy,
                            stream,
                        )
                        .unwrap();
                        assert!(want.as_ref().unwrap() == &got, "{what}: chunked differs");
                    }
                }
            }
        }
    }
    assert!(runs > 300, "only {runs} strided runs compared");
    // A stride below k, and a slice too short for (rows - 1) * stride + k, are errors naming
    // the logits.
    let b = gpu.upload("logits", &vec![0u32; 2 * 1000 + 10]).unwrap();
    for (stride, len, why) in [
        (999u64, 2010u64, "below k"),
        (1011, 2010, "the slice holds"),
        (1010, 2010, ""),
    ] {
        let view = LogitsView::f32(b.slice(..len * 4), 2, 1000).with_stride(stride);
        let out = poisoned(gpu, 2000);
        let job = SoftmaxJob {
            mode: SoftmaxMode::Soft,
            logits: view,
            tau: Temperature::Scalar(1.0),
            stream: Stream { seed: 1, offset: 0 },
            out: out.slice(..),
            status: None,
        };
        let kernels = gpu.gumbel_softmax_kernels().unwrap();
        let mut enc = gpu.device().create_command_encoder(&Default::default());
        match kernels.record(&mut enc, &job) {
            Ok(()) => assert!(why.is_empty(), "stride {stride}: accepted"),
            Err(e) => {
                let e = e.to_string();
                assert!(
                    !why.is_empty() && e.contains("logits") && e.contains(why),
                    "stride {stride}: {e}"
                );
            }
        }
    }
}
