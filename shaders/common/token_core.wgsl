// Token sampling's shared core, imported by the three token kernels (tokens.wgsl: one workgroup
// per row; tokens_split.wgsl: a row spread over many workgroups, one dispatch per pass;
// tokens_final.wgsl: the split path's last step). Nothing here reads a buffer binding, so every
// importer can take it; the passes over the logits are in token_passes.wgsl.
//
// What makes the two paths give the same bits: every quantity a pass gathers over a row is
// aggregated exactly, so it does not depend on how the row is cut into workgroups or in which
// order they finish:
//   * maxima and minima of keys (order-preserving u32 images of the logits): atomicMax;
//   * counts and the radix histograms: integer adds;
//   * sums of floats (the masses exp((l - m) / t) of top-p, the log-sum-exp's sum, the sums of
//     top-n-sigma's mean and variance): each term is rounded once to a 96-bit fixed-point number
//     (three u32 words, `fx`, in units of 2^-shift with a shift fixed per row before the pass)
//     and added as integers (with carries), so sums are exact and associative;
//   * the arg-max of the draw and the top-n lists: the exact order (larger key, lower index).
// Every decision is then the same function of the same exact aggregates, computed by
// invocation 0 of a workgroup (one-workgroup path: the row's own; split path: every workgroup of
// the next pass computes it from the merged aggregates, workgroup 0 keeps it for later passes).
//
// Needs: config (WG_SIZE, TOKEN_*), reduce_best (before), params (TokenParams: k, n_top,
// outputs, idx_rounds, mode, processed, filters).
// Indices: `dec` and `agg` by constants below DEC_WORDS / AGG_WORDS (agg_reset: lid <
// AGG_WORDS), `hist` by lid < 256 or an 8-bit digit, top-p bins by a 4-bit digit, `kept` by
// slots below min(count, KEPT_CAP) or a rank below that count, the top-n list below n_top <=
// MAX_TOP_N; no loop depends on data beyond those bounds.

const NO_INDEX: u32 = 0xffffffffu;
const OUT_LOGPROB: u32 = 1u;
const OUT_TOP: u32 = 2u;
const OUT_STATUS: u32 = 4u;
const OUT_RANK: u32 = 8u;
const OUT_LAW: u32 = 16u;
const STATUS_NAN: u32 = 1u;
const STATUS_POS_INF: u32 = 2u;
const STATUS_ALL_MASKED: u32 = 3u;
const STATUS_BAD_PARAMS: u32 = 4u;
// Twin of BAD_ROW_BITS in token_process.wgsl.
const BAD_ROW_BITS: u32 = 0x7fc0bad0u;
const MAX_TOP_N: u32 = TOKEN_MAX_TOP_N;
const NAN_BITS: u32 = 0x7fc00000u;
const NEG_INF_BITS: u32 = 0xff800000u;
const EMPTY: vec2<u32> = vec2<u32>(0u, NO_INDEX);
// Keeps every non-masked entry (key >= 1).
const KEEP_ALL: vec2<u32> = vec2<u32>(1u, NO_INDEX);
// Top-p within a top-k of at most this many entries sorts the kept set (top_p_in_kept).
const KEPT_CAP: u32 = TOKEN_KEPT_CAP;

// The filters a job allows (TokenFilters in src/tokens/sampler.rs, params.filters).
const F_TOP_K: u32 = 1u;
const F_TOP_P_IN_TOP_K: u32 = 2u;
const F_TOP_P: u32 = 4u;
const F_MIN_P: u32 = 8u;
const F_TOP_N_SIGMA: u32 = 16u;

