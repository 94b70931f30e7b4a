//! Speculative verification's split-row path (`verify_partial` + `verify_combine` in
//! shaders/speculative.wgsl) against its one-workgroup path (`verify_row`): the draw is an exact
//! arg-max, so both must give the same accepted counts and tokens, bit for bit, for every input
//! (bad probabilities and out-of-range drafts included), noise width, stream phase and chunk
//! count; and against the f64 CPU reference where the inputs are valid.

mod common;

use common::{SENTINEL, gpu, poisoned, run};
use gumbel_wgpu::{
    Error, Gpu, NO_INDEX, Noise, SampleStrategy, SpeculativeJob, SpeculativeVerifier, Stream, cpu,
    stream_words,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Device inputs of one job (rows independent: row r uses stream r).
struct Inputs {
    rows: usize,
    n: usize,
    k: usize,
    drafts: Vec<u32>,
    q: Vec<f32>,
    p: Vec<f32>,
    streams: Vec<Stream>,
}

struct Uploaded {
    d: wgpu::Buffer,
    q: wgpu::Buffer,
    p: wgpu::Buffer,
    s: wgpu::Buffer,
}

impl Inputs {
    fn upload(&self, gpu: &Gpu) -> Uploaded {
        // A buffer of at least one word: n = 0 leaves the drafts empty.
        let words = |w: Vec<u32>| if w.is_empty() { vec![SENTINEL] } else { w };
        let bits = |x: &[f32]| words(x.iter().map(|v| v.to_bits()).collect());
        Uploaded {
            d: gpu.upload("d", &words(self.drafts.clone())).unwrap(),
            q: gpu.upload("q", &bits(&self.q)).unwrap(),
            p: gpu.upload("p", &bits(&self.p)).unwrap(),
            s: gpu
                .upload(
                    "s",
                    &self
                        .streams
                        .iter()
                        .flat_map(|&s| stream_words(s))
                        .collect::<Vec<_>>(),
                )
                .unwrap(),
        }
    }
}

/// Runs the job on `strategy` into poisoned outputs; returns (accepted, tokens), or the `Err`.
fn verify(
    gpu: &Gpu,
    inp: &Inputs,
    up: &Uploaded,
    noise: Noise,
    strategy: SampleStrategy,
) -> Result<(Vec<u32>, Vec<u32>), Error> {
    let (rows, n, k) = (inp.rows, inp.n, inp.k);
    let acc = poisoned(gpu, rows);
    let tok = poisoned(gpu, rows * (n + 1));
    let job = SpeculativeJob {
        rows: rows as u64,
        n: n as u64,
        k: k as u64,
        draft_tokens: up.d.slice(..(rows * n).max(1) as u64 * 4),
        draft_probs: up.q.slice(..(rows * n * k).max(1) as u64 * 4),
        target_probs: up.p.slice(..),
        streams: up.s.slice(..),
        accepted: acc.slice(..),
        tokens: tok.slice(..),
        noise,
    };
    let verifier = gpu.speculative_verifier()?;
    let mut result = Ok(());
    run(gpu, |enc| {
        result = verifier.record_with(enc, &job, strategy)
    });
    result?;
    Ok((
        gpu.read_buffer(&acc, rows).unwrap(),
        gpu.read_buffer(&tok, rows * (n + 1)).unwrap(),
    ))
}

/// A law of `k` entries in one of several shapes (dense, sparse, one-hot), summing to about 1.
fn law(rng: &mut StdRng, k: usize) -> Vec<f32> {
    let zeros = [0.0, 0.2, 0.98][rng.random_range(0..3)];
    let mut w: Vec<f64> = (0..k)
        .map(|_| {
            if rng.random::<f64>() < zeros {
                0.0
            } else {
                rng.random::<f64>().powi(3)
            }
        })
        .collect();
    if w.iter().all(|&x| x == 0.0) {
        w[rng.random_range(0..k)] = 1.0;
    }
    let s: f64 = w.iter().sum();
    w.iter().map(|x| (x / s) as f32).collect()
}

fn draw_from(rng: &mut StdRng, law: &[f32]) -> u32 {
    let s: f64 = law.iter().map(|&x| f64::from(x)).sum();
    let mut u = rng.random::<f64>() * s;
    for (j, &x) in law.iter().enumerate() {
        u -= f64::from(x);
        if u < 0.0 && x > 0.0 {
            return j as u32;
        }
    }
    law.iter().rposition(|&x| x > 0.0).unwrap() as u32
}

/// How a row's target laws relate to its draft laws.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Independent laws: drafts accepted or rejected at random.
    Independent,
    /// p = q: every draft accepted, then the bonus draw from p_n.
    Equal,
    /// p = q / 2: drafts accepted half the time, and a rejection's residual is all zero (the
    /// draw falls back to p_i).
    Half,
    /// Independent laws and an out-of-range draft (>= k) at a random position.
    OutOfRange,
    /// Independent laws positive only on the elements of the blocks on either side of each
    /// chunk boundary (the blocks' first words, [`boundary_support`]) of the split counts tried:
    /// a wide row's draw then lands at a boundary, where a chunk could drop or repeat a block.
    Boundary,
}

