//! The whole logits-processing chain of token sampling (mask, logit bias, penalties, top-nσ, the
//! filters; raw and processed log-probabilities, ranks, the final law; the device-side penalty
//! state) against the f64 reference (`cpu::sample_tokens`, `cpu::token_probabilities`): exact
//! agreement up to documented f32 near-ties, the law of the draws (chi-square), batch
//! invariance, errors naming the argument and row.

mod common;

use common::{SENTINEL, apart, chi_square_p_value, gpu, poisoned, run};
use gumbel_wgpu::tokens::{mask_words, penalty_state, penalty_state_words};
use gumbel_wgpu::{
    Error, LogitsView, LogprobsMode, NO_INDEX, Noise, RowSampling, SampledTokens, Stream,
    TokenBias, TokenChain, TokenJob, TokenRowParams, TokenSampler, TokenSampling, cpu,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

// ---------------------------------------------------------------------------------------------
// Owned parameters.

/// Every argument of a chained `TokenSampling`, owned.
#[derive(Clone, Default)]
struct Chain {
    rows: Vec<RowSampling>,
    streams: Vec<Stream>,
    n: usize,
    prompt: Vec<Vec<u32>>,
    output: Vec<Vec<u32>>,
    bias: Vec<Vec<(u32, f32)>>,
    allowed: Vec<u32>,
    mode: LogprobsMode,
}

impl Chain {
    /// Lends the parameters out as a `TokenSampling`.
    fn with<R>(&self, f: impl FnOnce(&TokenSampling<'_>) -> R) -> R {
        let col = |g: fn(&RowSampling) -> f32| self.rows.iter().map(g).collect::<Vec<f32>>();
        let (t, top_p, min_p) = (col(|r| r.temperature), col(|r| r.top_p), col(|r| r.min_p));
        let (rp, fp, pp, ns) = (
            col(|r| r.repetition_penalty),
            col(|r| r.frequency_penalty),
            col(|r| r.presence_penalty),
            col(|r| r.top_n_sigma),
        );
        let top_k: Vec<u32> = self.rows.iter().map(|r| r.top_k).collect();
        let prompt: Vec<&[u32]> = self.prompt.iter().map(|v| v.as_slice()).collect();
        let output: Vec<&[u32]> = self.output.iter().map(|v| v.as_slice()).collect();
        let bias: Vec<&[(u32, f32)]> = self.bias.iter().map(|v| v.as_slice()).collect();
        f(&TokenSampling {
            temperature: &t,
            top_k: &top_k,
            top_p: &top_p,
            min_p: &min_p,
            streams: &self.streams,
            logprobs: self.n,
            repetition_penalty: &rp,
            frequency_penalty: &fp,
            presence_penalty: &pp,
            top_n_sigma: &ns,
            prompt_tokens: &prompt,
            output_tokens: &output,
            logit_bias: &bias,
            allowed: &self.allowed,
            logprobs_mode: self.mode,
        })
    }

    /// The same parameters with row `r` only.
    fn row(&self, r: usize, k: usize) -> Chain {
        let mw = mask_words(k);
        Chain {
            rows: vec![self.rows[r]],
            streams: vec![self.streams[r]],
            n: self.n,
            prompt: vec![self.prompt[r].clone()],
            output: vec![self.output[r].clone()],
            bias: vec![self.bias[r].clone()],
            allowed: if self.allowed.is_empty() {
                Vec::new()
            } else {
                self.allowed[r * mw..(r + 1) * mw].to_vec()
            },
            mode: self.mode,
        }
    }
}

/// Distinct random logits in [-4, 4), about 5% -inf, each row keeping a finite entry.
fn logits(rng: &mut StdRng, rows: usize, k: usize) -> Vec<f32> {
    let mut l: Vec<f32> = (0..rows * k)
        .map(|_| {
            if rng.random::<f32>() < 0.05 {
                f32::NEG_INFINITY
            } else {
                rng.random_range(-4.0f32..4.0)
            }
        })
        .collect();
    for r in 0..rows {
        l[r * k + rng.random_range(0..k)] = rng.random_range(-4.0f32..4.0);
    }
    l
}

fn stream(rng: &mut StdRng) -> Stream {
    Stream {
        seed: rng.random(),
        offset: rng.random::<u64>() >> 1,
    }
}

/// A random token list of up to `len` tokens below `k`.
fn tokens(rng: &mut StdRng, k: usize, len: usize) -> Vec<u32> {
    let n = rng.random_range(0..=len);
    (0..n).map(|_| rng.random_range(0..k as u32)).collect()
}

/// Random chained parameters for `rows x k`: every stage on about half the time per row, greedy
/// rows, a mask on most rows (its bits past k random: they must be ignored) that always allows
/// the row's argmax-to-be of the bias so no row is left empty.
fn random_chain(rng: &mut StdRng, l: &[f32], rows: usize, k: usize) -> Chain {
    let mw = mask_words(k);
    let mut c = Chain {
        streams: (0..rows).map(|_| stream(rng)).collect(),
        n: rng.random_range(0..=k.min(6)),
        mode: if rng.random::<bool>() {
            LogprobsMode::Processed
        } else {
            LogprobsMode::Raw
        },
        ..Default::default()
    };
    let mut allowed = vec![0u32; rows * mw];
    for r in 0..rows {
        let t = [0.0, 0.6, 1.0, 1.5][rng.random_range(0..4)];
        let half = |rng: &mut StdRng| rng.random::<bool>();
        c.rows.push(RowSampling {
            temperature: t,
            top_k: if half(rng) {
                rng.random_range(1..=(k as u32).min(600))
            } else {
                0
            },
            top_p: if half(rng) {
                rng.random_range(0.3f32..1.0)
            } else {
                1.0
            },
            min_p: if half(rng) {
                rng.random_range(0.0f32..0.3)
            } else {
                0.0
            },
            repetition_penalty: if half(rng) {
                rng.random_range(0.5f32..2.0)
            } else {
                1.0
            },
            frequency_penalty: if half(rng) {
                rng.random_range(-0.5f32..1.0)
            } else {
                0.0
            },
            presence_penalty: if half(rng) {
                rng.random_range(-0.5f32..1.0)
            } else {
                0.0
            },
            top_n_sigma: if half(rng) {
                rng.random_range(0.5f32..3.0)
            } else {
                0.0
            },
        });
        c.prompt.push(tokens(rng, k, 40));
        c.output.push(tokens(rng, k, 40));
        let nb = if half(rng) { rng.random_range(0..8) } else { 0 };
        c.bias.push(
            (0..nb)
                .map(|_| {
                    (
                        rng.random_range(0..k as u32),
                        rng.random_range(-3.0f32..3.0),
                    )
                })
                .collect(),
        );
        // The mask: random words, one finite input entry forced allowed.
        for w in &mut allowed[r * mw..(r + 1) * mw] {
            *w = rng.random();
        }
        let row = &l[r * k..(r + 1) * k];
        let keep = (0..k).find(|&j| row[j].is_finite()).unwrap();
        allowed[r * mw + keep / 32] |= 1 << (keep % 32);
    }
    if rng.random_range(0..4) != 0 {
        c.allowed = allowed;
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Comparison with the reference.

/// The kept set of a processed row with min-p, top-p and top-nσ moved by `eps` (relative; > 0
/// loosens): f32 on the GPU and f64 here may disagree on entries within that distance of a cut.
fn kept(prow: &[f32], p: &RowSampling, eps: f32) -> Vec<bool> {
    let q = RowSampling {
        min_p: p.min_p * (1.0 - eps),
        top_p: if p.top_p < 1.0 {
            (p.top_p * (1.0 + eps)).min(1.0)
        } else {
            1.0
        },
        top_n_sigma: p.top_n_sigma * (1.0 + eps),
        ..*p
    };
    let mut v = vec![false; prow.len()];
    for (j, _) in cpu::token_kept(prow, &q) {
        v[j] = true;
    }
    v
}

const CUT_EPS: f32 = 1e-4;

/// Checks a GPU result against the reference row by row; returns how many rows differ by a
/// documented near-tie (a score tie within f32 rounding, or an entry near a filter's cut: for
/// those only the token's membership in the loose kept set is checked).
fn compare(l: &[f32], k: usize, c: &Chain, got: &SampledTokens, noise: Noise, what: &str) -> usize {
    let want = c.with(|p| cpu::sample_tokens_with(l, k, p, noise)).unwrap();
    let processed = c.with(|p| cpu::processed_logits(l, k, p));
    let n = c.n;
    assert_eq!(got.tokens.len(), want.tokens.len(), "{what}");
    assert_eq!(got.top_tokens.len(), got.tokens.len() * n, "{what}");
    let close = |g: f32, w: f32| g == w || (g - w).abs() <= 2e-4 * (1.0 + w.abs());
    let mut near = 0;
    for r in 0..got.tokens.len() {
        let prow = &processed[r * k..(r + 1) * k];
        let rp = c.rows[r];
        let g = got.tokens[r];
        let loose = kept(prow, &rp, CUT_EPS);
        assert!(
            (g as usize) < k && loose[g as usize],
            "{what}: row {r}: token {g} outside the kept set ({rp:?})"
        );
        let tight = kept(prow, &rp, -CUT_EPS);
        let sharp = loose == tight;
        let w = want.tokens[r];
        if g != w {
            let (zg, zw) = (
                cpu::token_score(prow, g as usize, rp.temperature, c.streams[r], noise),
                cpu::token_score(prow, w as usize, rp.temperature, c.streams[r], noise),
            );
            let tie = (zg - zw).abs() < 1e-5 * zg.abs().max(zw.abs()).max(1.0);
            assert!(
                tie || !sharp,
                "{what}: row {r} ({rp:?}): GPU token {g} (z {zg}), reference {w} (z {zw})"
            );
            near += 1;
            continue;
        }
        if c.mode == LogprobsMode::Processed && !sharp {
            near += 1;
            continue;
        }
        let lp = got.logprobs[r];
        assert!(
            close(lp, want.logprobs[r]),
            "{what}: row {r}: logprob {lp} vs {}",
            want.logprobs[r]
        );
        assert_eq!(got.ranks[r], want.ranks[r], "{what}: row {r}: rank");
        let (gt, wt) = (
            &got.top_tokens[r * n..][..n],
            &want.top_tokens[r * n..][..n],
        );
        assert_eq!(gt, wt, "{what}: row {r}: top tokens");
        for i in 0..n {
            let (a, b) = (got.top_logprobs[r * n + i], want.top_logprobs[r * n + i]);
            assert!(close(a, b), "{what}: row {r}: top logprob {i}: {a} vs {b}");
        }
    }
    near
}

#[test]
fn the_chain_matches_the_reference_at_awkward_sizes() {
    let mut rng = StdRng::seed_from_u64(0xc4a1);
    let mut near = 0;
    let mut total = 0;
    for &k in &[1usize, 2, 3, 31, 33, 255, 257, 4097] {
        let rows = 16;
        let l = logits(&mut rng, rows, k);
        let c = random_chain(&mut rng, &l, rows, k);
        let got = c.with(|p| gpu().sample_tokens(&l, k, p)).unwrap();
        near += compare(&l, k, &c, &got, Noise::Bits32, &format!("k {k}"));
        total += rows;
        // The final law, against f64 wherever the kept set is sharp.
        let law = c.with(|p| gpu().token_probabilities(&l, k, p)).unwrap();
        let want = c.with(|p| cpu::token_probabilities(&l, k, p)).unwrap();
        let processed = c.with(|p| cpu::processed_logits(&l, k, p));
        for r in 0..rows {
            let prow = &processed[r * k..(r + 1) * k];
            if kept(prow, &c.rows[r], CUT_EPS) != kept(prow, &c.rows[r], -CUT_EPS) {
                continue;
            }
            for j in 0..k {
                let (g, w) = (f64::from(law[r * k + j]), want[r * k + j]);
                assert!(
                    (g - w).abs() <= 1e-5 + 1e-4 * w,
                    "k {k} row {r} entry {j}: law {g} vs {w}"
                );
            }
        }
    }
    eprintln!("{near} of {total} rows near a tie or cut");
    assert!(
        near * 10 <= total,
        "{near} of {total} rows near a tie or cut"
    );
}

#[test]
fn greedy_rows_under_penalties_and_masks_take_the_processed_argmax() {
    let mut rng = StdRng::seed_from_u64(0x6eed);
    let (rows, k) = (40, 1000);
    let l = logits(&mut rng, rows, k);
    let mut c = random_chain(&mut rng, &l, rows, k);
    for r in &mut c.rows {
        *r = RowSampling {
            temperature: 0.0,
            repetition_penalty: 1.4,
            frequency_penalty: 0.3,
            presence_penalty: 0.6,
            ..*r
        };
    }
    c.mode = LogprobsMode::Processed;
    c.n = 3;
    let got = c.with(|p| gpu().sample_tokens(&l, k, p)).unwrap();
    let processed = c.with(|p| cpu::processed_logits(&l, k, p));
    for r in 0..rows {
        let prow = &processed[r * k..(r + 1) * k];
        let (mut best, mut second) = (0, usize::MAX);
        for j in 1..k {
            if prow[j] > prow[best] {
                (best, second) = (j, best);
            } else if second == usize::MAX || prow[j] > prow[second] {
                second = j;
            }
        }
        // Processed f32 on the device, f64 rounded once here: a margin of a few ulps.
        if (prow[best] - prow[second]).abs() > 1e-5 {
            assert_eq!(got.tokens[r] as usize, best, "row {r}");
        }
        // The final law of a greedy row is one-hot: log-probability 0, rank 1, the rest -inf.
        assert_eq!(got.logprobs[r], 0.0, "row {r}");
        assert_eq!(got.ranks[r], 1, "row {r}");
        assert_eq!(got.top_tokens[r * 3], got.tokens[r]);
        assert!(
            got.top_logprobs[r * 3 + 1..r * 3 + 3]
                .iter()
                .all(|&x| x == f32::NEG_INFINITY)
        );
    }
}

#[test]
fn the_mask_ignores_the_bits_past_k() {
    // k = 37: two words per row, 27 tail bits; all set, and only token 36 allowed below k.
    let k = 37;
    let rows = 3;
    let l = vec![1.0f32; rows * k];
    let allowed: Vec<u32> = (0..rows).flat_map(|_| [0, 0xffff_fff0]).collect();
    let streams: Vec<Stream> = (0..rows as u64).map(Stream::new).collect();
    let p = TokenSampling {
        temperature: &[1.0, 0.0, 2.0],
        streams: &streams,
        allowed: &allowed,
        logprobs: 2,
        logprobs_mode: LogprobsMode::Processed,
        ..Default::default()
    };
    let got = gpu().sample_tokens(&l, k, &p).unwrap();
    assert_eq!(got.tokens, [36, 36, 36]);
    assert_eq!(got.logprobs, [0.0; 3]);
    assert_eq!(cpu::sample_tokens(&l, k, &p).unwrap().tokens, [36, 36, 36]);
}

// ---------------------------------------------------------------------------------------------
// The law of the draws.

const ALPHA: f64 = 1e-3;

/// A shuffled Zipf-like row (as in tests/tokens.rs).
fn zipf_row(rng: &mut StdRng, k: usize, a: f32) -> Vec<f32> {
    let mut l: Vec<f32> = (0..k)
        .map(|i| -a * ((i + 1) as f32).ln() + rng.random_range(0.0f32..0.01))
        .collect();
    for i in (1..k).rev() {
        l.swap(i, rng.random_range(0..=i));
    }
    l
}

/// Per-row chain settings for the law tests: each new stage alone, then all with the filters.
fn law_settings(rng: &mut StdRng, row: &[f32]) -> Vec<(&'static str, Chain)> {
    let k = row.len();
    let t = RowSampling::new(0.8);
    // The most likely tokens, so the stages move real mass.
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    let head: Vec<u32> = order[..60].iter().map(|&j| j as u32).collect();
    let mw = mask_words(k);
    let mut mask = vec![0u32; mw];
    for j in 0..k {
        // Half the head and three quarters of the rest allowed.
        let on = if head.contains(&(j as u32)) {
            rng.random::<bool>()
        } else {
            rng.random_range(0..4) != 0
        };
        if on || j == order[0] {
            mask[j / 32] |= 1 << (j % 32);
        }
    }
    let bias: Vec<(u32, f32)> = (0..30)
        .map(|i| (head[i], if i % 2 == 0 { -2.0 } else { 1.5 }))
        .chain([(order[k / 2] as u32, 6.0), (head[1], 0.5)])
        .collect();
    let history: Vec<u32> = (0..80).map(|i| head[i % 25]).collect();
    let prompt: Vec<u32> = head[20..50].to_vec();
    let penalties = RowSampling {
        repetition_penalty: 1.3,
        frequency_penalty: 0.1,
        presence_penalty: 0.4,
        ..t
    };
    let base = Chain {
        rows: vec![t],
        prompt: vec![prompt.clone()],
        output: vec![history.clone()],
        bias: vec![Vec::new()],
        ..Default::default()
    };
    vec![
        (
            "mask",
            Chain {
                allowed: mask.clone(),
                ..base.clone()
            },
        ),
        (
            "bias",
            Chain {
                bias: vec![bias.clone()],
                ..base.clone()
            },
        ),
        (
            "penalties",
            Chain {
                rows: vec![penalties],
                ..base.clone()
            },
        ),
        (
            "top-n-sigma",
            Chain {
                rows: vec![RowSampling {
                    top_n_sigma: 1.5,
                    ..t
                }],
                ..base.clone()
            },
        ),
        (
            "everything with min-p, top-k and top-p",
            Chain {
                rows: vec![RowSampling {
                    top_n_sigma: 2.5,
                    min_p: 0.01,
                    top_k: 40,
                    top_p: 0.9,
                    ..penalties
                }],
                bias: vec![bias],
                allowed: mask,
                ..base
            },
        ),
    ]
}

/// Draws `draws` tokens from `row` under the one-row chain `c` (each draw its own row and
/// stream), checks each is in the kept set, and returns the chi-square p-value against
/// `cpu::token_probabilities`.
fn draw_law(row: &[f32], c: &Chain, draws: usize, seed: u64) -> f64 {
    let k = row.len();
    let l: Vec<f32> = row.iter().copied().cycle().take(k * draws).collect();
    let all = Chain {
        rows: vec![c.rows[0]; draws],
        streams: (0..draws as u64)
            .map(|i| Stream::new(seed).advance(i << 40))
            .collect(),
        prompt: vec![c.prompt[0].clone(); draws],
        output: vec![c.output[0].clone(); draws],
        bias: vec![c.bias[0].clone(); draws],
        allowed: c.allowed.repeat(draws),
        n: 0,
        mode: LogprobsMode::Raw,
    };
    let got = all.with(|p| gpu().sample_tokens(&l, k, p)).unwrap();
    let one = Chain {
        streams: vec![Stream::new(seed)],
        ..c.clone()
    };
    let law = one.with(|p| cpu::token_probabilities(row, k, p)).unwrap();
    let prow = one.with(|p| cpu::processed_logits(row, k, p));
    let keep = kept(&prow, &c.rows[0], CUT_EPS);
    let mut counts = vec![0u64; k];
    for &t in &got.tokens {
        assert!(
            (t as usize) < k && keep[t as usize],
            "token {t} outside the kept set"
        );
        counts[t as usize] += 1;
    }
    chi_square_p_value(&counts, &law)
}

fn law_test(k: usize, draws: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let row = zipf_row(&mut rng, k, 1.2);
    for (i, (name, c)) in law_settings(&mut rng, &row).into_iter().enumerate() {
        let pv = draw_law(&row, &c, draws, seed + i as u64);
        eprintln!("k {k} {name}: chi-square p = {pv}");
        assert!(pv > ALPHA, "k {k} {name}: chi-square p = {pv}");
    }
}

#[test]
fn draws_follow_the_processed_law_k_1000() {
    law_test(1000, 2000, 0x1000);
}

#[test]
fn draws_follow_the_processed_law_k_32768() {
    law_test(32768, 250, 0x8000);
}

#[test]
fn speculative_verification_against_the_processed_law_emits_tokens_from_it() {
    // One draft per row from a flat draft law; the target laws are token_probabilities of a
    // processed chain: the first emitted token must follow the processed law of position 0.
    let mut rng = StdRng::seed_from_u64(0x5bec);
    let (k, draws) = (60usize, 3000usize);
    let row = zipf_row(&mut rng, k, 1.0);
    let bias: Vec<(u32, f32)> = vec![(3, 2.0), (7, -1.0), (11, 3.0)];
    let history: Vec<u32> = vec![3, 3, 5, 8];
    let p0 = RowSampling {
        repetition_penalty: 1.5,
        presence_penalty: 0.3,
        top_k: 20,
        ..RowSampling::new(0.9)
    };
    let c = Chain {
        rows: vec![p0; 2],
        streams: vec![Stream::new(1); 2],
        prompt: vec![vec![9, 10]; 2],
        output: vec![history; 2],
        bias: vec![bias; 2],
        ..Default::default()
    };
    let two: Vec<f32> = row.repeat(2);
    let law = c.with(|p| gpu().token_probabilities(&two, k, p)).unwrap();
    let q = vec![1.0 / k as f32; k];
    let drafts: Vec<u32> = (0..draws).map(|_| rng.random_range(0..k as u32)).collect();
    let streams: Vec<Stream> = (0..draws as u64)
        .map(|i| Stream::new(0xfeed).advance(i << 32))
        .collect();
    let out = gpu()
        .verify_speculative(&drafts, &q.repeat(draws), &law.repeat(draws), k, &streams)
        .unwrap();
    let mut counts = vec![0u64; k];
    for r in 0..draws {
        counts[out.tokens[2 * r] as usize] += 1;
    }
    let want = c
        .row(0, k)
        .with(|p| cpu::token_probabilities(&row, k, p))
        .unwrap();
    let pv = chi_square_p_value(&counts, &want);
    eprintln!("speculative under the chain: chi-square p = {pv}");
    assert!(pv > ALPHA, "chi-square p = {pv}");
}

#[test]
fn a_rows_draw_with_every_stage_on_does_not_depend_on_its_batch() {
    let mut rng = StdRng::seed_from_u64(0xba7c);
    let k = 777;
    let l = logits(&mut rng, 1, k);
    let mut mine = random_chain(&mut rng, &l, 1, k);
    mine.rows[0] = RowSampling {
        temperature: 0.9,
        top_k: 300,
        top_p: 0.95,
        min_p: 0.01,
        repetition_penalty: 1.2,
        frequency_penalty: 0.2,
        presence_penalty: 0.1,
        top_n_sigma: 2.0,
    };
    mine.bias[0] = vec![(5, 1.0), (9, -2.0)];
    mine.output[0] = vec![1, 2, 3, 3];
    mine.n = 3;
    mine.mode = LogprobsMode::Processed;
    let mut seen: Vec<(u32, f32, u32)> = Vec::new();
    for (batch, pos) in [(1usize, 0usize), (3, 2), (9, 5)] {
        let mut all_l = logits(&mut rng, batch, k);
        all_l[pos * k..(pos + 1) * k].copy_from_slice(&l);
        let mut c = random_chain(&mut rng, &all_l, batch, k);
        // Keep (or drop) the mask for every row alike, then put `mine` at `pos`.
        let mw = mask_words(k);
        if c.allowed.is_empty() {
            c.allowed = vec![u32::MAX; batch * mw];
        }
        let mine_mask = if mine.allowed.is_empty() {
            vec![u32::MAX; mw]
        } else {
            mine.allowed.clone()
        };
        c.allowed[pos * mw..(pos + 1) * mw].copy_from_slice(&mine_mask);
        c.rows[pos] = mine.rows[0];
        c.streams[pos] = mine.streams[0];
        c.prompt[pos] = mine.prompt[0].clone();
        c.output[pos] = mine.output[0].clone();
        c.bias[pos] = mine.bias[0].clone();
        c.n = 3;
        c.mode = LogprobsMode::Processed;
        let got = c.with(|p| gpu().sample_tokens(&all_l, k, p)).unwrap();
        seen.push((got.tokens[pos], got.logprobs[pos], got.ranks[pos]));
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn bad_chain_input_is_an_error_naming_the_argument_and_row() {
    let (k, rows) = (40usize, 2usize);
    let l: Vec<f32> = (0..rows * k).map(|i| (i % 7) as f32 * 0.5).collect();
    let base = Chain {
        rows: vec![RowSampling::new(1.0); rows],
        streams: vec![Stream::new(1); rows],
        prompt: vec![vec![1, 2]; rows],
        output: vec![vec![3]; rows],
        bias: vec![vec![(4, 1.0)]; rows],
        allowed: vec![u32::MAX; rows * 2],
        ..Default::default()
    };
    type Edit = fn(&mut Chain);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "NaN repetition penalty",
            |c| c.rows[1].repetition_penalty = f32::NAN,
            "repetition_penalty[1]",
        ),
        (
            "zero repetition penalty",
            |c| c.rows[1].repetition_penalty = 0.0,
            "repetition_penalty[1]",
        ),
        (
            "negative repetition penalty",
            |c| c.rows[0].repetition_penalty = -1.0,
            "repetition_penalty[0]",
        ),
        (
            "NaN frequency penalty",
            |c| c.rows[1].frequency_penalty = f32::NAN,
            "frequency_penalty[1]",
        ),
        (
            "inf presence penalty",
            |c| c.rows[0].presence_penalty = f32::INFINITY,
            "presence_penalty[0]",
        ),
        (
            "NaN bias",
            |c| c.bias[1] = vec![(2, f32::NAN)],
            "logit_bias[1][0]",
        ),
        (
            "bias token >= k",
            |c| c.bias[0] = vec![(1, 0.5), (40, 1.0)],
            "logit_bias[0][1]",
        ),
        (
            "prompt token >= k",
            |c| c.prompt[1] = vec![0, 99],
            "prompt_tokens[1][1]",
        ),
        (
            "output token >= k",
            |c| c.output[0] = vec![40],
            "output_tokens[0][0]",
        ),
        (
            "mask of the wrong length",
            |c| c.allowed = vec![u32::MAX; 3],
            "allowed: 3 words",
        ),
        (
            "negative top-n-sigma",
            |c| c.rows[1].top_n_sigma = -0.5,
            "top_n_sigma[1]",
        ),
        (
            "NaN top-n-sigma",
            |c| c.rows[0].top_n_sigma = f32::NAN,
            "top_n_sigma[0]",
        ),
        (
            "prompts not one per row",
            |c| c.prompt.truncate(1),
            "prompt_tokens: 1 values for 2 rows",
        ),
        (
            "outputs not one per row",
            |c| c.output.push(vec![]),
            "output_tokens: 3 values for 2 rows",
        ),
        (
            "biases not one per row",
            |c| c.bias.truncate(1),
            "logit_bias: 1 values for 2 rows",
        ),
        (
            "a row the mask and bias leave empty",
            |c| {
                c.allowed[2] = 0;
                c.allowed[3] = 0;
            },
            "row 1: allowed (the mask) and logit_bias leave no finite logit",
        ),
    ];
    for (what, edit, needle) in cases {
        let mut c = base.clone();
        edit(&mut c);
        let gpu_err = c.with(|p| gpu().sample_tokens(&l, k, p));
        let cpu_err = c.with(|p| cpu::sample_tokens(&l, k, p));
        let law_err = c.with(|p| gpu().token_probabilities(&l, k, p));
        for (side, e) in [
            ("gpu", gpu_err.map(|_| ())),
            ("cpu", cpu_err.map(|_| ())),
            ("law", law_err.map(|_| ())),
        ] {
            match e {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.contains(needle), "{what} ({side}): {m}")
                }
                other => panic!("{what} ({side}): {other:?}"),
            }
        }
    }
    // Counts of per-row penalties that are not one per row.
    let rp = [1.0f32];
    let streams = [Stream::new(1), Stream::new(2)];
    let p = TokenSampling {
        temperature: &[1.0, 1.0],
        streams: &streams,
        repetition_penalty: &rp,
        ..Default::default()
    };
    assert!(matches!(
        gpu().sample_tokens(&l, k, &p),
        Err(Error::InvalidArgument(m)) if m.contains("repetition_penalty: 1 values for 2 rows")
    ));
}

// ---------------------------------------------------------------------------------------------
// The buffer level.

fn words(b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    gpu().read_buffer(b, n).unwrap()
}

#[test]
fn a_decode_loop_keeps_the_penalty_state_on_the_device() {
    // Steps recorded into one encoder: sample (mask, bias, penalties, processed log-probs,
    // ranks) then the device-side state update, nothing read back between steps. Each step's
    // tokens must equal the slice level's with the history the host would have kept, and the
    // final state the host's counts of that history.
    let gpu = gpu();
    let mut rng = StdRng::seed_from_u64(0xdec0de);
    let (rows, k, steps) = (5usize, 1000usize, 6usize);
    let sw = penalty_state_words(k);
    let l = logits(&mut rng, rows, k);
    let mut c = random_chain(&mut rng, &l, rows, k);
    for r in &mut c.rows {
        r.repetition_penalty = 1.5;
        r.frequency_penalty = 0.4;
        r.presence_penalty = 0.3;
    }
    c.mode = LogprobsMode::Processed;
    let mw = mask_words(k);
    if c.allowed.is_empty() {
        c.allowed = vec![u32::MAX; rows * mw];
    }
    // The initial state from the prompts and the outputs so far.
    let mut state = Vec::new();
    for r in 0..rows {
        state.extend(penalty_state(k, &c.prompt[r], &c.output[r]).unwrap());
    }
    // Every input at an odd word offset in a bigger buffer.
    let lead = 3usize;
    let padded = |w: &[u32]| {
        let mut v = vec![SENTINEL; lead];
        v.extend_from_slice(w);
        v.push(SENTINEL);
        v
    };
    fn at(b: &wgpu::Buffer, len: usize) -> wgpu::BufferSlice<'_> {
        b.slice(12..(3 + len) as u64 * 4)
    }
    let lb = gpu
        .upload(
            "logits",
            &padded(&l.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
        )
        .unwrap();
    let stb = gpu.upload("state", &padded(&state)).unwrap();
    let mb = gpu.upload("mask", &padded(&c.allowed)).unwrap();
    let mut starts = Vec::new();
    let mut entries = Vec::new();
    for r in 0..rows {
        starts.push((entries.len() / 2) as u32);
        for &(t, b) in &c.bias[r] {
            entries.extend([t, b.to_bits()]);
        }
    }
    starts.push((entries.len() / 2) as u32);
    entries.extend([0, 0]); // never empty
    let sb = gpu.upload("starts", &padded(&starts)).unwrap();
    let eb = gpu.upload("entries", &padded(&entries)).unwrap();
    // Row parameters per step (streams advanced by k), staged and copied on the device.
    let staged: Vec<wgpu::Buffer> = (0..steps)
        .map(|s| {
            let dev: Vec<TokenRowParams> = (0..rows)
                .map(|r| TokenRowParams::new(c.rows[r], c.streams[r].advance((s * k) as u64)))
                .collect();
            gpu.upload("staged", &dev).unwrap()
        })
        .collect();
    let pb = poisoned(gpu, rows * 12);
    let ra = apart(rows);
    let outs: Vec<wgpu::Buffer> = (0..steps).map(|_| poisoned(gpu, 3 * ra)).collect();
    let sampler = gpu.token_sampler().unwrap();
    run(gpu, |enc| {
        for s in 0..steps {
            enc.copy_buffer_to_buffer(
                &staged[s],
                0,
                &pb,
                0,
                Some(rows as u64 * TokenRowParams::BYTES),
            );
            let o = &outs[s];
            let job = TokenJob {
                logprobs: Some(o.slice(ra as u64 * 4..(ra + rows) as u64 * 4)),
                ranks: Some(o.slice(2 * ra as u64 * 4..(2 * ra + rows) as u64 * 4)),
                logprobs_mode: LogprobsMode::Processed,
                chain: TokenChain {
                    allowed: Some(at(&mb, rows * mw)),
                    bias: Some(TokenBias {
                        starts: at(&sb, rows + 1),
                        entries: at(&eb, entries.len()),
                    }),
                    penalty_state: Some(at(&stb, rows * sw)),
                },
                ..TokenJob::new(
                    LogitsView::f32(at(&lb, rows * k), rows as u64, k as u64),
                    pb.slice(..),
                    o.slice(..rows as u64 * 4),
                )
            };
            sampler.record(enc, &job).unwrap();
            sampler
                .record_penalty_update(
                    enc,
                    o.slice(..rows as u64 * 4),
                    at(&stb, rows * sw),
                    rows as u64,
                    k as u64,
                )
                .unwrap();
        }
    });
    let mut host = c.clone();
    for (s, o) in outs.iter().enumerate() {
        let got = words(o, 3 * ra);
        let step = Chain {
            streams: c
                .streams
                .iter()
                .map(|st| st.advance((s * k) as u64))
                .collect(),
            ..host.clone()
        };
        let want = step.with(|p| gpu.sample_tokens(&l, k, p)).unwrap();
        assert_eq!(got[..rows], want.tokens[..], "step {s}: tokens");
        let lps: Vec<f32> = got[ra..ra + rows]
            .iter()
            .map(|&b| f32::from_bits(b))
            .collect();
        assert_eq!(lps, want.logprobs, "step {s}: logprobs");
        assert_eq!(
            got[2 * ra..2 * ra + rows],
            want.ranks[..],
            "step {s}: ranks"
        );
        for (history, &t) in host.output.iter_mut().zip(&got[..rows]) {
            history.push(t);
        }
    }
    let mut want_state = vec![SENTINEL; lead];
    for r in 0..rows {
        want_state.extend(penalty_state(k, &host.prompt[r], &host.output[r]).unwrap());
    }
    want_state.push(SENTINEL);
    assert_eq!(words(&stb, want_state.len()), want_state);
}

#[test]
fn buffer_level_bad_chain_data_gives_no_index_and_a_status() {
    // Row 0: fine; 1: a bias token >= k; 2: a NaN bias; 3: row starts out of order; 4: the mask
    // bans everything; 5: fine, with the law written; all with ranks.
    let gpu = gpu();
    let (rows, k) = (6usize, 70usize);
    let mut rng = StdRng::seed_from_u64(0xbad);
    let l = logits(&mut rng, rows, k);
    let mw = mask_words(k);
    let mut mask = vec![u32::MAX; rows * mw];
    mask[4 * mw..5 * mw].fill(0);
    let entries: Vec<u32> = vec![
        1,
        1.0f32.to_bits(), // row 0
        70,
        1.0f32.to_bits(), // row 1: token k
        2,
        f32::NAN.to_bits(), // row 2
        3,
        0.5f32.to_bits(), // row 3 (starts reversed)
        5,
        2.0f32.to_bits(), // row 5
    ];
    let starts: Vec<u32> = vec![0, 1, 2, 4, 3, 4, 5];
    let dev: Vec<TokenRowParams> = (0..rows)
        .map(|r| TokenRowParams::new(RowSampling::new(0.7), Stream::new(r as u64)))
        .collect();
    let lb = gpu.upload("logits", &l).unwrap();
    let pb = gpu.upload("params", &dev).unwrap();
    let mb = gpu.upload("mask", &mask).unwrap();
    let sb = gpu.upload("starts", &starts).unwrap();
    let eb = gpu.upload("entries", &entries).unwrap();
    let ra = apart(rows);
    let ob = poisoned(gpu, 2 * ra);
    let law = poisoned(gpu, rows * k);
    let sampler = gpu.token_sampler().unwrap();
    run(gpu, |enc| {
        let job = TokenJob {
            status: Some(ob.slice(ra as u64 * 4..(ra + rows) as u64 * 4)),
            chain: TokenChain {
                allowed: Some(mb.slice(..)),
                bias: Some(TokenBias {
                    starts: sb.slice(..),
                    entries: eb.slice(..),
                }),
                penalty_state: None,
            },
            ..TokenJob::new(
                LogitsView::f32(lb.slice(..), rows as u64, k as u64),
                pb.slice(..),
                ob.slice(..rows as u64 * 4),
            )
        };
        sampler
            .record_probabilities(enc, &job, law.slice(..))
            .unwrap();
    });
    let got = words(&ob, 2 * ra);
    let law: Vec<f32> = gpu.read_buffer(&law, rows * k).unwrap();
    let bad = TokenSampler::STATUS_BAD_PARAMS;
    let want_status = [0, bad, bad, bad, TokenSampler::STATUS_ALL_MASKED, 0];
    assert_eq!(got[ra..ra + rows], want_status);
    for r in 0..rows {
        let row_law = &law[r * k..(r + 1) * k];
        if want_status[r] == 0 {
            assert!(
                got[r] < k as u32 && row_law[got[r] as usize] > 0.0,
                "row {r}"
            );
            let s: f64 = row_law.iter().map(|&x| f64::from(x)).sum();
            assert!((s - 1.0).abs() < 1e-4, "row {r}: law sums to {s}");
        } else {
            assert_eq!(got[r], NO_INDEX, "row {r}");
            assert!(row_law.iter().all(|x| x.is_nan()), "row {r}");
        }
    }
    // The law of the good rows against the reference.
    let bias: Vec<Vec<(u32, f32)>> = vec![
        vec![(1, 1.0)],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![(5, 2.0)],
    ];
    let c = Chain {
        rows: vec![RowSampling::new(0.7); rows],
        streams: (0..rows as u64).map(Stream::new).collect(),
        prompt: vec![vec![]; rows],
        output: vec![vec![]; rows],
        bias,
        ..Default::default()
    };
    for r in [0usize, 5] {
        let one = c.row(r, k);
        let want = one
            .with(|p| cpu::token_probabilities(&l[r * k..(r + 1) * k], k, p))
            .unwrap();
        for j in 0..k {
            let (g, w) = (f64::from(law[r * k + j]), want[j]);
            assert!(
                (g - w).abs() <= 1e-6 + 1e-4 * w,
                "row {r} entry {j}: {g} vs {w}"
            );
        }
    }
    // Misuse: ranks with the law, views too short.
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let job = TokenJob::new(
        LogitsView::f32(lb.slice(..), rows as u64, k as u64),
        pb.slice(..),
        ob.slice(..rows as u64 * 4),
    );
    let check = |r: Result<(), Error>, name: &str| match r {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(name), "{name}: {m}"),
        other => panic!("{name}: {other:?}"),
    };
    let law_b = poisoned(gpu, rows * k);
    check(
        sampler.record_probabilities(
            &mut enc,
            &TokenJob {
                ranks: Some(ob.slice(ra as u64 * 4..(ra + rows) as u64 * 4)),
                ..job
            },
            law_b.slice(..),
        ),
        "ranks",
    );
    check(
        sampler.record_probabilities(&mut enc, &job, law_b.slice(..16)),
        "probabilities",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                chain: TokenChain {
                    allowed: Some(mb.slice(..8)),
                    ..Default::default()
                },
                ..job
            },
        ),
        "allowed",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob {
                chain: TokenChain {
                    penalty_state: Some(mb.slice(..)),
                    ..Default::default()
                },
                ..job
            },
        ),
        "penalty_state",
    );
    check(
        sampler.record_penalty_update(&mut enc, ob.slice(..4), mb.slice(..), rows as u64, k as u64),
        "tokens",
    );
}