// ---- the passes, in the order they run (a pass a row does not need is skipped) ----
const P_STATS: u32 = 0u;   // max (view, raw), count and min (sigma), top-k round 0
const P_MEAN: u32 = 1u;    // top-n-sigma: sum of (m - l)
const P_VAR: u32 = 2u;     // top-n-sigma: sum of (l - mean)^2
const P_TOPK: u32 = 3u;    // top-k select rounds 1..7 (3 key rounds, then index rounds)
const P_GATHER: u32 = 10u; // top-p after a top-k of at most KEPT_CAP: gather the kept set
const P_TOPP: u32 = 11u;   // top-p mass rounds 0..7 (4-bit key digits)
const P_TIES: u32 = 19u;   // top-p: index rounds among the tied entries at the cut
const P_DRAW: u32 = 23u;   // the draw, the log-sum-exp sums, the kept mass, the top-n lists
const P_POST: u32 = 24u;   // rank count, the law
const N_PASSES: u32 = 25u;

// ---- a row's decisions (`dec`), u32 words; floats as bits ----
const D_T: u32 = 0u;
const D_TOPK: u32 = 1u;
const D_TOPP: u32 = 2u;
const D_MINP: u32 = 3u;
const D_SEED: u32 = 4u;    // 2 words
const D_OFF: u32 = 6u;     // 2 words
const D_NSIG: u32 = 8u;
const D_CODE: u32 = 9u;    // status: STATUS_BAD_PARAMS from the start, the rest after the draw
const D_M: u32 = 10u;      // key of the max of the logits the filters see (0: none finite)
const D_MRAW: u32 = 11u;   // key of the max of the input logits
const D_CNT: u32 = 12u;    // finite logits
const D_NMIN: u32 = 13u;   // ~key of their min
const D_MEAN: u32 = 14u;
const D_SHIFT: u32 = 15u;  // sigma's fixed-point shift (i32 bits)
const D_TH: u32 = 16u;     // 2 words: the kept set's last entry
const S_KP: u32 = 18u;     // select: key prefix, key mask, index prefix, index mask
const S_KM: u32 = 19u;
const S_IP: u32 = 20u;
const S_IM: u32 = 21u;
const S_LEFT: u32 = 22u;   // rank still to find within the prefix
const S_MODE: u32 = 23u;   // 0 idle, 1 top-k, 2 top-p's ties, 3 top-k by gathering
const S_NEXT: u32 = 24u;   // the next round
const D_ABOVE: u32 = 25u;  // 3 words: top-p mass above the key prefix (fx)
const D_GOAL: u32 = 28u;   // 3 words: top-p's goal p * Z (fx)
const D_PP: u32 = 31u;     // top-p key prefix and mask
const D_PM: u32 = 32u;
const D_PON: u32 = 33u;    // top-p by mass rounds
const D_TOKEN: u32 = 34u;
const D_TOKB: u32 = 35u;   // the token's logit (the filters' view) and input logit
const D_TOKRAW: u32 = 36u;
const D_LOGZ: u32 = 37u;   // log of the input's partition function
const D_LOGS: u32 = 38u;   // log of the kept mass
const D_RANK: u32 = 39u;
const D_GLO: u32 = 40u;    // top-k by gathering: the lowest key of the candidates
const DEC_WORDS: u32 = TOKEN_DEC_WORDS;

var<workgroup> dec: array<u32, DEC_WORDS>;

// ---- the split path's state, per row (tokens_split.wgsl states the layout) ----
const REGION_WORDS: u32 = TOKEN_REGION_WORDS;
const SLOT_WORDS: u32 = TOKEN_SLOT_WORDS;

// Pass `seq`'s region of the row whose state starts at `row`.
fn state_region(row: u32, seq: u32) -> u32 {
    return row + 2u * DEC_WORDS + seq * REGION_WORDS;
}

// The row's gathered kept entries (after params.nseq regions).
fn state_gather(row: u32) -> u32 {
    return state_region(row, params.nseq);
}

// Workgroup w's draw slot.
fn state_slot(row: u32, w: u32) -> u32 {
    return state_gather(row) + 2u * KEPT_CAP + w * SLOT_WORDS;
}