const MODES: [Mode; 5] = [
    Mode::Independent,
    Mode::Equal,
    Mode::Half,
    Mode::OutOfRange,
    Mode::Boundary,
];

/// The categories of position i's draw whose first noise word lies in a block next to a chunk
/// boundary for one of `chunk_counts` (the contract of shaders/speculative.wgsl: the draw's
/// words start at word per * i * (k + 1) of the stream, lane `phase` of its first block, and
/// chunks take ceil(blocks / chunks) whole blocks each).
fn boundary_support(k: usize, per: usize, offset: u64, i: usize, counts: &[usize]) -> Vec<usize> {
    let phase = (offset.wrapping_add((per * i * (k + 1)) as u64) % 4) as usize;
    let blocks = (phase + per * k).div_ceil(4);
    let mut js = Vec::new();
    for &c in counts {
        let per_chunk = blocks.div_ceil(c);
        for m in 1..c {
            let b = m * per_chunk;
            for block in b.saturating_sub(1)..(b + 1).min(blocks) {
                for s in 4 * block..4 * block + 4 {
                    if s >= phase && (s - phase).is_multiple_of(per) && (s - phase) / per < k {
                        js.push((s - phase) / per);
                    }
                }
            }
        }
    }
    js.sort_unstable();
    js.dedup();
    js
}

/// A law positive only on `support` (all of `0..k` if it is empty).
fn law_on(rng: &mut StdRng, k: usize, support: &[usize]) -> Vec<f32> {
    if support.is_empty() {
        return law(rng, k);
    }
    let mut w = vec![0.0f32; k];
    for &j in support {
        w[j] = rng.random_range(0.01..1.0);
    }
    w
}

