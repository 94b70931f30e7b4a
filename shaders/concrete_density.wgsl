// Log-density of relaxed samples under the Concrete / Gumbel-Softmax distribution, one value per
// row. Twin of src/cpu/density.rs.
//
// Bindings (group 0):
//   0: uniform DensityParams (generated from the Rust struct in src/density.rs: #import params)
//   1: storage, read, array<u32> logits: rows x k logits (f32 / f16 / bf16 per `format`,
//      read with logit_bits); entry j of row r of this dispatch at
//      logits_base + r * (k + row_pad) + j (row_pad: the view's stride - k; 16-bit formats
//      count halves, any stride); -inf = masked
//   2: storage, read, array<u32> log_y: rows x k f32, the log-space sample x = log y; element n
//      at log_y_base + n
//   3: storage, read_write, array<u32> out: one f32 per row, row r at out_base + r
//   4: storage, read, array<f32> taus: per-row temperatures (row r at tau_base + r) when
//      params.per_row != 0; otherwise a dummy and params.tau applies
//   5: storage, read_write, array<State> partials: rows x segs partial states (split rows only;
//      a scratch buffer reused across jobs)
// Each binding is a window of the caller's slice from the device-aligned offset at or below the
// dispatch's first element; the *_base parameters (in that binding's elements) say where it is.
// With c the number of live (unmasked) categories of a row and s_i = l_i - tau x_i over them:
//   log p(x) = lgamma(c) + (c - 1) log tau + sum_i s_i - c logsumexp_i(s_i)
// (TFP ExpRelaxedOneHotCategorical, PyTorch ExpRelaxedCategorical.log_prob; masked categories
// are left out, as if the distribution had only the live ones), and with `simplex` set, the
// density of y on the simplex, log p(x) - sum_i x_i. x of masked entries is ignored.
// Rows outside the domain, what the kernel writes (the slice API rejects such rows first):
//   * a non-finite x at a live entry, a +inf or NaN logit, or no live entry: -inf;
//   * x off the simplex: |logsumexp_live(x)| > simplex_tol * max(1, (max_live |l_i| + 23) / tau)
//     (x_i > 0 beyond it included, since logsumexp >= max x): NaN (0x7fc00000);
//   * a per-row temperature that is not a positive normal finite f32: NaN.
// One pass over the row: online log-sum-exps of s (running max m, e = sum exp(s - m)) and of x
// (mx, ex), the plain sums of s and x, the count c and the largest |l|, merged pairwise.
// Entry points: row_per_thread (one invocation per row, small k), row_per_team (params.team
// invocations per row, mid k), row_per_workgroup (one workgroup per row; strided coalesced
// reads, tree reduction in workgroup memory), and for long rows, few of them,
// segment_partials (one workgroup per segment of params.seg_len entries writes its state to
// partials[r * segs + s]) followed by segment_finish (one invocation per row merges them).
// Safe without wgpu's runtime checks (the default, GpuOptions::runtime_checks): every element
// index is a *_base plus an index below the dispatch's rows * k (or rows, for per-row data;
// for the logits, (rows - 1) * (k + row_pad) + k),
// and each window the host binds holds exactly those elements; loops are counted (rows, blocks
// of 4, lanes 0..4, segments), with bounds from the parameters; the only integer divisors are
// constants, params.team (TEAM_SIZE = 32, a power of two dividing WG_SIZE) and params.segs
// (at least 1: a row of k >= 1 spans at least one segment); shared_states (and the subgroup
// slots of team_reduce) is written by every invocation before the barrier that precedes its
// reads; the subgroup operations run in uniform control flow (every invocation of the
// workgroup reaches them).
#import config
#import logits
#import team_reduce
#import grid

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> log_y: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<storage, read> taus: array<f32>;

const NEG_MAX: f32 = -3.4028235e38;
const NAN_BITS: u32 = 0x7fc00000u;
// The Gumbel noise's upper bound (33 ln 2, see the crate docs), in the off-simplex tolerance.
const GUMBEL_MAX: f32 = 23.0;