// ---- a pass's aggregates in workgroup memory ----
const A_MAX: u32 = 0u;
const A_RAW: u32 = 1u;
const A_NMIN: u32 = 2u;
const A_CNT: u32 = 3u;
const A_FLAGS: u32 = 4u;   // bit 0 NaN, bit 1 +inf
const A_RANK: u32 = 5u;
const A_KEPT: u32 = 6u;    // gathered entries (P_GATHER)
const A_FXA: u32 = 7u;     // 3 words: sigma's sums, or the input's sum exp(l - m_raw)
const A_FXB: u32 = 10u;    // 3 words: the kept mass
const A_BINS: u32 = 13u;   // 16 x 3 words: top-p's mass per digit
const AGG_WORDS: u32 = TOKEN_AGG_WORDS;
var<workgroup> agg: array<atomic<u32>, AGG_WORDS>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> kept: array<vec2<u32>, KEPT_CAP>;
var<workgroup> kept_mass: array<f32, KEPT_CAP>;

// Zeroes the aggregates; all invocations call it (a barrier follows before use).
fn agg_reset(lid: u32) {
    if (lid < AGG_WORDS) {
        atomicStore(&agg[lid], 0u);
    }
    atomicStore(&hist[lid], 0u);
}

// ---- keys ----

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

fn is_kept(key: u32, j: u32, th: vec2<u32>) -> bool {
    return key != 0u && (key > th.x || (key == th.x && j <= th.y));
}

// The tighter of two kept-set limits: the one earlier in the order (both are prefixes of it).
fn tighter(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return select(b, a, before(a, b));
}

fn is_finite_bits(b: u32) -> bool {
    return (b & 0x7f800000u) != 0x7f800000u;
}

// ---- 96-bit fixed point (lo, mid, hi) ----
const FX_ZERO: vec3<u32> = vec3<u32>(0u, 0u, 0u);
// 2^64 units: no term exceeds it (masses are at most 1 at shift 64; sigma's shifts keep terms
// below 2^62 units), so 2^31 terms cannot overflow 96 bits.
const FX_MAX: vec3<u32> = vec3<u32>(0u, 0u, 1u);
const FX_MASS_SHIFT: i32 = 64;

fn fx_add(a: vec3<u32>, b: vec3<u32>) -> vec3<u32> {
    let lo = a.x + b.x;
    let c0 = select(0u, 1u, lo < a.x);
    let m1 = a.y + b.y;
    let c1 = select(0u, 1u, m1 < a.y);
    let mid = m1 + c0;
    let c2 = select(0u, 1u, mid < m1);
    return vec3<u32>(lo, mid, a.z + b.z + c1 + c2);
}

// a - b for a >= b.
fn fx_sub(a: vec3<u32>, b: vec3<u32>) -> vec3<u32> {
    let lo = a.x - b.x;
    let b0 = select(0u, 1u, a.x < b.x);
    let m1 = a.y - b.y;
    let b1 = select(0u, 1u, a.y < b.y);
    let mid = m1 - b0;
    let b2 = select(0u, 1u, m1 < b0);
    return vec3<u32>(lo, mid, a.z - b.z - b1 - b2);
}

fn fx_ge(a: vec3<u32>, b: vec3<u32>) -> bool {
    if (a.z != b.z) {
        return a.z > b.z;
    }
    if (a.y != b.y) {
        return a.y > b.y;
    }
    return a.x >= b.x;
}

fn fx_is_zero(a: vec3<u32>) -> bool {
    return (a.x | a.y | a.z) == 0u;
}

// floor(x * 2^shift) for x >= 0 (negative and zero: 0; +inf and anything past 2^72 units:
// FX_MAX). Exact integer operations on the bits.
fn fx_of(x: f32, shift: i32) -> vec3<u32> {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) == 0u || (b & 0x80000000u) != 0u) {
        return FX_ZERO;
    }
    if ((b & 0x7f800000u) == 0x7f800000u) {
        return FX_MAX;
    }
    let e = i32((b >> 23u) & 0xffu);
    var mant = b & 0x7fffffu;
    var ex = -149;
    if (e != 0) {
        mant |= 0x800000u;
        ex = e - 150;
    }
    // x = mant * 2^ex, so x * 2^shift = mant * 2^s.
    let s = ex + shift;
    if (s < 0) {
        if (s <= -32) {
            return FX_ZERO;
        }
        return vec3<u32>(mant >> u32(-s), 0u, 0u);
    }
    if (s >= 72) {
        return FX_MAX;
    }
    let sh = u32(s) % 32u;
    let low = mant << sh;
    // The bits shifted past the word (none for sh = 0; a shift by 32 would wrap).
    let high = select(0u, mant >> (32u - sh), sh > 0u);
    let w = u32(s) / 32u;
    if (w == 0u) {
        return vec3<u32>(low, high, 0u);
    } else if (w == 1u) {
        return vec3<u32>(0u, low, high);
    }
    // w == 2: s < 72 leaves sh < 8, so mant << sh < 2^32 and high == 0.
    return vec3<u32>(0u, 0u, low);
}

