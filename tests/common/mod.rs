//! Shared test fixtures: one real wgpu device per test binary (lavapipe, llvmpipe GL, or a GPU),
//! sentinel-poisoned buffers, and statistics.
#![allow(dead_code)]

use gumbel_wgpu::{Gpu, GpuOptions};
use rand::{RngExt, rngs::StdRng};
use std::sync::OnceLock;

/// The device under test. A test that needs an adapter fails loudly when none is found.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::new().unwrap_or_else(|e| panic!("tests need a wgpu adapter: {e}"));
        eprintln!("testing on {}", gpu.describe());
        gpu
    })
}

/// The same adapter opened without 64-bit integers, with wgpu's runtime checks on (bounds
/// checks, loop counters, zero-initialised workgroup memory): kernels take the portable Philox
/// path, compiled the checked way. [`gpu`] is the shipping configuration: unchecked.
pub fn gpu_without_int64() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::with_options(GpuOptions {
            int64: false,
            runtime_checks: true,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("tests need a wgpu adapter: {e}"))
    })
}

/// The same adapter without subgroup operations: every reduction takes its workgroup-memory
/// path (GL has no subgroups at all).
pub fn gpu_without_subgroups() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        Gpu::with_options(GpuOptions {
            subgroups: false,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("tests need a wgpu adapter: {e}"))
    })
}

/// The shipping configuration and the portable, runtime-checked one: every kernel tested on
/// both runs both ways (and both Philox multiply paths where the adapter has int64).
pub fn gpus() -> Vec<&'static Gpu> {
    vec![gpu(), gpu_without_int64()]
}

/// The value unwritten output elements hold: a NaN payload no kernel produces.
pub const SENTINEL: u32 = 0x7fc0_dead;

/// Where the next output region may start in a buffer shared by outputs, `words` from its
/// start: outputs must lie in different 256-byte blocks (a kernel binds from the offset rounded
/// down to the storage alignment, and writable bindings must not overlap).
pub fn apart(words: usize) -> usize {
    words.next_multiple_of(64)
}

/// A storage buffer of `len` elements, every one set to [`SENTINEL`].
pub fn poisoned(gpu: &Gpu, len: usize) -> wgpu::Buffer {
    gpu.upload("poisoned", &vec![SENTINEL; len]).unwrap()
}

/// Records with `record`, submits and waits, through [`Gpu::submit`]: on GL its device lock
/// keeps the test threads sharing one `Gpu` from timing out on wgpu's GL context lock.
pub fn run(gpu: &Gpu, record: impl FnOnce(&mut wgpu::CommandEncoder)) {
    gpu.submit(|enc| {
        record(enc);
        Ok(())
    })
    .unwrap();
}

/// The awkward sizes every kernel is swept over: around workgroup and block boundaries.
pub const AWKWARD_SIZES: &[usize] = &[
    1, 2, 3, 4, 5, 31, 33, 255, 256, 257, 1023, 1025, 4097, 65537,
];

/// Kolmogorov-Smirnov statistic sqrt(n) * D of `samples` against the continuous `cdf`.
pub fn ks_statistic(samples: &mut [f64], cdf: impl Fn(f64) -> f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let n = samples.len() as f64;
    let mut d: f64 = 0.0;
    for (i, &x) in samples.iter().enumerate() {
        let f = cdf(x);
        d = d.max(f - i as f64 / n).max((i + 1) as f64 / n - f);
    }
    d * n.sqrt()
}

/// Critical value of sqrt(n) * D for significance 0.001 (asymptotic Kolmogorov law).
pub const KS_CRITICAL_0_001: f64 = 1.9495;

/// Random logits in [-4, 4) with about `masked` of them -inf, every row keeping one finite entry.
pub fn masked_logits(rng: &mut StdRng, rows: usize, k: usize, masked: f64) -> Vec<f32> {
    let mut l: Vec<f32> = (0..rows * k)
        .map(|_| {
            if rng.random::<f64>() < masked {
                f32::NEG_INFINITY
            } else {
                rng.random_range(-4.0f32..4.0)
            }
        })
        .collect();
    for r in 0..rows {
        let j = rng.random_range(0..k);
        if l[r * k + j] == f32::NEG_INFINITY {
            l[r * k + j] = 0.5;
        }
    }
    l
}

