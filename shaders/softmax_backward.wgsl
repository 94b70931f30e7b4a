// Gumbel-Softmax backward: the vector-Jacobian product of y = softmax((l + g) / tau) (or of
// x = log y), one fused kernel per row. Twin of src/cpu/backward.rs.
//
// Bindings (group 0):
//   0: uniform BackwardParams (generated from the Rust struct in src/backward.rs: #import params)
//   1: storage, read, array<u32> logits: the forward's input, by mode (element j of row r of
//      this dispatch, flat n = r*k + j, at input_base + n + r*row_pad: rows k + row_pad elements
//      apart, row_pad = the view's stride - k; 16-bit formats count halves, any stride):
//        stored soft:  y (f32 bits)         stored log:  x = log y (f32 bits, -inf = masked)
//        recompute:    the logits l (f32 / f16 / bf16 per `format`, read with logit_bits)
//   2: storage, read, array<f32> grad: dy (soft) or dx (log), rows x k row-major, element n at
//      grad_base + n
//   3: storage, read_write, array<f32> out: dL/dl, rows x k row-major, element n at out_base + n
//   4: storage, read, array<f32> taus: one temperature per row when params.per_row != 0
//      (row r of this dispatch at taus[tau_base + r]); otherwise a dummy and params.tau applies.
//      A row whose temperature is not finite, positive and normal gets NaN (0x7fc00000) in
//      every element, as in the forward.
//   5: storage, read_write, array<State> partials: rows x segs partial states (split rows only;
//      a scratch buffer reused across jobs)
//   6: storage, read_write, array<atomic<u32>> status (when params.use_status, else a dummy):
//      atomicMin of the job's row index (row0 + r) of a row with a bad temperature into
//      status[status_base + 2], the forward's word for it (softmax.wgsl); words 0 and 1 are
//      never touched. Every invocation that takes the row's temperature may record it: the
//      minimum is the same whichever order they come in.
// Each binding is a window of the caller's slice starting at the device-aligned offset at or
// below the dispatch's first element; the *_base parameters (in that binding's elements) say
// where that element is, so the input, grad, out and taus slices are independent.
// Per row (A = sum_j dy_j y_j, D = sum_j dx_j over live entries):
//   soft: dL/dl_j = (1/tau) * y_j * (dy_j - A)        log: dL/dl_j = (1/tau) * (dx_j - y_j * D)
// Dead entries get exactly 0 and are left out of A and D: masked logits (-inf), y_j = 0 in the
// stored soft form, x_j = -inf in the stored log form, and in a row with +inf logits every finite
// entry (the forward gives its +inf entries equal shares and the rest exactly 0).
// Recompute modes regenerate the forward's noise: element j of row r (flat n = r*k + j inside
// this dispatch) uses stream word n, i.e. lane (phase + n) % 4 of block block0 + (phase + n) / 4.
// Elements are visited in block-aligned groups of 4 so one Philox call serves 4 elements.
// A row's reduction is an online log-sum-exp (running max m of l + g, sums s = sum e, t =
// sum dy e, d = sum dx with e = exp((l + g - m) / tau)), merged pairwise; nothing infinite is
// ever computed: exponent arguments are clamped (see sexp) and +inf logits are counted apart.
// Entry points:
//   row_per_thread: one invocation per row; two sweeps over the row (reduce, write), re-reading
//     global memory (small k: the row is in cache).
//   row_per_workgroup: one workgroup per row; each invocation keeps its first CHIP_BLOCKS groups
//     of 4 elements in registers, so rows of up to 4 * CHIP_BLOCKS * WG_SIZE - 6 elements are
//     read once; longer rows re-read the remaining groups in the write sweep.
//   row_per_team: the same with teams of params.team invocations, one row each (mid-sized rows;
//     read once up to 4 * CHIP_BLOCKS * team - 6 elements).
//   segment_partials + segment_write (long rows, few of them): each row is split into
//     params.segs segments of params.seg_blocks blocks, one workgroup each. segment_partials
//     writes each segment's state to partials[r * segs + s]; segment_write (a second dispatch)
//     merges the row's partials in the same order in every workgroup of the row, then re-reads
//     its segment and writes the gradients.
// Workgroups are linearised over a 2-D grid (x fastest) to pass 65535 per dimension.
// Safe without wgpu's runtime checks (the default, GpuOptions::runtime_checks): every element
// index is a *_base plus an index below the dispatch's rows * k (or rows, for per-row data),
// and each window the host binds holds exactly those elements; status[status_base + 2] only
// when use_status (the host binds the 3 status words); loops are counted (rows, blocks
// of 4, lanes 0..4, segments), with bounds from the parameters; the only integer divisors are
// constants, params.team (TEAM_SIZE = 32, a power of two dividing WG_SIZE) and params.segs
// (at least 1: a row of k >= 1 spans at least one segment); shared_states (and the subgroup
// slots of team_reduce) is written by every invocation before the barrier that precedes its
// reads; the subgroup operations run in uniform control flow (every invocation of the
// workgroup reaches them).
#import config
#import philox
#import gumbel
#import logits
#import team_reduce
#import grid

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> taus: array<f32>;
@group(0) @binding(6) var<storage, read_write> status: array<atomic<u32>>;