// The value of a fixed-point number in units of 2^-shift (deterministic rounding).
fn fx_to_f32(a: vec3<u32>, shift: i32) -> f32 {
    return ldexp(f32(a.z), 64 - shift) + ldexp(f32(a.y), 32 - shift) + ldexp(f32(a.x), -shift);
}

// Adds v to the workgroup's fixed-point word triple at agg[i..i + 3] (carries counted per add:
// the words' final values are the exact sum in any order).
fn fx_add_agg(i: u32, v: vec3<u32>) {
    if (fx_is_zero(v)) {
        return;
    }
    let old = atomicAdd(&agg[i], v.x);
    let c0 = select(0u, 1u, old + v.x < old);
    // v.y + c0 cannot wrap: terms and per-invocation partials stay below 2^94 (v.y < 2^32 - 1
    // unless v.z carries the rest).
    let add = v.y + c0;
    let old1 = atomicAdd(&agg[i + 1u], add);
    let c1 = select(0u, 1u, old1 + add < old1) + select(0u, 1u, add < v.y);
    let hi = v.z + c1;
    if (hi != 0u) {
        atomicAdd(&agg[i + 2u], hi);
    }
}

fn agg_fx(i: u32) -> vec3<u32> {
    return vec3<u32>(atomicLoad(&agg[i]), atomicLoad(&agg[i + 1u]), atomicLoad(&agg[i + 2u]));
}

// ---- the row's settings, from its decisions ----

fn d_f32(d: ptr<function, array<u32, DEC_WORDS>>, i: u32) -> f32 {
    return bitcast<f32>((*d)[i]);
}

fn d_greedy(d: ptr<function, array<u32, DEC_WORDS>>) -> bool {
    return !(d_f32(d, D_T) > 0.0);
}

fn d_th(d: ptr<function, array<u32, DEC_WORDS>>) -> vec2<u32> {
    return vec2<u32>((*d)[D_TH], (*d)[D_TH + 1u]);
}

// The max of the logits the filters see (-3.4e38 when none is finite: an all-masked row).
fn d_m(d: ptr<function, array<u32, DEC_WORDS>>) -> f32 {
    if ((*d)[D_M] == 0u) {
        return -3.4e38;
    }
    return value_of_key((*d)[D_M]);
}

fn d_m_raw(d: ptr<function, array<u32, DEC_WORDS>>) -> f32 {
    if ((*d)[D_MRAW] == 0u) {
        return -3.4e38;
    }
    return value_of_key((*d)[D_MRAW]);
}

fn n_top() -> u32 {
    return select(0u, params.n_top, (params.outputs & OUT_TOP) != 0u);
}

fn want_lp() -> bool {
    return (params.outputs & OUT_LOGPROB) != 0u || n_top() > 0u;
}

fn raw_out() -> bool {
    return want_lp() && params.mode == 0u;
}

fn proc_out() -> bool {
    return want_lp() && params.mode != 0u;
}

fn law_out() -> bool {
    return (params.outputs & OUT_LAW) != 0u;
}

fn rank_out() -> bool {
    return (params.outputs & OUT_RANK) != 0u;
}

fn use_n_sigma(d: ptr<function, array<u32, DEC_WORDS>>) -> bool {
    return !d_greedy(d) && d_f32(d, D_NSIG) > 0.0;
}