struct State {
    m: f32,
    e: f32,
    sum_s: f32,
    sum_x: f32,
    c: u32,
    bad: u32,
    mx: f32,
    ex: f32,
    max_l: f32,
}

// A state as words, for subgroup shuffles (team_reduce).
const STATE_WORDS: u32 = 9u;
fn state_to_words(s: State) -> array<u32, STATE_WORDS> {
    return array<u32, STATE_WORDS>(bitcast<u32>(s.m), bitcast<u32>(s.e), bitcast<u32>(s.sum_s),
                                   bitcast<u32>(s.sum_x), s.c, s.bad, bitcast<u32>(s.mx),
                                   bitcast<u32>(s.ex), bitcast<u32>(s.max_l));
}
fn state_from_words(w: array<u32, STATE_WORDS>) -> State {
    return State(bitcast<f32>(w[0]), bitcast<f32>(w[1]), bitcast<f32>(w[2]), bitcast<f32>(w[3]),
                 w[4], w[5], bitcast<f32>(w[6]), bitcast<f32>(w[7]), bitcast<f32>(w[8]));
}

fn empty_state() -> State {
    return State(NEG_MAX, 0.0, 0.0, 0.0, 0u, 0u, NEG_MAX, 0.0, 0.0);
}

// The temperature of the row this invocation works on (set_row_tau).
var<private> row_tau: f32;
var<private> row_log_tau: f32;
var<private> row_tau_bad: bool;

fn set_row_tau(r: u32) {
    if (params.per_row == 0u) {
        row_tau = params.tau;
        row_log_tau = params.log_tau;
        row_tau_bad = false;
        return;
    }
    let t = taus[params.tau_base + r];
    let b = bitcast<u32>(t);
    // A positive normal finite f32 (by its bits: no NaN or inf arithmetic).
    row_tau_bad = b < 0x00800000u || b >= 0x7f800000u;
    row_tau = select(t, 1.0, row_tau_bad);
    row_log_tau = log(row_tau);
}

// exp(p - m) for p <= m without overflow in the difference; 0 below -120.
fn sexp(p: f32, m: f32) -> f32 {
    return exp(2.0 * max(0.5 * p - 0.5 * m, -60.0));
}

// Entry j of row r: the logits' rows are k + row_pad elements apart (LogitsView's stride),
// log_y's are dense.
fn push(st: ptr<function, State>, r: u32, j: u32) {
    let n = r * params.k + j;
    let lb = logit_bits(params.logits_base + r * (params.k + params.row_pad) + j, params.format);
    if (is_masked_bits(lb)) {
        return;
    }
    let xb = log_y[params.log_y_base + n];
    // Non-finite x (exponent all ones) or a +inf logit: outside the domain.
    if ((xb & 0x7f800000u) == 0x7f800000u || is_pos_inf_bits(lb) || is_nan_bits(lb)) {
        (*st).bad = 1u;
        return;
    }
    let x = bitcast<f32>(xb);
    let l = bitcast<f32>(lb);
    let s = l - row_tau * x;
    if (s > (*st).m || (*st).c == 0u) {
        (*st).e = (*st).e * sexp((*st).m, s) + 1.0;
        (*st).m = s;
    } else {
        (*st).e += sexp(s, (*st).m);
    }
    if (x > (*st).mx || (*st).c == 0u) {
        (*st).ex = (*st).ex * sexp((*st).mx, x) + 1.0;
        (*st).mx = x;
    } else {
        (*st).ex += sexp(x, (*st).mx);
    }
    (*st).sum_s += s;
    (*st).sum_x += x;
    (*st).max_l = max((*st).max_l, abs(l));
    (*st).c += 1u;
}