// ---------------------------------------------------------------------------------------------
// Logits as engines hold them: rows further apart than k.

#[test]
fn a_row_stride_reads_padded_logits_in_place() {
    // The same rows dense and inside a padded matrix (padding NaN, which any read would turn
    // into a bad row or a different draw): token sampling with and without the chain, and
    // Gumbel-max / top-3, give the same results, in f32 and f16 (an odd stride puts rows at
    // half-word offsets); a stride below k and a slice too short are errors.
    use gumbel_wgpu::{LogitsFormat, SampleJob, Temperature, logits::f32_to_f16, logits::pack_u16};
    let gpu = gpu();
    let mut rng = StdRng::seed_from_u64(0x57de);
    let (rows, k, stride) = (5usize, 1000usize, 1037usize);
    let l = logits(&mut rng, rows, k);
    let c = random_chain(&mut rng, &l, rows, k);
    let mut padded = vec![f32::NAN; (rows - 1) * stride + k];
    for r in 0..rows {
        padded[r * stride..r * stride + k].copy_from_slice(&l[r * k..(r + 1) * k]);
    }
    let dev: Vec<TokenRowParams> = (0..rows)
        .map(|r| TokenRowParams::new(c.rows[r], c.streams[r]))
        .collect();
    let pb = gpu.upload("params", &dev).unwrap();
    let mw = mask_words(k);
    let mask = if c.allowed.is_empty() {
        vec![u32::MAX; rows * mw]
    } else {
        c.allowed.clone()
    };
    let mb = gpu.upload("mask", &mask).unwrap();
    let sampler = gpu.token_sampler().unwrap();
    let gumbel = gpu.sampler().unwrap();
    for format in [LogitsFormat::F32, LogitsFormat::F16] {
        let words = |v: &[f32]| -> Vec<u32> {
            match format {
                LogitsFormat::F16 => {
                    pack_u16(&v.iter().map(|&x| f32_to_f16(x)).collect::<Vec<_>>())
                }
                _ => v.iter().map(|x| x.to_bits()).collect(),
            }
        };
        let dense = gpu.upload("dense", &words(&l)).unwrap();
        let wide = gpu.upload("padded", &words(&padded)).unwrap();
        let views = [
            LogitsView::new(dense.slice(..), format, rows as u64, k as u64),
            LogitsView::new(wide.slice(..), format, rows as u64, k as u64)
                .with_stride(stride as u64),
        ];
        let ra = apart(rows);
        let mut results = Vec::new();
        for view in views {
            let out = poisoned(gpu, 4 * ra + 3 * rows);
            run(gpu, |enc| {
                for (i, chain) in [
                    TokenChain::default(),
                    TokenChain {
                        allowed: Some(mb.slice(..)),
                        ..Default::default()
                    },
                ]
                .into_iter()
                .enumerate()
                {
                    let o = |w: usize| out.slice((w * ra * 4) as u64..((w * ra + rows) * 4) as u64);
                    let job = TokenJob {
                        status: Some(o(2 * i + 1)),
                        chain,
                        ..TokenJob::new(view, pb.slice(..), o(2 * i))
                    };
                    sampler.record(enc, &job).unwrap();
                }
                gumbel
                    .record(
                        enc,
                        &SampleJob {
                            logits: view,
                            top: 3,
                            tau: Temperature::Scalar(0.7),
                            stream: Stream::new(3),
                            noise: Noise::Bits32,
                            out: out.slice((16 * ra) as u64..((4 * ra + 3 * rows) * 4) as u64),
                        },
                    )
                    .unwrap();
            });
            results.push(words_of(&out, 4 * ra + 3 * rows));
        }
        assert_eq!(results[0], results[1], "{format:?}");
        // Every status 0: no NaN of the padding was read.
        assert!(
            results[1][ra..ra + rows].iter().all(|&s| s == 0),
            "{format:?}"
        );
        assert!(
            results[1][3 * ra..3 * ra + rows].iter().all(|&s| s == 0),
            "{format:?}"
        );
    }
    // Misuse.
    let b = gpu.upload("b", &vec![0u32; 4 * 1037]).unwrap();
    let o = poisoned(gpu, 8);
    let mut enc = gpu.device().create_command_encoder(&Default::default());
    let check = |r: Result<(), Error>, needle: &str| match r {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{needle}: {m}"),
        other => panic!("{needle}: {other:?}"),
    };
    let view =
        |rows: u64, stride: u64| LogitsView::f32(b.slice(..), rows, 1000).with_stride(stride);
    check(
        sampler.record(
            &mut enc,
            &TokenJob::new(view(2, 999), pb.slice(..), o.slice(..8)),
        ),
        "row stride 999 is below k = 1000",
    );
    check(
        sampler.record(
            &mut enc,
            &TokenJob::new(view(5, 1037), pb.slice(..), o.slice(..)),
        ),
        "logits: the slice holds",
    );
    assert!(
        sampler
            .record(
                &mut enc,
                &TokenJob::new(view(4, 1037), pb.slice(..), o.slice(..16))
            )
            .is_ok()
    );
}

fn words_of(b: &wgpu::Buffer, n: usize) -> Vec<u32> {
    gpu().read_buffer(b, n).unwrap()
}