fn use_min_p(d: ptr<function, array<u32, DEC_WORDS>>) -> bool {
    return !d_greedy(d) && d_f32(d, D_MINP) > 0.0;
}

fn use_top_k(d: ptr<function, array<u32, DEC_WORDS>>) -> bool {
    return !d_greedy(d) && (*d)[D_TOPK] > 0u && (*d)[D_TOPK] < params.k;
}

fn use_top_p(d: ptr<function, array<u32, DEC_WORDS>>) -> bool {
    return !d_greedy(d) && d_f32(d, D_TOPP) < 1.0;
}

fn top_p_in_kept_set(d: ptr<function, array<u32, DEC_WORDS>>) -> bool {
    return use_top_p(d) && use_top_k(d) && (*d)[D_TOPK] <= KEPT_CAP;
}

// Whether the row needs the max pass: the thresholds, top-p, log-probabilities, the law.
fn need_stats(d: ptr<function, array<u32, DEC_WORDS>>) -> bool {
    return use_min_p(d) || use_top_p(d) || use_n_sigma(d) || raw_out() || use_top_k(d)
        || ((proc_out() || law_out()) && !d_greedy(d));
}

// Whether pass `pid` runs for the row (uniform: d is workgroup-uniform).
fn applies(pid: u32, d: ptr<function, array<u32, DEC_WORDS>>) -> bool {
    if (pid == P_POST) {
        return rank_out() || law_out();
    }
    if ((*d)[D_CODE] != 0u) {
        return false;
    }
    if (pid == P_STATS) {
        return need_stats(d);
    }
    if (pid == P_MEAN || pid == P_VAR) {
        return use_n_sigma(d);
    }
    if (pid >= P_TOPK && pid < P_GATHER) {
        return (*d)[S_MODE] == 1u && (*d)[S_NEXT] == pid - P_TOPK + 1u;
    }
    if (pid == P_GATHER) {
        return top_p_in_kept_set(d) || (*d)[S_MODE] == 3u;
    }
    if (pid >= P_TOPP && pid < P_TIES) {
        return (*d)[D_PON] != 0u;
    }
    if (pid >= P_TIES && pid < P_DRAW) {
        return (*d)[S_MODE] == 2u && (*d)[S_NEXT] == pid - P_TIES + 4u;
    }
    return pid == P_DRAW;
}

// The first pass from `first` on that the row needs (N_PASSES: none).
fn next_pass(first: u32, d: ptr<function, array<u32, DEC_WORDS>>) -> u32 {
    var pid = first;
    while (pid < N_PASSES && !applies(pid, d)) {
        pid++;
    }
    return pid;
}

// ---- decisions (invocation 0; the caller's barrier publishes `dec`) ----