fn merge(a: State, b: State) -> State {
    if (a.c == 0u) {
        var r = b;
        r.bad |= a.bad;
        return r;
    }
    if (b.c == 0u) {
        var r = a;
        r.bad |= b.bad;
        return r;
    }
    let m = max(a.m, b.m);
    let mx = max(a.mx, b.mx);
    return State(m, a.e * sexp(a.m, m) + b.e * sexp(b.m, m), a.sum_s + b.sum_s,
                 a.sum_x + b.sum_x, a.c + b.c, a.bad | b.bad,
                 mx, a.ex * sexp(a.mx, mx) + b.ex * sexp(b.mx, mx), max(a.max_l, b.max_l));
}

// ln((c - 1)!) for c >= 1: a sum of logs up to 16, Stirling's series (error < 1e-9) above.
fn lgamma_int(c: u32) -> f32 {
    if (c <= 16u) {
        var s = 0.0;
        for (var i = 2u; i < c; i++) {
            s += log(f32(i));
        }
        return s;
    }
    let n = f32(c);
    return (n - 0.5) * log(n) - n + 0.91893853 + 1.0 / (12.0 * n) - 1.0 / (360.0 * n * n * n);
}

fn finish(r: u32, st: State) {
    if (row_tau_bad) {
        out[params.out_base + r] = NAN_BITS;
        return;
    }
    if (st.bad != 0u || st.c == 0u) {
        out[params.out_base + r] = F32_NEG_INF_BITS;
        return;
    }
    // Off the simplex: the live entries' logsumexp of x is off 0 by more than the tolerance,
    // relative to the largest (l + g) / tau the forward could have rounded (capped at 1e30).
    let lse_x = st.mx + log(st.ex);
    let big = st.max_l + GUMBEL_MAX;
    let scale = max(1.0, big / max(row_tau, big * 1e-30));
    if (abs(lse_x) > params.simplex_tol * scale) {
        out[params.out_base + r] = NAN_BITS;
        return;
    }
    let c = f32(st.c);
    var lp = lgamma_int(st.c) + (c - 1.0) * row_log_tau + st.sum_s - c * (st.m + log(st.e));
    if (params.simplex != 0u) {
        lp -= st.sum_x;
    }
    out[params.out_base + r] = bitcast<u32>(lp);
}

@compute @workgroup_size(WG_SIZE)
fn row_per_thread(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    set_row_tau(r);
    var st = empty_state();
    for (var j = 0u; j < params.k; j++) {
        push(&st, r, j);
    }
    finish(r, st);
}

var<workgroup> shared_states: array<State, WG_SIZE>;
@group(0) @binding(5) var<storage, read_write> partials: array<State>;


@compute @workgroup_size(WG_SIZE)
fn row_per_workgroup(ids: LaneIds,
                     @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    set_row_tau(r);
    var st = empty_state();
    for (var j = lid; j < params.k; j += WG_SIZE) {
        push(&st, r, j);
    }
    let row = reduce_team(lid, WG_SIZE, st);
    if (lid == 0u) {
        finish(r, row);
    }
}

@compute @workgroup_size(WG_SIZE)
fn row_per_team(ids: LaneIds,
                @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
    let r = group_index(wid, nwg) * (WG_SIZE / params.team) + lid / params.team;
    let t = lid % params.team;
    var st = empty_state();
    if (r < params.rows) {
        set_row_tau(r);
        for (var j = t; j < params.k; j += params.team) {
            push(&st, r, j);
        }
    }
    let row = reduce_team(lid, params.team, st);
    if (r < params.rows && t == 0u) {
        finish(r, row);
    }
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
    let j0 = (gi % params.segs) * params.seg_len;
    let j1 = min(params.k, j0 + params.seg_len);
    var st = empty_state();
    for (var j = j0 + lid; j < j1; j += WG_SIZE) {
        push(&st, r, j);
    }
    let seg = reduce_team(lid, WG_SIZE, st);
    if (lid == 0u) {
        partials[gi] = seg;
    }
}

@compute @workgroup_size(WG_SIZE)
fn segment_finish(@builtin(local_invocation_index) lid: u32,
                  @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    set_row_tau(r);
    var st = empty_state();
    for (var i = 0u; i < params.segs; i++) {
        st = merge(st, partials[r * params.segs + i]);
    }
    finish(r, st);
}