// The temperature of the row this invocation works on (set_row_tau), and the bits every
// gradient of the row gets when its temperature is bad (0: none).
var<private> row_inv_tau: f32;
var<private> row_clamp_half: f32;
var<private> row_bad_bits: u32;

const NAN_BITS: u32 = 0x7fc00000u;

fn set_row_tau(r: u32) {
    row_bad_bits = 0u;
    if (params.per_row == 0u) {
        row_inv_tau = params.inv_tau;
        row_clamp_half = params.clamp_half;
        return;
    }
    // Normal, finite and positive, as the host checks a scalar tau (check_tau): a NaN,
    // infinite, zero, negative or subnormal one makes the row bad: NaN in every element (as
    // the forward does), computed with tau = 1 so nothing infinite is ever evaluated.
    let b = bitcast<u32>(taus[params.tau_base + r]);
    var t = bitcast<f32>(b);
    if (b < 0x00800000u || b >= 0x7f800000u) {
        row_bad_bits = NAN_BITS;
        t = 1.0;
        if (params.use_status != 0u) {
            atomicMin(&status[params.status_base + 2u], params.row0 + r);
        }
    }
    row_inv_tau = 1.0 / t;
    row_clamp_half = -min(60.0 * t, 1.7e38);
}

const MODE_RECOMPUTE: u32 = 1u;
const MODE_LOG: u32 = 2u;

const DEAD: u32 = 0u;
const LIVE: u32 = 1u;
const TOP: u32 = 2u; // a +inf logit

const CHIP_BLOCKS: u32 = 4u;
const NEG_MAX: f32 = -3.4028235e38;

struct State {
    m: f32,
    s: f32,
    t: f32,
    d: f32,
    // Number of +inf logits seen; once positive, s, t and d count only those.
    inf: u32,
}

// A state as words, for subgroup shuffles (team_reduce).
const STATE_WORDS: u32 = 5u;
fn state_to_words(s: State) -> array<u32, STATE_WORDS> {
    return array<u32, STATE_WORDS>(bitcast<u32>(s.m), bitcast<u32>(s.s), bitcast<u32>(s.t),
                                   bitcast<u32>(s.d), s.inf);
}
fn state_from_words(w: array<u32, STATE_WORDS>) -> State {
    return State(bitcast<f32>(w[0]), bitcast<f32>(w[1]), bitcast<f32>(w[2]), bitcast<f32>(w[3]),
                 w[4]);
}

fn recompute() -> bool {
    return (params.mode & MODE_RECOMPUTE) != 0u;
}