// One round of the radix select over `hist`: the digit where the count reaches S_LEFT (larger
// keys first, then lower indices), the prefixes extended; the limit once found. A round whose
// bin holds exactly the entries still wanted ends the select early: they are all kept.
fn select_step(round: u32) {
    let on_key = round < 4u;
    let shift = select(8u * (params.idx_rounds - 1u - (round - 4u)), 24u - 8u * round, on_key);
    let left = dec[S_LEFT];
    var acc = 0u;
    var digit = 0u;
    var count = 0u;
    var ok = false;
    for (var i = 0u; i < 256u; i++) {
        let dg = select(i, 255u - i, on_key);
        let c = atomicLoad(&hist[dg]);
        if (acc + c >= left) {
            digit = dg;
            count = c;
            ok = true;
            break;
        }
        acc += c;
    }
    let th = vec2<u32>(dec[D_TH], dec[D_TH + 1u]);
    let mode = dec[S_MODE];
    if (!ok) {
        // Fewer entries than wanted: top-k keeps what there is; top-p's ties are all kept.
        if (mode == 2u) {
            let lim = tighter(th, vec2<u32>(dec[S_KP], NO_INDEX));
            dec[D_TH] = lim.x;
            dec[D_TH + 1u] = lim.y;
        }
        dec[S_MODE] = 0u;
        return;
    }
    let rest = left - acc;
    var kp = dec[S_KP];
    var ip = dec[S_IP];
    if (on_key) {
        kp |= digit << shift;
        dec[S_KP] = kp;
        dec[S_KM] |= 0xffu << shift;
    } else {
        ip |= digit << shift;
        dec[S_IP] = ip;
        dec[S_IM] |= 0xffu << shift;
    }
    dec[S_LEFT] = rest;
    let last = round + 1u >= 4u + params.idx_rounds;
    var lim = vec2<u32>(0u, 0u);
    var done = false;
    if (rest == count) {
        // The whole bin is kept: on a key round every key from the bin's lowest up, on an index
        // round the bin's indices up to its highest.
        done = true;
        if (on_key) {
            lim = vec2<u32>(kp, NO_INDEX);
        } else {
            lim = vec2<u32>(kp, ip | ((1u << shift) - 1u));
        }
    } else if (last) {
        done = true;
        lim = vec2<u32>(kp, ip);
    } else if (mode == 1u && on_key && dec[D_TOPK] - rest + count <= KEPT_CAP) {
        // Few enough candidates (every key from the bin's lowest up, top_k - rest of them above
        // the bin, count in it): gather them and pick the k-th in workgroup memory (P_GATHER),
        // where top-p can walk the same sorted set.
        dec[S_MODE] = 3u;
        dec[D_GLO] = kp;
        return;
    }
    if (done) {
        let t2 = tighter(th, lim);
        dec[D_TH] = t2.x;
        dec[D_TH + 1u] = t2.y;
        dec[S_MODE] = 0u;
    } else {
        dec[S_NEXT] = round + 1u;
    }
}

// Starts the select for the `rank`-th entry among keys `key0` (ties: index rounds only) or all
// keys (top-k: from key round 0).
fn select_start(mode: u32, rank: u32, key0: u32) {
    dec[S_MODE] = mode;
    dec[S_LEFT] = rank;
    dec[S_KP] = select(0u, key0, mode == 2u);
    dec[S_KM] = select(0u, 0xffffffffu, mode == 2u);
    dec[S_IP] = 0u;
    dec[S_IM] = 0u;
    dec[S_NEXT] = select(0u, 4u, mode == 2u);
}

