// Token sampling for language models: per row, temperature, min-p, top-k, top-p, the Gumbel-max
// draw over the kept set, and raw log-probabilities (the token's and the top n). Sort-free.
//
// Bindings (group 0):
//   0: uniform TokenParams
//   1: storage, read       logits: array<u32>  f32 bits, or f16/bf16 packed two per word
//                          (logits.wgsl); element j of dispatch row r is
//                          logit_bits(logit_base + r * stride + j) (stride >= k: LogitsView's)
//   2: storage, read       rowp: array<u32>    12 words per row at row_base + 12 r: temperature
//                          (f32 bits), top_k, top_p (f32 bits), min_p (f32 bits), seed lo, seed hi,
//                          offset lo, offset hi, repetition, frequency and presence penalties,
//                          top_n_sigma (f32 bits) (TokenRowParams in src/tokens/sampler.rs)
//   3: storage, read_write tokens: array<u32>  tokens[token_base + r]
//   4: storage, read_write logprobs: array<u32> f32 bits at logprob_base + r (OUT_LOGPROB)
//   5: storage, read_write top: array<u32>     2 words per entry at top_base + 2 (r * n_top + i):
//                          index, log-probability bits (OUT_TOP)
//   6: storage, read_write status: array<u32>  status_base + r (OUT_STATUS): 0 ok, else STATUS_*
//   7: storage, read       proc: array<u32>    with params.processed: the row's processed logits
//                          (token_process.wgsl), k f32 bits per row at proc_base + r * k; the
//                          filters, the draw and processed log-probabilities read them, raw
//                          log-probabilities read `logits`
//   8: storage, read_write aux: array<u32>     ranks at aux_base + r (OUT_RANK), or the final law,
//                          k f32 per row at aux_base + r * k (OUT_LAW); never both
// Unused outputs are bound to a dummy buffer and never written (the `outputs` bit mask says
// which are real).
//
// Counter scheme: element j of row r uses word j of the row's own stream (seed, offset) from
// rowp: lane (phase + j) % 4 of Philox block block0 + (phase + j) / 4 with block0 = offset / 4,
// phase = offset % 4. The final pass walks the row in whole blocks (one philox call per 4
// elements). With noise64 != 0, element j uses words 2j (high half) and 2j + 1 (low half): two
// elements per block, and for an odd phase each block's last pair ends in the next block (a
// second philox call). Nothing depends on the row's position in the batch.
//
// One workgroup per row (group_index = dispatch row; surplus groups return). Every index stays
// in range because each loop runs j < k (or the block's lanes are tested against phase and k),
// rows are < params.rows, and the host binds windows holding (rows - 1) * stride + k logits
// (and rows * k processed logits), rows * 12 row words, rows tokens / logprobs / statuses /
// ranks, rows * n_top * 2 top words and rows * k law entries.
//
// Bad parameters (a temperature that is negative, subnormal or not finite, top_p outside (0, 1], min_p
// outside [0, 1), a repetition penalty that is not finite and > 0, other penalties that are not
// finite, a top_n_sigma that is negative or not finite, or a row the processing kernel marked
// with BAD_ROW_BITS) give the row NO_INDEX, NaN log-probabilities and STATUS_BAD_PARAMS: tested
// on bits, since WGSL may assume floats are finite.
//
// The order: every filter keeps a prefix of one total order of the row, "larger logit, then
// lower index" (q is increasing in l). A logit's key is the order-preserving u32 image of its
// bits (masked -inf: key 0, never kept). The kept set is described by its last element
// th = (key, index): entry (key, j) is kept iff key > th.x, or key == th.x and j <= th.y.
//   * min-p: l >= m + t ln(min_p)  ->  th = (key(m + t ln(min_p)), NO_INDEX);
//   * top-k: th = the k-th entry of the order among the kept ones, found by a radix select on
//     (key, index) with 8-bit digits (4 key rounds, then ceil(log2 k / 8) index rounds, a
//     256-bin count histogram in workgroup memory per round);
//   * top-p: the mass goal p * Z_kept; a radix search on the key with 4-bit digits (8 rounds,
//     16 mass sums per invocation) finds the key T where the cumulative mass in the order
//     reaches the goal; its ties (equal logits, equal mass mu) need c = ceil(rest / mu) of
//     them, and the c-th smallest index among them (the index rounds of the select) closes th.
//     After a top-k of at most KEPT_CAP (512) entries, instead: one pass gathers the kept
//     entries into workgroup memory, they are put in order there, and the prefix is walked
//     (top_p_in_kept).
// Then one Gumbel-max over the kept entries: argmax (key of l / t + g, lower index first).
//
// top-n-sigma: a threshold like min-p, max - n sigma with sigma the population deviation of the
// row's finite (processed) logits: the count and the sum ride on the max pass, one more pass sums
// (l - mean)^2.
// After the draw: processed log-probabilities (the kept mass and the top n in the order of the
// processed logits, unkept entries after, in index order), ranks (a count), the law (a write).
// Passes over the row (each reads every logit once):
//   no filter, no log-probabilities: 1 (the draw);  t = 0 (greedy): 1 (+1 with log-probs);
//   log-probabilities (token's or top n): +1 (max, sum exp(l - max), per-invocation top-n lists);
//   min-p: +1 for the max (shared with the log-prob pass);  top-k: 4 + ceil(log2 k / 8);
//   top-p: +1 for the max, 1 for the kept mass, 8, then ceil(log2 k / 8); after a top-k of at
//   most 512: +1 (the gather), the max shared; top-n-sigma: +1 (sigma), the max shared; raw
//   log-probabilities of a processed row: +1 (the raw input); processed log-probabilities: +1;
//   ranks: +1; the law: +1 (kept mass, shared with processed log-probabilities) + 1 (the write).
// llvmpipe ends an invocation's loops after 65535 iterations: an invocation runs about
// passes * k / 256 iterations (the host checks the estimate).
#import config
#import philox
#import gumbel
#import logits
#import grid
#import reduce_workgroup

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> rowp: array<u32>;
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(4) var<storage, read_write> logprobs: array<u32>;
@group(0) @binding(5) var<storage, read_write> top: array<u32>;
@group(0) @binding(6) var<storage, read_write> status: array<u32>;
@group(0) @binding(7) var<storage, read> proc: array<u32>;
@group(0) @binding(8) var<storage, read_write> aux: array<u32>;

