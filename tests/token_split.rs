//! The token sampler's two paths give the same results bit for bit: one workgroup per row (every
//! pass in one dispatch) and each row spread over many workgroups (one dispatch per pass), on
//! every stage of the chain, at awkward sizes (k = 1, 31, 4097, 65537, 262147; rows 1 to 5),
//! with several chunk counts (1, 3, 7 and the automatic one) and poisoned outputs. Every
//! aggregate over a row is exact (shaders/common/token_core.wgsl), so nothing may differ: not
//! the token, nor a log-probability's last bit, the top n, the status, the rank or the law.
//! The reference semantics are tested against f64 in tests/tokens.rs and tests/token_chain.rs.

mod common;

use common::{SENTINEL, apart, gpu, poisoned, run};
use gumbel_wgpu::tokens::{mask_words, penalty_state};
use gumbel_wgpu::{
    LogitsView, LogprobsMode, Noise, RowSampling, Stream, TokenBias, TokenChain, TokenFilters,
    TokenJob, TokenRowParams, TokenSampler, TokenStrategy,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const SIZES: &[usize] = &[1, 31, 4097, 65537, 262147];
/// Chunk counts of the split path, taken in turn over the (k, rows) cases (0: automatic; 7
/// leaves a short last chunk at every size above).
const CHUNKS: &[u32] = &[3, 0, 7, 1];

/// One setting of the table: the rows' parameters and which parts of the job are on.
#[derive(Clone, Copy)]
struct Setting {
    /// Row r's parameters at k (before the stream).
    row: fn(&mut StdRng, usize, usize) -> RowSampling,
    /// Mask, bias and penalty state.
    chain: bool,
    /// Top-n log-probabilities.
    n: usize,
    mode: LogprobsMode,
    noise: Noise,
    /// The final law (record_probabilities) instead of ranks.
    law: bool,
    /// Logits rounded to bf16 precision: many ties at every cut.
    ties: bool,
    /// Rows with bad parameters, a NaN logit, or nothing finite, among good ones.
    bad_rows: bool,
}

const BASE: Setting = Setting {
    row: |_, _, _| RowSampling::new(0.9),
    chain: false,
    n: 5,
    mode: LogprobsMode::Raw,
    noise: Noise::Bits32,
    law: false,
    ties: false,
    bad_rows: false,
};

fn temperature(rng: &mut StdRng) -> f32 {
    rng.random_range(0.5f32..1.5)
}

/// The setting's outputs on one path: tokens, log-probabilities, top pairs, statuses, and the
/// ranks or the law, as words.
#[allow(clippy::too_many_arguments)]
fn outputs(
    s: &Setting,
    logits: &[f32],
    rows: usize,
    k: usize,
    params: &[TokenRowParams],
    chain: Option<&ChainInputs>,
    filters: TokenFilters,
    strategy: TokenStrategy,
) -> Vec<Vec<u32>> {
    let gpu = gpu();
    let n = s.n.min(k);
    let lb = gpu
        .upload(
            "logits",
            &logits.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        )
        .unwrap();
    let pb = gpu.upload("params", params).unwrap();
    let per = [
        rows,
        rows,
        2 * rows * n,
        rows,
        if s.law { rows * k } else { rows },
    ];
    let mut at = vec![0usize];
    for p in per {
        at.push(at.last().unwrap() + apart(p.max(1)));
    }
    let out = poisoned(gpu, *at.last().unwrap());
    let region = |i: usize| out.slice(at[i] as u64 * 4..(at[i] + per[i].max(1)) as u64 * 4);
    let cb = chain.map(ChainInputs::buffers);
    let job = TokenJob {
        logprobs: Some(region(1)),
        top_n: n as u32,
        top: (n > 0).then(|| region(2)),
        status: Some(region(3)),
        noise: s.noise,
        chain: match &cb {
            Some(b) => TokenChain {
                allowed: Some(b[0].slice(..)),
                bias: Some(TokenBias {
                    starts: b[1].slice(..),
                    entries: b[2].slice(..),
                }),
                penalty_state: Some(b[3].slice(..)),
            },
            None => TokenChain::default(),
        },
        ranks: (!s.law).then(|| region(4)),
        logprobs_mode: s.mode,
        filters,
        strategy,
        ..TokenJob::new(
            LogitsView::f32(lb.slice(..), rows as u64, k as u64),
            pb.slice(..),
            region(0),
        )
    };
    let sampler: std::sync::Arc<TokenSampler> = gpu.token_sampler().unwrap();
    run(gpu, |enc| {
        if s.law {
            sampler.record_probabilities(enc, &job, region(4)).unwrap()
        } else {
            sampler.record(enc, &job).unwrap()
        }
    });
    let words: Vec<u32> = gpu.read_buffer(&out, *at.last().unwrap()).unwrap();
    (0..5)
        .map(|i| words[at[i]..at[i] + per[i]].to_vec())
        .collect()
}

/// The chain's device inputs (mask, bias starts and entries, penalty state), as words.
struct ChainInputs([Vec<u32>; 4]);

impl ChainInputs {
    fn random(rng: &mut StdRng, rows: usize, k: usize) -> Self {
        let mut allowed = vec![0u32; rows * mask_words(k)];
        for r in 0..rows {
            for j in 0..k {
                if rng.random_range(0.0..1.0) < 0.9 {
                    allowed[r * mask_words(k) + j / 32] |= 1 << (j % 32);
                }
            }
        }
        let (mut starts, mut entries, mut state) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rows {
            starts.push((entries.len() / 2) as u32);
            for _ in 0..rng.random_range(0..4) {
                entries.extend([
                    rng.random_range(0..k as u32),
                    rng.random_range(-3.0f32..3.0).to_bits(),
                ]);
            }
            let hist = |rng: &mut StdRng| -> Vec<u32> {
                (0..rng.random_range(0..20))
                    .map(|_| rng.random_range(0..k as u32))
                    .collect()
            };
            let (prompt, output) = (hist(rng), hist(rng));
            state.extend(penalty_state(k, &prompt, &output).unwrap());
        }
        starts.push((entries.len() / 2) as u32);
        entries.extend([0, 0]); // never empty
        ChainInputs([allowed, starts, entries, state])
    }

    fn buffers(&self) -> Vec<wgpu::Buffer> {
        self.0
            .iter()
            .map(|w| gpu().upload("chain", w).unwrap())
            .collect()
    }
}

/// Every size and row count: the split path (a chunk count in turn) equals the one-workgroup
/// path word for word, and no output word is left poisoned.
fn check(name: &str, s: Setting, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut case = 0;
    for &k in SIZES {
        for rows in 1..=5usize {
            let mut logits: Vec<f32> = (0..rows * k)
                .map(|_| rng.random_range(-6.0f32..6.0) + rng.random_range(-6.0f32..6.0))
                .collect();
            if s.ties {
                for x in &mut logits {
                    *x = f32::from_bits(x.to_bits() & 0xffff_0000);
                }
            }
            // A few masked entries everywhere.
            for _ in 0..rows * k / 50 {
                logits[rng.random_range(0..rows * k)] = f32::NEG_INFINITY;
            }
            let mut rp: Vec<RowSampling> = (0..rows).map(|r| (s.row)(&mut rng, r, k)).collect();
            if s.bad_rows {
                for (r, p) in rp.iter_mut().enumerate() {
                    match r % 4 {
                        1 => p.temperature = f32::NAN,
                        2 => logits[r * k + k / 2] = f32::NAN,
                        3 => logits[r * k..(r + 1) * k].fill(f32::NEG_INFINITY),
                        _ => {}
                    }
                }
            }
            let params: Vec<TokenRowParams> = rp
                .iter()
                .enumerate()
                .map(|(r, p)| {
                    let stream = Stream {
                        seed: rng.random(),
                        // Every Philox phase, and offsets whose blocks cross 2^32 words.
                        offset: (rng.random::<u64>() & !3) | ((r + case) % 4) as u64,
                    };
                    TokenRowParams::new(*p, stream)
                })
                .collect();
            let chain = s.chain.then(|| ChainInputs::random(&mut rng, rows, k));
            let chunks = CHUNKS[case % CHUNKS.len()];
            // Every other case names exactly the filters its rows use (fewer split passes).
            let filters = if case % 2 == 1 {
                TokenFilters::of(&params, k as u64)
            } else {
                TokenFilters::ALL
            };
            case += 1;
            let path = |strategy| {
                outputs(
                    &s,
                    &logits,
                    rows,
                    k,
                    &params,
                    chain.as_ref(),
                    filters,
                    strategy,
                )
            };
            let one = path(TokenStrategy::RowPerWorkgroup);
            let split = path(TokenStrategy::SplitRow { chunks });
            let what = ["tokens", "logprobs", "top", "status", "ranks / law"];
            for (i, (a, b)) in one.iter().zip(&split).enumerate() {
                assert!(
                    a.iter().all(|&w| w != SENTINEL),
                    "{name}: k {k} rows {rows}: {} left unwritten",
                    what[i]
                );
                if let Some(j) = (0..a.len()).find(|&j| a[j] != b[j]) {
                    panic!(
                        "{name}: k {k} rows {rows} chunks {chunks}: {} word {j}: one workgroup \
                         {:#010x}, split {:#010x}",
                        what[i], a[j], b[j]
                    );
                }
            }
            // The rows' statuses are what their inputs call for.
            if s.bad_rows {
                for (r, &got) in one[3].iter().enumerate() {
                    let want = match r % 4 {
                        1 => TokenSampler::STATUS_BAD_PARAMS,
                        2 => TokenSampler::STATUS_NAN,
                        3 => TokenSampler::STATUS_ALL_MASKED,
                        _ => 0,
                    };
                    assert_eq!(got, want, "{name}: k {k} row {r}: status");
                }
            }
        }
    }
}

macro_rules! split_equals_one_workgroup {
    ($($name:ident: $setting:expr, $seed:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name), $setting, $seed);
            }
        )*
    };
}