fn log_space() -> bool {
    return (params.mode & MODE_LOG) != 0u;
}

fn empty_state() -> State {
    return State(NEG_MAX, 0.0, 0.0, 0.0, 0u);
}

// exp((p - m) / tau) for p <= m, without overflow: the halves cannot overflow when subtracted,
// and below -60 tau the result is 0 in f32 anyway (exp(-120) < 2^-149).
fn sexp(p: f32, m: f32) -> f32 {
    let h = max(0.5 * p - 0.5 * m, row_clamp_half);
    return exp(2.0 * h * row_inv_tau);
}

// An element as the mode sees it: kind, a (y, x, or l + g), and its gradient entry.
struct Elem {
    kind: u32,
    a: f32,
    g: f32,
}

// Element n (of row r) given its Philox word w (ignored by the stored modes). The input's rows
// are k + row_pad elements apart (LogitsView's stride); grad and out are dense.
fn element(n: u32, r: u32, w: u32) -> Elem {
    let g = grad[params.grad_base + n];
    let i = params.input_base + n + r * params.row_pad;
    if (recompute()) {
        let b = logit_bits(i, params.format);
        if (is_masked_bits(b)) {
            return Elem(DEAD, 0.0, 0.0);
        }
        if (is_pos_inf_bits(b)) {
            return Elem(TOP, 0.0, g);
        }
        return Elem(LIVE, bitcast<f32>(b) + gumbel_from_word(w), g);
    }
    let b = logits[i];
    if (log_space()) {
        if (is_masked_bits(b)) {
            return Elem(DEAD, 0.0, 0.0);
        }
    } else if ((b & 0x7fffffffu) == 0u) {
        return Elem(DEAD, 0.0, 0.0);
    }
    return Elem(LIVE, bitcast<f32>(b), g);
}

fn push(st: ptr<function, State>, e: Elem) {
    if (e.kind == DEAD) {
        return;
    }
    if (!recompute()) {
        (*st).s += 1.0;
        (*st).t += e.g * e.a;
        (*st).d += e.g;
        return;
    }
    if (e.kind == TOP) {
        if ((*st).inf == 0u) {
            (*st).s = 0.0;
            (*st).t = 0.0;
            (*st).d = 0.0;
        }
        (*st).inf += 1u;
        (*st).s += 1.0;
        (*st).t += e.g;
        (*st).d += e.g;
        return;
    }
    if ((*st).inf > 0u) {
        return;
    }
    if (e.a > (*st).m || (*st).s == 0.0) {
        let f = sexp((*st).m, e.a);
        (*st).s = (*st).s * f + 1.0;
        (*st).t = (*st).t * f + e.g;
        (*st).m = e.a;
    } else {
        let x = sexp(e.a, (*st).m);
        (*st).s += x;
        (*st).t += e.g * x;
    }
    (*st).d += e.g;
}

fn merge(a: State, b: State) -> State {
    if (!recompute()) {
        return State(0.0, a.s + b.s, a.t + b.t, a.d + b.d, 0u);
    }
    if (a.inf > 0u || b.inf > 0u) {
        if (a.inf == 0u) {
            return b;
        }
        if (b.inf == 0u) {
            return a;
        }
        return State(a.m, a.s + b.s, a.t + b.t, a.d + b.d, a.inf + b.inf);
    }
    if (a.s == 0.0) {
        return b;
    }
    if (b.s == 0.0) {
        return a;
    }
    let m = max(a.m, b.m);
    let fa = sexp(a.m, m);
    let fb = sexp(b.m, m);
    return State(m, a.s * fa + b.s * fb, a.t * fa + b.t * fb, a.d + b.d, 0u);
}