const NO_INDEX: u32 = 0xffffffffu;
const OUT_LOGPROB: u32 = 1u;
const OUT_TOP: u32 = 2u;
const OUT_STATUS: u32 = 4u;
const OUT_RANK: u32 = 8u;
const OUT_LAW: u32 = 16u;
const STATUS_BAD_PARAMS: u32 = 4u;
// Twin of BAD_ROW_BITS in token_process.wgsl.
const BAD_ROW_BITS: u32 = 0x7fc0bad0u;
const STATUS_NAN: u32 = 1u;
const STATUS_POS_INF: u32 = 2u;
const STATUS_ALL_MASKED: u32 = 3u;
const MAX_TOP_N: u32 = 20u;
const NAN_BITS: u32 = 0x7fc00000u;
const EMPTY: vec2<u32> = vec2<u32>(0u, NO_INDEX);
// Keeps every non-masked entry (key >= 1).
const KEEP_ALL: vec2<u32> = vec2<u32>(1u, NO_INDEX);

// A row's parameters, made workgroup-uniform (barriers follow decisions taken on them).
struct RowCfg {
    t: f32,
    top_k: u32,
    top_p: f32,
    min_p: f32,
    seed: vec2<u32>,
    offset: vec2<u32>,
    n_sigma: f32,
    // Nonzero: the row's parameters are out of their domain (STATUS_BAD_PARAMS).
    bad: u32,
}

var<workgroup> cfg_shared: RowCfg;
var<workgroup> hist: array<atomic<u32>, 256>;
// The select's verdict of a round, written by invocation 0: (digit, rank left, found).
var<workgroup> sel_shared: vec3<u32>;
// Top-p within a top-k of at most KEPT_CAP entries (top_p_in_kept): the kept entries and their
// masses, gathered, then moved to their places in the order. 6 KiB.
const KEPT_CAP: u32 = 2u * WG_SIZE;
var<workgroup> kept: array<vec2<u32>, KEPT_CAP>;
var<workgroup> kept_mass: array<f32, KEPT_CAP>;
var<workgroup> kept_count: atomic<u32>;