split_equals_one_workgroup! {
    temperature_alone: Setting {
        row: |rng, _, _| RowSampling::new(temperature(rng)),
        ..BASE
    }, 1;
    greedy_with_raw_logprobs: Setting { row: |_, _, _| RowSampling::new(0.0), ..BASE }, 2;
    greedy_with_processed_logprobs_and_ranks: Setting {
        row: |_, _, _| RowSampling::new(0.0),
        mode: LogprobsMode::Processed,
        ..BASE
    }, 3;
    min_p: Setting {
        row: |rng, _, _| RowSampling { min_p: rng.random_range(0.01f32..0.3), ..RowSampling::new(temperature(rng)) },
        ..BASE
    }, 4;
    top_k_small_and_large: Setting {
        row: |rng, r, _| RowSampling { top_k: [1, 50, 700, 5000][r % 4], ..RowSampling::new(temperature(rng)) },
        ..BASE
    }, 5;
    top_p_alone: Setting {
        row: |rng, _, _| RowSampling { top_p: rng.random_range(0.5f32..0.99), ..RowSampling::new(temperature(rng)) },
        ..BASE
    }, 6;
    top_k_then_top_p_gathered_and_by_mass: Setting {
        row: |rng, r, _| RowSampling {
            top_k: [50, 2000, 512, 513][r % 4],
            top_p: 0.9,
            ..RowSampling::new(temperature(rng))
        },
        mode: LogprobsMode::Processed,
        ..BASE
    }, 7;
    top_n_sigma_with_min_p: Setting {
        row: |rng, _, _| RowSampling {
            top_n_sigma: rng.random_range(0.5f32..3.0),
            min_p: 0.05,
            ..RowSampling::new(temperature(rng))
        },
        ..BASE
    }, 8;
    ties_at_every_cut: Setting {
        row: |rng, r, _| RowSampling {
            top_k: [3, 40, 600, 0][r % 4],
            top_p: [0.7, 0.95, 1.0, 0.5][r % 4],
            ..RowSampling::new(temperature(rng))
        },
        ties: true,
        ..BASE
    }, 9;
    whole_chain_processed_with_the_law: Setting {
        row: |rng, r, _| RowSampling {
            top_k: [0, 50, 3000, 7][r % 4],
            top_p: 0.92,
            min_p: 0.02,
            top_n_sigma: if r % 2 == 0 { 2.0 } else { 0.0 },
            repetition_penalty: 1.3,
            frequency_penalty: 0.4,
            presence_penalty: 0.2,
            ..RowSampling::new(temperature(rng))
        },
        chain: true,
        mode: LogprobsMode::Processed,
        law: true,
        ..BASE
    }, 10;
    whole_chain_raw_with_ranks: Setting {
        row: |rng, r, _| RowSampling {
            top_k: [100, 0, 20, 1000][r % 4],
            top_p: 0.8,
            repetition_penalty: 1.2,
            presence_penalty: 0.5,
            ..RowSampling::new(if r == 1 { 0.0 } else { temperature(rng) })
        },
        chain: true,
        ..BASE
    }, 11;
    noise_64_bit_every_phase: Setting {
        row: |rng, r, _| RowSampling { top_k: [0, 30][r % 2], top_p: 0.9, ..RowSampling::new(temperature(rng)) },
        noise: Noise::Bits64,
        ..BASE
    }, 12;
    bad_rows_among_good_ones: Setting {
        row: |rng, _, _| RowSampling { top_k: 40, top_p: 0.9, ..RowSampling::new(temperature(rng)) },
        bad_rows: true,
        law: true,
        ..BASE
    }, 13;
}