/// Fresh random inputs: row r takes mode `modes[r]` and a stream whose offset has phase
/// `phases[r]` (mod 4); `chunk_counts` are the split counts [`Mode::Boundary`] aims at.
fn inputs(
    rng: &mut StdRng,
    k: usize,
    n: usize,
    modes: &[Mode],
    phases: &[u64],
    noise: Noise,
    chunk_counts: &[usize],
) -> Inputs {
    let rows = modes.len();
    let per = if noise == Noise::Bits64 { 2 } else { 1 };
    let streams: Vec<Stream> = phases
        .iter()
        .map(|&ph| Stream {
            seed: rng.random(),
            offset: ((rng.random::<u64>() >> 1) & !3) + ph,
        })
        .collect();
    let (mut drafts, mut q, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for (&mode, stream) in modes.iter().zip(&streams) {
        let support = |i| match mode {
            Mode::Boundary => boundary_support(k, per, stream.offset, i, chunk_counts),
            _ => Vec::new(),
        };
        let qs: Vec<Vec<f32>> = (0..n).map(|i| law_on(rng, k, &support(i))).collect();
        for ql in &qs {
            drafts.push(draw_from(rng, ql));
            q.extend_from_slice(ql);
        }
        for i in 0..=n {
            match (mode, qs.get(i)) {
                (Mode::Equal, Some(ql)) => p.extend_from_slice(ql),
                (Mode::Half, Some(ql)) => p.extend(ql.iter().map(|x| x * 0.5)),
                _ => p.extend(law_on(rng, k, &support(i))),
            }
        }
        if let Mode::OutOfRange = mode
            && n > 0
        {
            let at = drafts.len() - n + rng.random_range(0..n);
            drafts[at] = [k as u32, k as u32 + 1, u32::MAX][rng.random_range(0..3)];
        }
    }
    Inputs {
        rows,
        n,
        k,
        drafts,
        q,
        p,
        streams,
    }
}

/// The CPU reference for row r alone (rows are independent).
fn cpu_row(inp: &Inputs, r: usize, noise: Noise) -> (u32, Vec<u32>) {
    let (n, k) = (inp.n, inp.k);
    let want = cpu::verify_speculative_with(
        &inp.drafts[r * n..(r + 1) * n],
        &inp.q[r * n * k..(r + 1) * n * k],
        &inp.p[r * (n + 1) * k..(r + 1) * (n + 1) * k],
        k,
        &inp.streams[r..r + 1],
        noise,
    )
    .unwrap();
    (want.accepted[0], want.tokens)
}

/// The split path's chunk counts tried on every shape: 1, small counts (3 and 7 leave a short
/// last chunk on most rows; on k = 1 some chunks are empty), the count chosen from the shape
/// (0), and `Auto` (the split path from k = 8192 at these row counts).
const PATHS: [SampleStrategy; 6] = [
    SampleStrategy::SplitRow { chunks: 1 },
    SampleStrategy::SplitRow { chunks: 2 },
    SampleStrategy::SplitRow { chunks: 3 },
    SampleStrategy::SplitRow { chunks: 7 },
    SampleStrategy::SplitRow { chunks: 0 },
    SampleStrategy::Auto,
];

/// (name, k, n): drafts per row fewer for the wide rows (the inputs are rows x (n + 1) x k).
const SHAPES: &[(&str, usize, usize)] = &[
    ("k1", 1, 3),
    ("k31", 31, 3),
    ("k4097", 4097, 3),
    ("k65537", 65537, 2),
    ("k262147", 262_147, 1),
    // No drafts: only the bonus draw, on the split path from k = 8192 under Auto.
    ("k8193n0", 8193, 0),
];

fn split_matches_one_workgroup(name: &str, k: usize, n: usize) {
    // The shipping device (the subgroup arg-max where the adapter has subgroups), the portable
    // runtime-checked one, and one without subgroups (the workgroup-memory tree).
    let devices = [
        gpu(),
        common::gpu_without_int64(),
        common::gpu_without_subgroups(),
    ];
    let mut rng = StdRng::seed_from_u64(0x5b11 ^ k as u64);
    let mut phases_seen = [[false; 4]; 2];
    let (mut stops, mut bonus, mut fallbacks, mut out_of_range) = (0, 0, 0, 0);
    for rows in 1..=5usize {
        for (w, noise) in [Noise::Bits32, Noise::Bits64].into_iter().enumerate() {
            let modes: Vec<Mode> = (0..rows)
                .map(|r| MODES[(r + rows + w) % MODES.len()])
                .collect();
            let phases: Vec<u64> = (0..rows).map(|r| ((r + rows + w) % 4) as u64).collect();
            for &ph in &phases {
                phases_seen[w][ph as usize] = true;
            }
            let auto = match SpeculativeVerifier::strategy_for(
                rows as u64,
                k as u64,
                SampleStrategy::SplitRow { chunks: 0 },
            ) {
                SampleStrategy::SplitRow { chunks } => chunks as usize,
                s => panic!("{s:?}"),
            };
            let inp = inputs(&mut rng, k, n, &modes, &phases, noise, &[2, 3, 7, auto]);
            for (g, &gpu) in devices.iter().enumerate() {
                let up = inp.upload(gpu);
                let what = format!("{name} rows {rows} n {n} {noise:?} device {g}");
                let (acc, tok) = verify(gpu, &inp, &up, noise, SampleStrategy::RowPerWorkgroup)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(
                    !acc.contains(&SENTINEL) && !tok.contains(&SENTINEL),
                    "{what}"
                );
                for (r, mode) in modes.iter().enumerate() {
                    let a = acc[r] as usize;
                    let row = &tok[r * (n + 1)..(r + 1) * (n + 1)];
                    if let Mode::OutOfRange = mode
                        && n > 0
                    {
                        out_of_range += usize::from(row[a] == NO_INDEX);
                        continue;
                    }
                    // Valid rows: the one-workgroup path is the CPU reference's exactly.
                    let (want_a, want_t) = cpu_row(&inp, r, noise);
                    assert_eq!((acc[r], row), (want_a, &want_t[..]), "{what} row {r} CPU");
                    stops += usize::from(a < n);
                    bonus += usize::from(a == n);
                    fallbacks += usize::from(matches!(mode, Mode::Half) && a < n);
                }
                for strategy in PATHS {
                    let got = verify(gpu, &inp, &up, noise, strategy)
                        .unwrap_or_else(|e| panic!("{what} {strategy:?}: {e}"));
                    assert_eq!(got.0, acc, "{what} {strategy:?}: accepted");
                    assert_eq!(got.1, tok, "{what} {strategy:?}: tokens");
                }
            }
        }
    }
    eprintln!(
        "{name}: {stops} rejections, {bonus} bonus draws, {fallbacks} residual fallbacks, \
         {out_of_range} out-of-range stops"
    );
    // Every phase of both noise widths, and each kind of ending, was exercised.
    assert!(phases_seen.iter().flatten().all(|&s| s), "{name}");
    assert!(bonus > 0, "{name}");
    assert!(
        n == 0 || stops > 0 && fallbacks > 0 && out_of_range > 0,
        "{name}"
    );
}

macro_rules! shape_tests {
    ($($test:ident: $i:expr;)*) => {$(
        #[test]
        fn $test() {
            let (name, k, n) = SHAPES[$i];
            split_matches_one_workgroup(name, k, n);
        }
    )*};
}

shape_tests! {
    split_matches_one_workgroup_k1: 0;
    split_matches_one_workgroup_k31: 1;
    split_matches_one_workgroup_k4097: 2;
    split_matches_one_workgroup_k65537: 3;
    split_matches_one_workgroup_k262147: 4;
    split_matches_one_workgroup_k8193_without_drafts: 5;
}

/// A bad probability (NaN, infinite, negative) in the law drawn where the walk stops, or in the
/// walk itself, gives the same defined output on both paths: `accepted` the stop position and
/// `NO_INDEX` from it (as `tests/bad_values.rs` states for the one-workgroup path). Each row
/// plants one bad value at a random index of the law its forced walk reaches.
#[test]
fn bad_probabilities_give_the_same_output_on_both_paths() {
    let gpu = gpu();
    let bad_values = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -1.0,
        -1e-40,
    ];
    let mut rng = StdRng::seed_from_u64(0xbad5);
    // (name, k, n, rows): every case below in each shape.
    let table: &[(&str, usize, usize, usize)] = &[
        ("k31", 31, 2, 5),
        ("k4097", 4097, 2, 5),
        ("k65537", 65537, 2, 5),
    ];
    for &(name, k, n, rows) in table {
        for noise in [Noise::Bits32, Noise::Bits64] {
            let modes = vec![Mode::Independent; rows];
            let phases: Vec<u64> = (0..rows as u64).map(|r| r % 4).collect();
            let mut inp = inputs(&mut rng, k, n, &modes, &phases, noise, &[]);
            // Where each row must stop.
            let mut stop = Vec::new();
            for r in 0..rows {
                stop.push(if r % 5 == 2 { n } else { 0 });
                let v = bad_values[rng.random_range(0..bad_values.len())];
                let d0 = inp.drafts[r * n] as usize;
                let at = rng.random_range(0..k);
                let prow = |i: usize| (r * (n + 1) + i) * k;
                let qrow = |i: usize| (r * n + i) * k;
                match r % 5 {
                    // A forced rejection at 0 (p_0(d_0) = 0), a bad residual entry (p or q).
                    0 | 1 => {
                        inp.p[prow(0) + d0] = 0.0;
                        let at = if at == d0 { (at + 1) % k } else { at };
                        if r % 5 == 0 {
                            inp.q[qrow(0) + at] = v;
                        } else {
                            inp.p[prow(0) + at] = v;
                        }
                    }
                    // Forced acceptances (q_i(d_i) = 0 < p_i(d_i)), a bad entry of p_n.
                    2 => {
                        for i in 0..n {
                            let d = inp.drafts[r * n + i] as usize;
                            inp.q[qrow(i) + d] = 0.0;
                            inp.p[prow(i) + d] = 0.5;
                        }
                        inp.p[prow(n) + at] = v;
                    }
                    // The walk reads a bad p_0(d_0).
                    3 => inp.p[prow(0) + d0] = v,
                    // A bad q_0(d_0).
                    _ => inp.q[qrow(0) + d0] = v,
                }
            }
            let up = inp.upload(gpu);
            let what = format!("{name} {noise:?}");
            let (acc, tok) =
                verify(gpu, &inp, &up, noise, SampleStrategy::RowPerWorkgroup).unwrap();
            for r in 0..rows {
                let row = &tok[r * (n + 1)..(r + 1) * (n + 1)];
                assert_eq!(acc[r] as usize, stop[r], "{what} row {r}");
                assert_eq!(row[..stop[r]], inp.drafts[r * n..r * n + stop[r]], "{what}");
                assert!(row[stop[r]..].iter().all(|&t| t == NO_INDEX), "{what}");
            }
            for strategy in PATHS {
                let got = verify(gpu, &inp, &up, noise, strategy).unwrap();
                assert_eq!(got, (acc.clone(), tok.clone()), "{what} {strategy:?}");
            }
        }
    }
}