// The order-preserving image of an f32's bits; -0 counts as +0.
fn key_of(xb: u32) -> u32 {
    var b = xb;
    if (b == 0x80000000u) {
        b = 0u;
    }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The f32 whose key is `key` (inverse of key_of on finite values).
fn value_of_key(key: u32) -> f32 {
    return bitcast<f32>(select(~key, key & 0x7fffffffu, (key & 0x80000000u) != 0u));
}

// Key of logit bits: 0 for masked (-inf) and NaN entries, which are never kept.
fn logit_key(bits: u32) -> u32 {
    if (is_masked_bits(bits) || is_nan_bits(bits)) {
        return 0u;
    }
    return key_of(bits);
}

fn is_kept(key: u32, j: u32, th: vec2<u32>) -> bool {
    return key != 0u && (key > th.x || (key == th.x && j <= th.y));
}

// The logits the filters and the draw see: the processed row, or the input.
fn row_logit_bits(r: u32, j: u32) -> u32 {
    if (params.processed != 0u) {
        return proc[params.proc_base + r * params.k + j];
    }
    return raw_logit_bits(r, j);
}

// The input logits (raw log-probabilities), rows `stride` elements apart.
fn raw_logit_bits(r: u32, j: u32) -> u32 {
    return logit_bits(params.logit_base + r * params.stride + j, params.format);
}

fn is_finite_bits(b: u32) -> bool {
    return (b & 0x7f800000u) != 0x7f800000u;
}

// Per-invocation top-n list (private: a helper taking it by pointer with a while loop lost
// entries on llvmpipe GL, measured), sorted in the order.
var<private> list: array<vec2<u32>, 20>;

// Inserts c into the list of n_top entries, written as a fixed-length bubble.
fn list_insert(c: vec2<u32>, n_top: u32) {
    if (n_top == 0u || !before(c, list[n_top - 1u])) {
        return;
    }
    var x = c;
    for (var i = 0u; i < n_top; i++) {
        if (before(x, list[i])) {
            let y = list[i];
            list[i] = x;
            x = y;
        }
    }
}

// ---- workgroup reductions (all invocations call them; uniform control flow) ----
// reduce_best / reduce_sum4 / reduce_lse and their workgroup-memory trees (with `before`, the
// order) come from reduce_workgroup.wgsl, subgroup operations where the adapter has them.

// ---- radix select on (key, index) ----

// The rank-th entry (1-based) of the order among the entries of row r kept by `th` whose key is
// `key0` when `index_only` (else any key): returns (key, index, found). Rounds 0..3 take the key's
// 8-bit digits from the top (bins scanned from 255 down: larger keys first), the remaining
// idx_rounds rounds the index's digits (bins scanned up: lower indices first).
fn select_rank(lid: u32, r: u32, th: vec2<u32>, rank: u32, index_only: bool, key0: u32) -> vec3<u32> {
    var key_prefix = select(0u, key0, index_only);
    var key_mask = select(0u, 0xffffffffu, index_only);
    var idx_prefix = 0u;
    var idx_mask = 0u;
    var left = rank;
    var found = 1u;
    let first = select(0u, 4u, index_only);
    let rounds = 4u + params.idx_rounds;
    for (var round = first; round < rounds; round++) {
        atomicStore(&hist[lid], 0u);
        workgroupBarrier();
        let on_key = round < 4u;
        let shift = select(8u * (params.idx_rounds - 1u - (round - 4u)), 24u - 8u * round, on_key);
        for (var j = lid; j < params.k; j += WG_SIZE) {
            let key = logit_key(row_logit_bits(r, j));
            if (is_kept(key, j, th) && (key & key_mask) == key_prefix && (j & idx_mask) == idx_prefix) {
                let d = (select(j, key, on_key) >> shift) & 0xffu;
                atomicAdd(&hist[d], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            var acc = 0u;
            var digit = 0u;
            var ok = 0u;
            for (var i = 0u; i < 256u; i++) {
                let d = select(i, 255u - i, on_key);
                let c = atomicLoad(&hist[d]);
                if (acc + c >= left) {
                    digit = d;
                    ok = 1u;
                    break;
                }
                acc += c;
            }
            sel_shared = vec3<u32>(digit, left - acc, ok);
        }
        workgroupBarrier();
        let v = sel_shared;
        workgroupBarrier();
        found = found & v.z;
        left = v.y;
        if (on_key) {
            key_prefix |= v.x << shift;
            key_mask |= 0xffu << shift;
        } else {
            idx_prefix |= v.x << shift;
            idx_mask |= 0xffu << shift;
        }
    }
    // With no index rounds (k = 1) the index is the only one there is.
    return vec3<u32>(key_prefix, idx_prefix, found);
}

// The tighter of two kept-set limits: the one earlier in the order.
fn tighter(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return select(b, a, before(a, b));
}

// ---- top-p ----

// The kept set's last entry after top-p: the shortest prefix (in the order) of the entries
// kept by `th` whose mass exp((l - m) / t) reaches p times their total.
fn top_p_limit(lid: u32, r: u32, th: vec2<u32>, m: f32, t: f32, p: f32) -> vec2<u32> {
    var z = 0.0;
    for (var j = lid; j < params.k; j += WG_SIZE) {
        let bits = row_logit_bits(r, j);
        if (is_kept(logit_key(bits), j, th)) {
            z += exp((bitcast<f32>(bits) - m) / t);
        }
    }
    let goal = p * reduce_sum4(lid, vec4<f32>(z, 0.0, 0.0, 0.0)).x;
    // Mass of the kept entries above the current key prefix's range.
    var above = 0.0;
    var prefix = 0u;
    var mask = 0u;
    for (var round = 0u; round < 8u; round++) {
        let shift = 28u - 4u * round;
        // Explicitly zeroed: kernels may be compiled without wgpu's zero-initialisation.
        var mass = array<f32, 16>();
        for (var j = lid; j < params.k; j += WG_SIZE) {
            let bits = row_logit_bits(r, j);
            let key = logit_key(bits);
            if (is_kept(key, j, th) && (key & mask) == prefix) {
                let d = (key >> shift) & 15u;
                mass[d] += exp((bitcast<f32>(bits) - m) / t);
            }
        }
        let s0 = reduce_sum4(lid, vec4<f32>(mass[0], mass[1], mass[2], mass[3]));
        let s1 = reduce_sum4(lid, vec4<f32>(mass[4], mass[5], mass[6], mass[7]));
        let s2 = reduce_sum4(lid, vec4<f32>(mass[8], mass[9], mass[10], mass[11]));
        let s3 = reduce_sum4(lid, vec4<f32>(mass[12], mass[13], mass[14], mass[15]));
        let bins = array<f32, 16>(s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w,
                                  s2.x, s2.y, s2.z, s2.w, s3.x, s3.y, s3.z, s3.w);
        // Every invocation takes the same decision from the same sums. Larger keys first: the
        // bin where the cumulative mass reaches the goal; if rounding leaves the goal
        // unreached, the last non-empty bin.
        var digit = 16u;
        var last = 0u;
        var acc = above;
        var acc_last = above;
        for (var i = 0u; i < 16u; i++) {
            let d = 15u - i;
            if (bins[d] > 0.0) {
                last = d;
                acc_last = acc;
                if (acc + bins[d] >= goal) {
                    digit = d;
                    break;
                }
                acc += bins[d];
            }
        }
        if (digit == 16u) {
            digit = last;
            acc = acc_last;
        }
        above = acc;
        prefix |= digit << shift;
        mask |= 15u << shift;
    }
    // Ties at key `prefix` share one mass; c of them close the prefix.
    // mu > 0: the chosen bin holds kept mass (the row's max has mass 1, so the kept mass is
    // >= 1). A NaN or out-of-range quotient (only possible on a bad row) takes c = 1.
    let mu = exp((value_of_key(prefix) - m) / t);
    let quot = ceil((goal - above) / mu);
    let c = select(1u, u32(quot), quot >= 1.0 && quot < 4.0e9);
    let e = select_rank(lid, r, th, c, true, prefix);
    if (e.z == 0u) {
        // Fewer than c ties kept (rounding): all of them.
        return tighter(th, vec2<u32>(prefix, NO_INDEX));
    }
    return tighter(th, e.xy);
}

// The same limit when the entries kept by `th` are at most KEPT_CAP (a top-k of at most that
// many): one pass gathers them (key, index) with their masses into workgroup memory, each is
// moved to its rank in the order (the entries before it, counted: the order is total, so ranks
// are distinct), and invocation 0 walks the sorted masses: the total, then the first prefix
// that reaches p times it (the last entry if rounding leaves the goal unreached). Exact in the
// order (ties at the cut go to the lower index by construction), one pass instead of 10 + the
// index rounds. Loops: 2 slots per invocation, n <= KEPT_CAP comparisons each, 2 n steps for
// invocation 0. Called in uniform control flow.
fn top_p_in_kept(lid: u32, r: u32, th: vec2<u32>, m: f32, t: f32, p: f32) -> vec2<u32> {
    if (lid == 0u) {
        atomicStore(&kept_count, 0u);
    }
    workgroupBarrier();
    for (var j = lid; j < params.k; j += WG_SIZE) {
        let bits = row_logit_bits(r, j);
        let key = logit_key(bits);
        if (is_kept(key, j, th)) {
            let slot = atomicAdd(&kept_count, 1u);
            // Always below KEPT_CAP (the caller's condition); checked so no write can stray.
            if (slot < KEPT_CAP) {
                kept[slot] = vec2<u32>(key, j);
                kept_mass[slot] = exp((bitcast<f32>(bits) - m) / t);
            }
        }
    }
    workgroupBarrier();
    let n = min(atomicLoad(&kept_count), KEPT_CAP);
    // Each invocation's two slots: their entries, masses and ranks, held across the barrier.
    var entry = array<vec2<u32>, 2>(EMPTY, EMPTY);
    var mass = array<f32, 2>(0.0, 0.0);
    var rank = array<u32, 2>(KEPT_CAP, KEPT_CAP);
    for (var h = 0u; h < 2u; h++) {
        let slot = lid + h * WG_SIZE;
        if (slot < n) {
            let e = kept[slot];
            var before_e = 0u;
            for (var i = 0u; i < n; i++) {
                before_e += select(0u, 1u, before(kept[i], e));
            }
            entry[h] = e;
            mass[h] = kept_mass[slot];
            rank[h] = before_e;
        }
    }
    workgroupBarrier();
    for (var h = 0u; h < 2u; h++) {
        if (rank[h] < n) {
            kept[rank[h]] = entry[h];
            kept_mass[rank[h]] = mass[h];
        }
    }
    workgroupBarrier();
    // Nothing kept (a bad row, flagged elsewhere): the limit stays.
    if (lid == 0u && n == 0u) {
        sel_shared = vec3<u32>(th, 0u);
    }
    if (lid == 0u && n > 0u) {
        var z = 0.0;
        for (var i = 0u; i < n; i++) {
            z += kept_mass[i];
        }
        let goal = p * z;
        var cut = n - 1u;
        var acc = 0.0;
        for (var i = 0u; i < n; i++) {
            acc += kept_mass[i];
            if (acc >= goal) {
                cut = i;
                break;
            }
        }
        let e = kept[cut];
        sel_shared = vec3<u32>(e.x, e.y, 1u);
    }
    workgroupBarrier();
    let v = sel_shared;
    workgroupBarrier();
    return tighter(th, v.xy);
}

// ---- the kernel ----

// The candidate of element j for the draw: (key of l / t + g, j), or EMPTY if not kept.
fn draw_candidate(bits: u32, j: u32, th: vec2<u32>, t: f32, w: u32) -> vec2<u32> {
    if (!is_kept(logit_key(bits), j, th)) {
        return EMPTY;
    }
    let z = bitcast<f32>(bits) / t + gumbel_from_word(w);
    return vec2<u32>(key_of(bitcast<u32>(z)), j);
}

// Whether a row's parameters are out of their domain (tested on bits: WGSL may assume floats
// are finite).
fn bad_params(t: u32, top_p: u32, min_p: u32, rp: u32, fp: u32, pp: u32, ns: u32) -> bool {
    let fin = is_finite_bits(t) && is_finite_bits(top_p) && is_finite_bits(min_p)
        && is_finite_bits(rp) && is_finite_bits(fp) && is_finite_bits(pp) && is_finite_bits(ns);
    if (!fin) {
        return true;
    }
    // A subnormal temperature (either sign; the device may flush it to 0, and l / t overflows
    // for |l| above ~1e-38 / t) is out of domain, as in the other families.
    if ((t & 0x7f800000u) == 0u && (t & 0x007fffffu) != 0u) {
        return true;
    }
    let p = bitcast<f32>(top_p);
    let mp = bitcast<f32>(min_p);
    return bitcast<f32>(t) < 0.0 || !(p > 0.0 && p <= 1.0) || !(mp >= 0.0 && mp < 1.0)
        || !(bitcast<f32>(rp) > 0.0) || bitcast<f32>(ns) < 0.0;
}

@compute @workgroup_size(WG_SIZE)
fn tokens_row(ids: WgIds, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = workgroup_setup(ids);
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    if (lid == 0u) {
        let b = params.row_base + 12u * r;
        var bad = bad_params(rowp[b], rowp[b + 2u], rowp[b + 3u], rowp[b + 8u], rowp[b + 9u],
                             rowp[b + 10u], rowp[b + 11u]);
        if (params.processed != 0u && proc[params.proc_base + r * params.k] == BAD_ROW_BITS) {
            bad = true;
        }
        cfg_shared = RowCfg(bitcast<f32>(rowp[b]), rowp[b + 1u], bitcast<f32>(rowp[b + 2u]),
                            bitcast<f32>(rowp[b + 3u]), vec2<u32>(rowp[b + 4u], rowp[b + 5u]),
                            vec2<u32>(rowp[b + 6u], rowp[b + 7u]), bitcast<f32>(rowp[b + 11u]),
                            select(0u, 1u, bad));
    }
    let cfg = workgroupUniformLoad(&cfg_shared);
    let k = params.k;
    let n_top = select(0u, params.n_top, (params.outputs & OUT_TOP) != 0u);
    let want_lp = (params.outputs & OUT_LOGPROB) != 0u || n_top > 0u;
    let processed_mode = params.mode != 0u;
    let raw_out = want_lp && !processed_mode;
    let proc_out = want_lp && processed_mode;
    let law_out = (params.outputs & OUT_LAW) != 0u;
    let rank_out = (params.outputs & OUT_RANK) != 0u;
    for (var i = 0u; i < MAX_TOP_N; i++) {
        list[i] = EMPTY;
    }
    if (cfg.bad != 0u) {
        // Uniform: cfg comes from workgroupUniformLoad.
        if (law_out) {
            for (var j = lid; j < k; j += WG_SIZE) {
                aux[params.aux_base + r * k + j] = NAN_BITS;
            }
        }
        if (lid == 0u) {
            write_row(r, NO_INDEX, NAN_BITS, STATUS_BAD_PARAMS, 0u);
            for (var i = 0u; i < n_top; i++) {
                let o = params.top_base + 2u * (r * params.n_top + i);
                top[o] = NO_INDEX;
                top[o + 1u] = NAN_BITS;
            }
        }
        return;
    }
    let greedy = !(cfg.t > 0.0);
    let use_n_sigma = !greedy && cfg.n_sigma > 0.0;
    let use_min_p = !greedy && cfg.min_p > 0.0;
    let use_top_k = !greedy && cfg.top_k > 0u && cfg.top_k < k;
    let use_top_p = !greedy && cfg.top_p < 1.0;
    let viewed = params.processed != 0u;
    let need_stats = use_min_p || use_top_p || use_n_sigma || (raw_out && !viewed)
        || ((proc_out || law_out) && !greedy);

    // Pass R (a processed row with raw log-probabilities): max and sum exp(l - max) of the
    // input, the top-n lists. Pass A: the same over the logits the filters see (the lists
    // when those are the input), with the count and sum of the finite ones (top-n-sigma).
    var raw_lse = vec2<f32>(-3.4e38, 0.0);
    var view_lse = vec2<f32>(-3.4e38, 0.0);
    var cnt_sum = vec2<f32>(0.0, 0.0);
    for (var ps = 0u; ps < 2u; ps++) {
        let raw_pass = ps == 0u;
        if ((raw_pass && !(raw_out && viewed)) || (!raw_pass && !need_stats)) {
            continue;
        }
        let lists = raw_out && (raw_pass || !viewed);
        var m = -3.4e38;
        var s = 0.0;
        var cnt = 0.0;
        var sum = 0.0;
        for (var j = lid; j < k; j += WG_SIZE) {
            let bits = select(row_logit_bits(r, j), raw_logit_bits(r, j), raw_pass);
            // Masked entries take part with the key of -inf: the top n lists every entry.
            if (lists && !is_nan_bits(bits)) {
                list_insert(vec2<u32>(key_of(bits), j), n_top);
            }
            if (is_masked_bits(bits) || is_nan_bits(bits) || is_pos_inf_bits(bits)) {
                continue;
            }
            let x = bitcast<f32>(bits);
            cnt += 1.0;
            sum += x;
            if (x > m) {
                s = s * exp(m - x) + 1.0;
                m = x;
            } else {
                s += exp(x - m);
            }
        }
        let lse = reduce_lse(lid, m, s);
        if (raw_pass) {
            raw_lse = lse;
        } else {
            view_lse = lse;
            if (use_n_sigma) {
                cnt_sum = reduce_sum4(lid, vec4<f32>(cnt, sum, 0.0, 0.0)).xy;
            }
        }
    }
    if (!viewed) {
        raw_lse = view_lse;
    }
    let m = view_lse.x;
    let log_z = raw_lse.x + log(raw_lse.y);

    // The kept set's limit: the thresholds (top-n-sigma, min-p), then top-k, then top-p.
    var th = KEEP_ALL;
    if (use_n_sigma) {
        let mean = cnt_sum.y / max(cnt_sum.x, 1.0);
        var d2 = 0.0;
        for (var j = lid; j < k; j += WG_SIZE) {
            let bits = row_logit_bits(r, j);
            if (is_finite_bits(bits)) {
                let d = bitcast<f32>(bits) - mean;
                d2 += d * d;
            }
        }
        let sigma = sqrt(reduce_sum4(lid, vec4<f32>(d2, 0.0, 0.0, 0.0)).x / max(cnt_sum.x, 1.0));
        // Never above the max: the largest logit(s) stay.
        let thr = min(m - cfg.n_sigma * sigma, m);
        th = tighter(th, vec2<u32>(max(key_of(bitcast<u32>(thr)), 1u), NO_INDEX));
    }
    if (use_min_p) {
        // Never above the max: a min_p near 1 keeps the largest logit(s).
        let thr = min(m + cfg.t * log(cfg.min_p), m);
        th = tighter(th, vec2<u32>(max(key_of(bitcast<u32>(thr)), 1u), NO_INDEX));
    }
    if (use_top_k) {
        let e = select_rank(lid, r, th, cfg.top_k, false, 0u);
        if (e.z != 0u) {
            th = tighter(th, e.xy);
        }
    }
    if (use_top_p) {
        if (use_top_k && cfg.top_k <= KEPT_CAP) {
            th = top_p_in_kept(lid, r, th, m, cfg.t, cfg.top_p);
        } else {
            th = top_p_limit(lid, r, th, m, cfg.t, cfg.top_p);
        }
    }

    // The draw: Gumbel-max over the kept entries (greedy: the largest logit), by stream blocks.
    var bad = 0u;
    var best = EMPTY;
    if (greedy) {
        for (var j = lid; j < k; j += WG_SIZE) {
            let bits = row_logit_bits(r, j);
            bad |= select(0u, 1u, is_nan_bits(bits)) | select(0u, 2u, is_pos_inf_bits(bits));
            let c = vec2<u32>(logit_key(bits), j);
            if (c.x != 0u && before(c, best)) {
                best = c;
            }
        }
    } else if (params.noise64 != 0u) {
        let phase = cfg.offset.x & 3u;
        let block0 = vec2<u32>((cfg.offset.x >> 2u) | (cfg.offset.y << 30u), cfg.offset.y >> 2u);
        let blocks = (phase + 2u * k + 3u) / 4u;
        for (var b = lid; b < blocks; b += WG_SIZE) {
            let words = philox_block(cfg.seed, block0, b);
            var next = 0u;
            if ((phase & 1u) != 0u) {
                next = philox_block(cfg.seed, block0, b + 1u).x;
            }
            let ws = array<u32, 5>(words.x, words.y, words.z, words.w, next);
            for (var e = 0u; e < 4u; e++) {
                let s = 4u * b + e;
                if (s < phase || ((s - phase) & 1u) != 0u || (s - phase) / 2u >= k) {
                    continue;
                }
                let j = (s - phase) / 2u;
                let bits = row_logit_bits(r, j);
                bad |= select(0u, 1u, is_nan_bits(bits)) | select(0u, 2u, is_pos_inf_bits(bits));
                // Noise only for kept entries (two logs each).
                if (is_kept(logit_key(bits), j, th)) {
                    let z = bitcast<f32>(bits) / cfg.t + gumbel_from_words64(ws[e], ws[e + 1u]);
                    let c = vec2<u32>(key_of(bitcast<u32>(z)), j);
                    if (before(c, best)) {
                        best = c;
                    }
                }
            }
        }
    } else {
        let phase = cfg.offset.x & 3u;
        let block0 = vec2<u32>((cfg.offset.x >> 2u) | (cfg.offset.y << 30u), cfg.offset.y >> 2u);
        let blocks = (phase + k + 3u) / 4u;
        for (var b = lid; b < blocks; b += WG_SIZE) {
            let words = philox_block(cfg.seed, block0, b);
            // The four lanes written out (no inner loop: llvmpipe counts loop iterations).
            let ws = array<u32, 4>(words.x, words.y, words.z, words.w);
            for (var e = 0u; e < 4u; e++) {
                let s = 4u * b + e;
                if (s < phase || s - phase >= k) {
                    continue;
                }
                let j = s - phase;
                let bits = row_logit_bits(r, j);
                bad |= select(0u, 1u, is_nan_bits(bits)) | select(0u, 2u, is_pos_inf_bits(bits));
                let c = draw_candidate(bits, j, th, cfg.t, ws[e]);
                if (c.x != 0u && before(c, best)) {
                    best = c;
                }
            }
        }
    }
    best = reduce_best(lid, best);
    // The bad-logit flags, OR-reduced in the arg-max tree's slots (free between its calls).
    red_best[lid] = vec2<u32>(bad, 0u);
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_best[lid].x |= red_best[lid + s].x;
        }
        workgroupBarrier();
    }
    // The flags and the arg-max's index steer branches that hold barriers, so WGSL's uniformity
    // rule (which Tint enforces in the browser; naga does not) needs them workgroup-uniform: the
    // reduction's result is the same in every invocation, but only workgroupUniformLoad tells
    // the analysis so.
    if (lid == 0u) {
        red_best[0].y = best.y;
    }
    let flags = workgroupUniformLoad(&red_best[0]);
    let bad_row = flags.x;
    var code = 0u;
    if ((bad_row & 1u) != 0u) {
        code = STATUS_NAN;
    } else if ((bad_row & 2u) != 0u) {
        code = STATUS_POS_INF;
    } else if (flags.y == NO_INDEX) {
        code = STATUS_ALL_MASKED;
    }
    let token = select(NO_INDEX, flags.y, code == 0u);

    // Pass P (processed log-probabilities, the law): the kept mass s_kept = sum over the kept
    // set of exp((l - m) / t), and the top-n lists in the order of the processed logits with
    // unkept entries after (key 0), in index order. Greedy rows keep the token alone.
    var s_kept = 1.0;
    if ((proc_out || law_out) && code == 0u) {
        var z = 0.0;
        for (var j = lid; j < k; j += WG_SIZE) {
            let bits = row_logit_bits(r, j);
            let key = logit_key(bits);
            var kp = is_kept(key, j, th);
            if (greedy) {
                kp = j == token;
            } else if (kp) {
                z += exp((bitcast<f32>(bits) - m) / cfg.t);
            }
            if (proc_out) {
                list_insert(vec2<u32>(select(0u, key, kp), j), n_top);
            }
        }
        if (!greedy) {
            s_kept = reduce_sum4(lid, vec4<f32>(z, 0.0, 0.0, 0.0)).x;
        }
    }
    let log_s = log(s_kept);

    // Top n: n rounds of the best head over the invocations' lists.
    var head = 0u;
    for (var i = 0u; i < n_top; i++) {
        var mine = EMPTY;
        if (head < n_top) {
            mine = list[head];
        }
        let w = reduce_best(lid, mine);
        if (w.y != NO_INDEX && mine.y == w.y) {
            head++;
        }
        if (lid == 0u) {
            let o = params.top_base + 2u * (r * params.n_top + i);
            var lp = NAN_BITS;
            var idx = NO_INDEX;
            if (code == 0u && w.y != NO_INDEX) {
                idx = w.y;
                if (processed_mode) {
                    lp = processed_logprob(r, w.y, w.x != 0u, greedy, m, cfg.t, log_s);
                } else {
                    let bits = raw_logit_bits(r, w.y);
                    lp = select(bitcast<u32>(bitcast<f32>(bits) - log_z), F32_NEG_INF_BITS,
                                is_masked_bits(bits));
                }
            }
            top[o] = idx;
            top[o + 1u] = lp;
        }
    }

    // The rank: entries whose (processed) logit is >= the token's (kept ones, processed).
    var rank = 0u;
    if (rank_out && code == 0u) {
        if (lid == 0u) {
            atomicStore(&kept_count, 0u);
        }
        workgroupBarrier();
        if (!(processed_mode && greedy)) {
            let tb = select(raw_logit_bits(r, token), row_logit_bits(r, token), processed_mode);
            let tkey = key_of(tb);
            var c = 0u;
            for (var j = lid; j < k; j += WG_SIZE) {
                if (processed_mode) {
                    let key = logit_key(row_logit_bits(r, j));
                    c += select(0u, 1u, is_kept(key, j, th) && key >= tkey);
                } else {
                    let bits = raw_logit_bits(r, j);
                    c += select(0u, 1u, !is_nan_bits(bits) && key_of(bits) >= tkey);
                }
            }
            atomicAdd(&kept_count, c);
        } else if (lid == 0u) {
            atomicStore(&kept_count, 1u);
        }
        workgroupBarrier();
        rank = atomicLoad(&kept_count);
    }

    // The final law.
    if (law_out) {
        for (var j = lid; j < k; j += WG_SIZE) {
            var v = NAN_BITS;
            if (code == 0u) {
                let bits = row_logit_bits(r, j);
                if (greedy) {
                    v = select(0u, bitcast<u32>(1.0), j == token);
                } else if (is_kept(logit_key(bits), j, th)) {
                    v = bitcast<u32>(exp((bitcast<f32>(bits) - m) / cfg.t - log_s));
                } else {
                    v = 0u;
                }
            }
            aux[params.aux_base + r * k + j] = v;
        }
    }

    if (lid == 0u) {
        var lp = NAN_BITS;
        if (code == 0u) {
            if (processed_mode) {
                lp = processed_logprob(r, token, true, greedy, m, cfg.t, log_s);
            } else {
                lp = bitcast<u32>(bitcast<f32>(raw_logit_bits(r, token)) - log_z);
            }
        }
        write_row(r, token, lp, code, rank);
    }
}

// The log of the final law at entry j (kept or not) of a row: (l - m) / t - log s_kept, 0 for
// the token of a greedy row, -inf outside the kept set.
fn processed_logprob(r: u32, j: u32, kept: bool, greedy: bool, m: f32, t: f32, log_s: f32) -> u32 {
    if (!kept) {
        return F32_NEG_INF_BITS;
    }
    if (greedy) {
        return 0u;
    }
    return bitcast<u32>((bitcast<f32>(row_logit_bits(r, j)) - m) / t - log_s);
}

// Invocation 0's per-row outputs: token, its log-probability, the status, the rank.
fn write_row(r: u32, token: u32, lp: u32, code: u32, rank: u32) {
    tokens[params.token_base + r] = token;
    if ((params.outputs & OUT_LOGPROB) != 0u) {
        logprobs[params.logprob_base + r] = lp;
    }
    if ((params.outputs & OUT_STATUS) != 0u) {
        status[params.status_base + r] = code;
    }
    if ((params.outputs & OUT_RANK) != 0u) {
        aux[params.aux_base + r] = rank;
    }
}