/// Buffers shared with other data: the job's inputs one after the other in one buffer, the
/// first at byte `offset`, each followed by a 12-byte gap (so the others sit at offsets that are
/// multiples of 4 and rarely of 256); the output at byte `offset` of a second buffer, followed
/// by other data. (wgpu forbids one buffer bound read-only and read-write in one dispatch, so
/// inputs and the output cannot share a buffer.) Every other word holds [`SENTINEL`].
pub struct Arena {
    pub inputs: Placed,
    pub outputs: Placed,
}

pub struct Placed {
    pub buffer: wgpu::Buffer,
    /// Byte range of each region.
    pub regions: Vec<std::ops::Range<u64>>,
    pub initial: Vec<u32>,
}

pub fn place(gpu: &Gpu, offset: u64, regions: &[&[u32]]) -> Placed {
    let mut initial = vec![SENTINEL; (offset / 4) as usize];
    let mut ranges = Vec::new();
    for data in regions {
        let start = initial.len() as u64 * 4;
        initial.extend_from_slice(data);
        ranges.push(start..start + data.len() as u64 * 4);
        initial.extend_from_slice(&[SENTINEL; 3]);
    }
    initial.extend_from_slice(&[SENTINEL; 5]);
    Placed {
        buffer: gpu.upload("arena", &initial).unwrap(),
        regions: ranges,
        initial,
    }
}

pub fn arena(gpu: &Gpu, offset: u64, regions: &[&[u32]], out_words: usize) -> Arena {
    let other: Vec<u32> = (0..100u32).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    Arena {
        inputs: place(gpu, offset, regions),
        outputs: place(gpu, offset, &[&vec![SENTINEL; out_words], &other]),
    }
}

impl Arena {
    /// Input `i`, or the output for `i` = the number of inputs.
    pub fn slice(&self, i: usize) -> wgpu::BufferSlice<'_> {
        match self.inputs.regions.get(i) {
            Some(r) => self.inputs.buffer.slice(r.clone()),
            None => self.outputs.buffer.slice(self.outputs.regions[0].clone()),
        }
    }

    /// The output's words, after checking every other word of both buffers is untouched.
    pub fn output(&self, gpu: &Gpu, what: &str) -> Vec<u32> {
        let now: Vec<u32> = gpu
            .read_buffer(&self.inputs.buffer, self.inputs.initial.len())
            .unwrap();
        assert!(now == self.inputs.initial, "{what}: the inputs changed");
        let now: Vec<u32> = gpu
            .read_buffer(&self.outputs.buffer, self.outputs.initial.len())
            .unwrap();
        let out = &self.outputs.regions[0];
        let (a, b) = ((out.start / 4) as usize, (out.end / 4) as usize);
        for (i, (&w, &w0)) in now.iter().zip(&self.outputs.initial).enumerate() {
            if !(a..b).contains(&i) {
                assert_eq!(w, w0, "{what}: word {i} outside the output changed");
            }
        }
        now[a..b].to_vec()
    }
}