// One top-p mass round (4-bit digits of the key from the top) over the bins in `agg`: the bin
// where the cumulative mass (larger keys first) reaches the goal; if rounding leaves the goal
// unreached, the last non-empty bin. Round 0 also sets the goal p * Z (Z: the kept mass, the
// sum of round 0's bins). After round 7 the cut's key is known: its ties (one mass mu each)
// need c = ceil(rest / mu) of them, the c-th smallest index among them closes the limit.
fn top_p_step(round: u32) {
    var bins: array<vec3<u32>, 16>;
    var z = FX_ZERO;
    for (var i = 0u; i < 16u; i++) {
        bins[i] = agg_fx(A_BINS + 3u * i);
        z = fx_add(z, bins[i]);
    }
    if (round == 0u) {
        let goal = fx_of(bitcast<f32>(dec[D_TOPP]) * fx_to_f32(z, FX_MASS_SHIFT), FX_MASS_SHIFT);
        dec[D_GOAL] = goal.x;
        dec[D_GOAL + 1u] = goal.y;
        dec[D_GOAL + 2u] = goal.z;
        dec[D_ABOVE] = 0u;
        dec[D_ABOVE + 1u] = 0u;
        dec[D_ABOVE + 2u] = 0u;
    }
    let goal = vec3<u32>(dec[D_GOAL], dec[D_GOAL + 1u], dec[D_GOAL + 2u]);
    let above = vec3<u32>(dec[D_ABOVE], dec[D_ABOVE + 1u], dec[D_ABOVE + 2u]);
    var digit = 16u;
    var last = 0u;
    var acc = above;
    var acc_last = above;
    for (var i = 0u; i < 16u; i++) {
        let dg = 15u - i;
        if (!fx_is_zero(bins[dg])) {
            last = dg;
            acc_last = acc;
            let next = fx_add(acc, bins[dg]);
            if (fx_ge(next, goal)) {
                digit = dg;
                break;
            }
            acc = next;
        }
    }
    if (digit == 16u) {
        digit = last;
        acc = acc_last;
    }
    dec[D_ABOVE] = acc.x;
    dec[D_ABOVE + 1u] = acc.y;
    dec[D_ABOVE + 2u] = acc.z;
    let shift = 28u - 4u * round;
    let prefix = dec[D_PP] | (digit << shift);
    dec[D_PP] = prefix;
    dec[D_PM] |= 15u << shift;
    if (round < 7u) {
        return;
    }
    dec[D_PON] = 0u;
    // mu: the mass of one entry at the cut's key, rounded as each term was.
    let m = value_of_key(dec[D_M]);
    let t = bitcast<f32>(dec[D_T]);
    let mu = fx_to_f32(fx_of(exp((value_of_key(prefix) - m) / t), FX_MASS_SHIFT), FX_MASS_SHIFT);
    var rest = FX_ZERO;
    if (fx_ge(goal, acc)) {
        rest = fx_sub(goal, acc);
    }
    // mu > 0 (the chosen bin holds kept mass); a NaN or out-of-range quotient takes c = 1.
    let quot = ceil(fx_to_f32(rest, FX_MASS_SHIFT) / mu);
    let c = select(1u, u32(quot), quot >= 1.0 && quot < 4.0e9);
    if (params.idx_rounds == 0u) {
        // k = 1: the only index there is.
        let lim = tighter(vec2<u32>(dec[D_TH], dec[D_TH + 1u]), vec2<u32>(prefix, 0u));
        dec[D_TH] = lim.x;
        dec[D_TH + 1u] = lim.y;
        return;
    }
    select_start(2u, c, prefix);
}

// After P_GATHER: the entries gathered into `kept` (at most KEPT_CAP, count in agg) each moved
// to its rank in the order (the entries before it, counted: the order is total, so ranks are
// distinct). Then invocation 0 takes top-k's cut from them when the select gathered its
// candidates (S_MODE 3: every entry with a key from D_GLO up, so the k-th in the order is the
// k-th of the sorted set), and top-p's within the kept prefix: the total mass, then the first
// prefix that reaches p times it (the last kept entry if rounding leaves the goal unreached).
// All invocations call it (uniform control flow). Loops: 2 slots per invocation, n <= KEPT_CAP
// comparisons each, 3 n steps for invocation 0.
fn finish_gather(lid: u32, d: ptr<function, array<u32, DEC_WORDS>>) {
    let n = min(atomicLoad(&agg[A_KEPT]), KEPT_CAP);
    let m = d_m(d);
    let t = d_f32(d, D_T);
    var entry = array<vec2<u32>, 2>(EMPTY, EMPTY);
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
            rank[h] = before_e;
        }
    }
    workgroupBarrier();
    for (var h = 0u; h < 2u; h++) {
        if (rank[h] < n) {
            kept[rank[h]] = entry[h];
            kept_mass[rank[h]] = exp((value_of_key(entry[h].x) - m) / t);
        }
    }
    workgroupBarrier();
    if (lid != 0u) {
        return;
    }
    var th = d_th(d);
    if ((*d)[S_MODE] == 3u) {
        let tk = (*d)[D_TOPK];
        if (tk >= 1u && tk <= n) {
            th = tighter(th, kept[tk - 1u]);
        }
        dec[S_MODE] = 0u;
    }
    if (top_p_in_kept_set(d)) {
        // The kept set is a prefix of the sorted entries (every limit is a prefix of the order).
        var n_kept = 0u;
        for (var i = 0u; i < n; i++) {
            if (!is_kept(kept[i].x, kept[i].y, th)) {
                break;
            }
            n_kept = i + 1u;
        }
        // Nothing kept (a bad row, flagged elsewhere): the limit stays.
        if (n_kept > 0u) {
            var z = 0.0;
            for (var i = 0u; i < n_kept; i++) {
                z += kept_mass[i];
            }
            let goal = d_f32(d, D_TOPP) * z;
            var cut = n_kept - 1u;
            var acc = 0.0;
            for (var i = 0u; i < n_kept; i++) {
                acc += kept_mass[i];
                if (acc >= goal) {
                    cut = i;
                    break;
                }
            }
            th = tighter(th, kept[cut]);
        }
    }
    dec[D_TH] = th.x;
    dec[D_TH + 1u] = th.y;
}