// The gradient of a live or dead element, given its row's reduced state.
fn gradient(e: Elem, st: State) -> f32 {
    if (row_bad_bits != 0u) {
        return bitcast<f32>(row_bad_bits);
    }
    if (e.kind == DEAD) {
        return 0.0;
    }
    var y: f32;
    if (recompute()) {
        if (st.inf > 0u) {
            if (e.kind != TOP) {
                return 0.0;
            }
            y = 1.0 / st.s;
        } else {
            y = sexp(e.a, st.m) / st.s;
        }
    } else if (log_space()) {
        y = exp(e.a);
    } else {
        y = e.a;
    }
    if (log_space()) {
        return row_inv_tau * (e.g - y * st.d);
    }
    if (y == 0.0) {
        return 0.0;
    }
    var mean = st.t;
    if (recompute()) {
        mean = st.t / st.s;
    }
    return row_inv_tau * y * (e.g - mean);
}

// The Philox words of dispatch-relative block q (only the recompute modes need them).
fn words(q: u32) -> vec4<u32> {
    if (recompute()) {
        return philox_block(vec2<u32>(params.key_lo, params.key_hi),
                            vec2<u32>(params.block0_lo, params.block0_hi), q);
    }
    return vec4<u32>(0u);
}

// Flat element of lane `lane` of block q: 4q + lane - phase (may lie outside the row).
fn flat(q: u32, lane: u32) -> u32 {
    return 4u * q + lane - params.phase;
}

// First and one-past-last block of row r (dispatch-relative).
fn row_blocks(r: u32) -> vec2<u32> {
    let start = r * params.k;
    return vec2<u32>((params.phase + start) / 4u, (params.phase + start + params.k + 3u) / 4u);
}

fn in_row(n: u32, r: u32) -> bool {
    // Wrapping: n below the row start (or below 0, in block 0 when phase > 0) gives a huge offset.
    return n - r * params.k < params.k;
}

@compute @workgroup_size(WG_SIZE)
fn row_per_thread(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    set_row_tau(r);
    let qs = row_blocks(r);
    var st = empty_state();
    for (var q = qs.x; q < qs.y; q++) {
        let w = words(q);
        for (var lane = 0u; lane < 4u; lane++) {
            let n = flat(q, lane);
            if (in_row(n, r)) {
                push(&st, element(n, r, w[lane]));
            }
        }
    }
    for (var q = qs.x; q < qs.y; q++) {
        let w = words(q);
        for (var lane = 0u; lane < 4u; lane++) {
            let n = flat(q, lane);
            if (in_row(n, r)) {
                out[params.out_base + n] = gradient(element(n, r, w[lane]), st);
            }
        }
    }
}

var<workgroup> shared_states: array<State, WG_SIZE>;


fn reduce_workgroup(lid: u32, mine: State) -> State {
    return reduce_team(lid, WG_SIZE, mine);
}