#[test]
fn auto_splits_few_long_rows_only() {
    let auto = |rows, k| SpeculativeVerifier::strategy_for(rows, k, SampleStrategy::Auto);
    assert!(
        matches!(auto(1, 131_072), SampleStrategy::SplitRow { chunks } if chunks > 1),
        "{:?}",
        auto(1, 131_072)
    );
    assert_eq!(auto(256, 1000), SampleStrategy::RowPerWorkgroup);
    assert_eq!(auto(256, 131_072), SampleStrategy::RowPerWorkgroup);
    assert_eq!(auto(1, 4097), SampleStrategy::RowPerWorkgroup);
    // A forced chunk count is kept; 0 is chosen from the shape.
    let forced =
        |chunks| SpeculativeVerifier::strategy_for(1, 131_072, SampleStrategy::SplitRow { chunks });
    assert_eq!(forced(5), SampleStrategy::SplitRow { chunks: 5 });
    assert_eq!(forced(0), auto(1, 131_072));
}

#[test]
fn paths_other_than_row_or_split_are_an_error() {
    let gpu = gpu();
    let mut rng = StdRng::seed_from_u64(3);
    let inp = inputs(
        &mut rng,
        5,
        1,
        &[Mode::Independent],
        &[0],
        Noise::Bits32,
        &[],
    );
    let up = inp.upload(gpu);
    for strategy in [
        SampleStrategy::RowPerThread,
        SampleStrategy::RowPerSegment { threads: 4 },
    ] {
        match verify(gpu, &inp, &up, Noise::Bits32, strategy) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("strategy"), "{m}"),
            other => panic!("{strategy:?}: {other:?}"),
        }
    }
}