// After the draw: the status (NaN, +inf, nothing kept), the token and its logits (tokb: the
// filters' view, tokraw: the input), the log partition function of the input and the log of
// the kept mass from the draw's fixed-point sums.
fn finish_draw(d: ptr<function, array<u32, DEC_WORDS>>, best: vec2<u32>, tokb: u32, tokraw: u32) {
    let flags = atomicLoad(&agg[A_FLAGS]);
    var code = 0u;
    if ((flags & 1u) != 0u) {
        code = STATUS_NAN;
    } else if ((flags & 2u) != 0u) {
        code = STATUS_POS_INF;
    } else if (best.y == NO_INDEX) {
        code = STATUS_ALL_MASKED;
    }
    dec[D_CODE] = code;
    if (code == 0u) {
        dec[D_TOKEN] = best.y;
        dec[D_TOKB] = tokb;
        dec[D_TOKRAW] = tokraw;
    }
    if (raw_out()) {
        let s = fx_to_f32(agg_fx(A_FXA), FX_MASS_SHIFT);
        dec[D_LOGZ] = bitcast<u32>(d_m_raw(d) + log(s));
    }
    if (!d_greedy(d) && (proc_out() || law_out())) {
        dec[D_LOGS] = bitcast<u32>(log(fx_to_f32(agg_fx(A_FXB), FX_MASS_SHIFT)));
    }
}


// After the post pass: the rank (a processed greedy row's token is alone in its law: rank 1).
fn finish_post(d: ptr<function, array<u32, DEC_WORDS>>) {
    if ((*d)[D_CODE] == 0u && rank_out()) {
        dec[D_RANK] = select(atomicLoad(&agg[A_RANK]), 1u, params.mode != 0u && d_greedy(d));
    }
}

// ---- top-n lists ----

// Per-invocation top-n list (private: a helper taking it by pointer with a while loop lost
// entries on llvmpipe GL, measured), sorted in the order.
var<private> list: array<vec2<u32>, 20>;

fn list_clear() {
    for (var i = 0u; i < MAX_TOP_N; i++) {
        list[i] = EMPTY;
    }
}

// Inserts c into the list of n_top entries, written as a fixed-length bubble.
fn list_insert(c: vec2<u32>, n: u32) {
    if (n == 0u || !before(c, list[n - 1u])) {
        return;
    }
    var x = c;
    for (var i = 0u; i < n; i++) {
        if (before(x, list[i])) {
            let y = list[i];
            list[i] = x;
            x = y;
        }
    }
}

// The log of the final law at a list entry (key of the processed logit, 0 if unkept): -inf
// outside the kept set, 0 for a greedy row's token, else (l - m) / t - log s_kept.
fn processed_logprob_of_key(key: u32, greedy: bool, d: ptr<function, array<u32, DEC_WORDS>>) -> u32 {
    if (key == 0u) {
        return NEG_INF_BITS;
    }
    if (greedy) {
        return 0u;
    }
    return bitcast<u32>((value_of_key(key) - d_m(d)) / d_f32(d, D_T) - d_f32(d, D_LOGS));
}

// The raw log-probability of a list entry (key of the input logit): l - log Z, -inf if masked.
fn raw_logprob_of_key(key: u32, d: ptr<function, array<u32, DEC_WORDS>>) -> u32 {
    let bits = bitcast<u32>(value_of_key(key));
    return select(bitcast<u32>(value_of_key(key) - d_f32(d, D_LOGZ)), NEG_INF_BITS,
                  bits == NEG_INF_BITS);
}