#[test]
fn auto_splits_few_long_rows_only() {
    let split = |rows, k| {
        matches!(
            TokenSampler::strategy_for(rows, k, TokenStrategy::Auto),
            TokenStrategy::SplitRow { .. }
        )
    };
    assert!(split(1, 131072));
    assert!(split(2, 32000));
    assert!(!split(256, 131072));
    assert!(!split(1, 1000));
    // Never more chunks than logits.
    assert_eq!(
        TokenSampler::strategy_for(1, 3, TokenStrategy::SplitRow { chunks: 7 }),
        TokenStrategy::SplitRow { chunks: 3 }
    );
}

#[test]
fn a_row_using_a_filter_the_job_leaves_out_is_bad_on_both_paths() {
    // One row per filter, each job allowing every filter but that row's: the row gets NO_INDEX
    // and STATUS_BAD_PARAMS, a plain temperature row beside it is sampled.
    let k = 9000;
    let mut rng = StdRng::seed_from_u64(77);
    let logits: Vec<f32> = (0..2 * k).map(|_| rng.random_range(-5.0f32..5.0)).collect();
    let t = RowSampling::new(0.8);
    type Case = (&'static str, RowSampling, fn(&mut TokenFilters));
    let cases: [Case; 5] = [
        ("top_k", RowSampling { top_k: 1000, ..t }, |f| {
            f.top_k = false
        }),
        (
            "top_p_in_top_k",
            RowSampling {
                top_k: 40,
                top_p: 0.9,
                ..t
            },
            |f| f.top_p_in_top_k = false,
        ),
        ("top_p", RowSampling { top_p: 0.9, ..t }, |f| {
            f.top_p = false
        }),
        ("min_p", RowSampling { min_p: 0.1, ..t }, |f| {
            f.min_p = false
        }),
        (
            "top_n_sigma",
            RowSampling {
                top_n_sigma: 1.0,
                ..t
            },
            |f| f.top_n_sigma = false,
        ),
    ];
    for (name, row, drop) in cases {
        let params = [
            TokenRowParams::new(row, Stream::new(1)),
            TokenRowParams::new(t, Stream::new(2)),
        ];
        let mut filters = TokenFilters::ALL;
        drop(&mut filters);
        assert!(TokenFilters::of(&params, k as u64) != filters, "{name}");
        for strategy in [
            TokenStrategy::RowPerWorkgroup,
            TokenStrategy::SplitRow { chunks: 3 },
        ] {
            let out = outputs(&BASE, &logits, 2, k, &params, None, filters, strategy);
            assert_eq!(out[0][0], gumbel_wgpu::NO_INDEX, "{name} {strategy:?}");
            assert_eq!(
                out[3][0],
                TokenSampler::STATUS_BAD_PARAMS,
                "{name} {strategy:?}"
            );
            assert!(out[0][1] < k as u32, "{name} {strategy:?}: the good row");
            assert_eq!(out[3][1], 0, "{name} {strategy:?}: the good row");
        }
    }
}