// Row r on a team of `size` invocations, this one being number t of the team: invocation t takes
// blocks qs.x + t + c * size; the first CHIP_BLOCKS stay in registers, so rows of up to
// 4 * CHIP_BLOCKS * size - 6 entries are read once. `valid` is false for teams past the last row,
// which still take part in the barriers.
fn team_row(lid: u32, t: u32, size: u32, r: u32, valid: bool) {
    var kind: array<vec4<u32>, CHIP_BLOCKS>;
    var a: array<vec4<f32>, CHIP_BLOCKS>;
    var g: array<vec4<f32>, CHIP_BLOCKS>;
    var st = empty_state();
    var qs = vec2<u32>(0u);
    if (valid) {
        set_row_tau(r);
        qs = row_blocks(r);
    }
    for (var c = 0u; c < CHIP_BLOCKS; c++) {
        kind[c] = vec4<u32>(DEAD);
        a[c] = vec4<f32>(0.0);
        g[c] = vec4<f32>(0.0);
        let q = qs.x + t + c * size;
        if (q < qs.y) {
            let w = words(q);
            for (var lane = 0u; lane < 4u; lane++) {
                let n = flat(q, lane);
                if (in_row(n, r)) {
                    let e = element(n, r, w[lane]);
                    kind[c][lane] = e.kind;
                    a[c][lane] = e.a;
                    g[c][lane] = e.g;
                    push(&st, e);
                }
            }
        }
    }
    for (var q = qs.x + t + CHIP_BLOCKS * size; q < qs.y; q += size) {
        let w = words(q);
        for (var lane = 0u; lane < 4u; lane++) {
            let n = flat(q, lane);
            if (in_row(n, r)) {
                push(&st, element(n, r, w[lane]));
            }
        }
    }
    let row = reduce_team(lid, size, st);
    for (var c = 0u; c < CHIP_BLOCKS; c++) {
        let q = qs.x + t + c * size;
        if (q < qs.y) {
            for (var lane = 0u; lane < 4u; lane++) {
                let n = flat(q, lane);
                if (in_row(n, r)) {
                    let e = Elem(kind[c][lane], a[c][lane], g[c][lane]);
                    out[params.out_base + n] = gradient(e, row);
                }
            }
        }
    }
    for (var q = qs.x + t + CHIP_BLOCKS * size; q < qs.y; q += size) {
        let w = words(q);
        for (var lane = 0u; lane < 4u; lane++) {
            let n = flat(q, lane);
            if (in_row(n, r)) {
                out[params.out_base + n] = gradient(element(n, r, w[lane]), row);
            }
        }
    }
}

@compute @workgroup_size(WG_SIZE)
fn row_per_workgroup(ids: LaneIds,
                     @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    team_row(lid, lid, WG_SIZE, r, true);
}

// Teams of params.team invocations, WG_SIZE / params.team rows per workgroup (mid-sized rows).

@compute @workgroup_size(WG_SIZE)
fn row_per_team(ids: LaneIds,
                @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
    let r = group_index(wid, nwg) * (WG_SIZE / params.team) + lid / params.team;
    team_row(lid, lid % params.team, params.team, r, r < params.rows);
}

@group(0) @binding(5) var<storage, read_write> partials: array<State>;

// Blocks [x, y) of segment `seg` of row r.
fn segment_blocks(r: u32, seg: u32) -> vec2<u32> {
    let qs = row_blocks(r);
    let a = qs.x + seg * params.seg_blocks;
    return vec2<u32>(a, min(qs.y, a + params.seg_blocks));
}

@compute @workgroup_size(WG_SIZE)
fn segment_partials(ids: LaneIds,
                    @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
    let gi = group_index(wid, nwg);
    if (gi >= params.rows * params.segs) {
        return;
    }
    let r = gi / params.segs;
    set_row_tau(r);
    let sb = segment_blocks(r, gi % params.segs);
    var st = empty_state();
    for (var q = sb.x + lid; q < sb.y; q += WG_SIZE) {
        let w = words(q);
        for (var lane = 0u; lane < 4u; lane++) {
            let n = flat(q, lane);
            if (in_row(n, r)) {
                push(&st, element(n, r, w[lane]));
            }
        }
    }
    let total = reduce_workgroup(lid, st);
    if (lid == 0u) {
        partials[gi] = total;
    }
}

@compute @workgroup_size(WG_SIZE)
fn segment_write(ids: LaneIds,
                 @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
    let gi = group_index(wid, nwg);
    if (gi >= params.rows * params.segs) {
        return;
    }
    let r = gi / params.segs;
    set_row_tau(r);
    var st = empty_state();
    for (var i = lid; i < params.segs; i += WG_SIZE) {
        st = merge(st, partials[r * params.segs + i]);
    }
    let row = reduce_workgroup(lid, st);
    let sb = segment_blocks(r, gi % params.segs);
    for (var q = sb.x + lid; q < sb.y; q += WG_SIZE) {
        let w = words(q);
        for (var lane = 0u; lane < 4u; lane++) {
            let n = flat(q, lane);
            if (in_row(n, r)) {
                out[params.out_base + n] = gradient(element(n, r, w[lane]), row);
            }
        }
    }
}