/// The adapter opened as if its storage bindings held `elements` 4-byte elements: jobs are split
/// into several dispatches of whole rows (the binding windows start at unaligned rows).
pub fn chunked_gpu(elements: u64) -> Gpu {
    Gpu::with_options(GpuOptions {
        max_chunk_elements: Some(elements),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("tests need a wgpu adapter: {e}"))
}

/// The strided-logits tables of the forward, backward and density tests: the pads between rows
/// and the (k, rows) shapes (one row at k = 70000).
pub const STRIDE_PADS: &[usize] = &[0, 1, 3, 64];
pub const STRIDE_SHAPES: &[(usize, usize)] = &[
    (1, 300),
    (3, 200),
    (33, 70),
    (257, 40),
    (4097, 3),
    (70000, 1),
];

/// `values` (`rows x k`, dense) in `format` twice, as words: dense, and with rows `k + pad`
/// elements apart (a pad after the last row too), every pad element poisoned (alternately NaN and
/// the format's largest finite value, which no kernel may read). 16-bit formats are rounded to
/// nearest, and an odd stride puts rows at half-word offsets.
pub fn strided_words(
    values: &[f32],
    k: usize,
    pad: usize,
    format: gumbel_wgpu::LogitsFormat,
) -> (Vec<u32>, Vec<u32>) {
    use gumbel_wgpu::LogitsFormat;
    use gumbel_wgpu::logits::{f32_to_bf16, f32_to_f16, pack_u16};
    let poison = |i: usize| i.is_multiple_of(2);
    let mut dense = Vec::new();
    let mut strided = Vec::new();
    match format {
        LogitsFormat::F32 => {
            for row in values.chunks(k) {
                dense.extend(row.iter().map(|x| x.to_bits()));
                strided.extend(row.iter().map(|x| x.to_bits()));
                strided.extend((0..pad).map(|i| {
                    if poison(i) {
                        0x7fc0_0000
                    } else {
                        f32::MAX.to_bits()
                    }
                }));
            }
        }
        LogitsFormat::F16 | LogitsFormat::Bf16 => {
            let (round, nan, max): (fn(f32) -> u16, u16, u16) = if format == LogitsFormat::F16 {
                (f32_to_f16, 0x7e00, 0x7bff)
            } else {
                (f32_to_bf16, 0x7fc0, 0x7f7f)
            };
            let mut d = Vec::new();
            let mut s = Vec::new();
            for row in values.chunks(k) {
                d.extend(row.iter().map(|&x| round(x)));
                s.extend(row.iter().map(|&x| round(x)));
                s.extend((0..pad).map(|i| if poison(i) { nan } else { max }));
            }
            dense = pack_u16(&d);
            strided = pack_u16(&s);
        }
    }
    (dense, strided)
}

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
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
    let x = x - 1.0;
    let t = x + 7.5;
    let s = C[0] + (1..9).map(|i| C[i] / (x + i as f64)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// The regularised upper incomplete gamma Q(a, x) (series below a + 1, continued fraction above).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut term, mut sum, mut n) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term < sum * 1e-16 {
                break;
            }
        }
        1.0 - front * sum
    } else {
        // Lentz's method for the continued fraction.
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            d = if d.abs() < tiny { tiny } else { d };
            c = b + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        front * h
    }
}

/// Pearson's chi-square of `counts` against probabilities `p` (summing to 1): cells pooled in
/// increasing order of expected count until each bin expects at least 5. Returns the p-value.
pub fn chi_square_p_value(counts: &[u64], p: &[f64]) -> f64 {
    let n: u64 = counts.iter().sum();
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (expected, observed)
    let (mut e, mut o) = (0.0, 0.0);
    for &i in &order {
        e += p[i] * n as f64;
        o += counts[i] as f64;
        if e >= 5.0 {
            bins.push((e, o));
            (e, o) = (0.0, 0.0);
        }
    }
    if e > 0.0 || o > 0.0 {
        let last = bins.last_mut().expect("at least one bin");
        last.0 += e;
        last.1 += o;
    }
    assert!(bins.len() >= 2, "too few draws for a chi-square test");
    let stat: f64 = bins.iter().map(|(e, o)| (o - e) * (o - e) / e).sum();
    let dof = (bins.len() - 1) as f64;
    gamma_q(dof / 2.0, stat / 2.0)
}

/// The word positions `w` of `Stream { seed, offset: 0 }` whose word is below 2^12, in order
/// (about one in 2^20). As the high word of a two-word element (`Noise::Bits64`), such a word
/// leaves the low word `w + 1` moving the element's noise by up to about 2^-12 (typically
/// 1e-4): the tests that must see the low word read set them up.
pub fn small_high_words(seed: u64) -> impl Iterator<Item = u64> {
    use rand::Rng;
    let mut words = gumbel_wgpu::Philox4x32::from_stream(gumbel_wgpu::Stream { seed, offset: 0 });
    (0u64..).filter(move |_| words.next_u32() < 1 << 12)
}
