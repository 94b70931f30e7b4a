// Log-density of relaxed samples under the Concrete / Gumbel-Softmax distribution, one value per
// row. Twin of src/cpu/density.rs.
//
// Bindings (group 0):
//   0: uniform DensityParams
//   1: storage, read, array<u32> logits: rows x k logits (f32 / f16 / bf16 per `format`,
//      read with logit_bits); -inf = masked category
//   2: storage, read, array<f32> log_y: rows x k, the log-space sample x = log y
//   3: storage, read_write, array<f32> out: one value per row
//   4: storage, read_write, array<State> partials: rows x segs partial states (split rows only)
// Bindings start at aligned offsets at or before the dispatch's first row; params.base* say where
// that row starts inside them.
// With c the number of live (unmasked) categories of a row and s_i = l_i - tau x_i over them:
//   log p(x) = lgamma(c) + (c - 1) log tau + sum_i s_i - c logsumexp_i(s_i)
// (TFP ExpRelaxedOneHotCategorical, PyTorch ExpRelaxedCategorical.log_prob; masked categories
// are left out, as if the distribution had only the live ones), and with `simplex` set, the
// density of y on the simplex, log p(x) - sum_i x_i. x of masked entries is ignored. A row with a
// non-finite x at a live entry, a +inf logit, or no live entry is outside the domain: the kernel
// writes -inf there (the slice API rejects such rows before the dispatch).
// One pass over the row: an online log-sum-exp (running max m, e = sum exp(s - m)) with the
// plain sums of s and x and the count c, merged pairwise.
// Entry points: row_per_thread (one invocation per row, small k), row_per_team (params.team
// invocations per row, mid k), row_per_workgroup (one workgroup per row; strided coalesced
// reads, tree reduction in workgroup memory), and for long rows, few of them,
// segment_partials (one workgroup per segment of params.seg_len entries writes its state to
// partials[r * segs + s]) followed by segment_finish (one invocation per row merges them).
#import config
#import logits
#import team_reduce
#import grid

struct DensityParams {
    rows: u32,
    k: u32,
    format: u32,
    simplex: u32,
    tau: f32,
    log_tau: f32,
    // First element of this dispatch inside the bound ranges (bindings start aligned):
    // in logits elements, in log_y elements, and the first row inside `out`.
    base_logits: u32,
    base: u32,
    base_out: u32,
    // Invocations per row in row_per_team (a power of two dividing WG_SIZE).
    team: u32,
    // Split rows: segments per row and entries per segment.
    segs: u32,
    seg_len: u32,
}

@group(0) @binding(0) var<uniform> params: DensityParams;
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> log_y: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const NEG_MAX: f32 = -3.4028235e38;

struct State {
    m: f32,
    e: f32,
    sum_s: f32,
    sum_x: f32,
    c: u32,
    bad: u32,
}

fn empty_state() -> State {
    return State(NEG_MAX, 0.0, 0.0, 0.0, 0u, 0u);
}

// exp(p - m) for p <= m without overflow in the difference; 0 below -120.
fn sexp(p: f32, m: f32) -> f32 {
    return exp(2.0 * max(0.5 * p - 0.5 * m, -60.0));
}

fn push(st: ptr<function, State>, n: u32) {
    let lb = logit_bits(params.base_logits + n, params.format);
    if (is_masked_bits(lb)) {
        return;
    }
    let xb = log_y[params.base + n];
    // Non-finite x (exponent all ones) or a +inf logit: outside the domain.
    if ((xb & 0x7f800000u) == 0x7f800000u || is_pos_inf_bits(lb) || is_nan_bits(lb)) {
        (*st).bad = 1u;
        return;
    }
    let x = bitcast<f32>(xb);
    let s = bitcast<f32>(lb) - params.tau * x;
    if (s > (*st).m || (*st).c == 0u) {
        (*st).e = (*st).e * sexp((*st).m, s) + 1.0;
        (*st).m = s;
    } else {
        (*st).e += sexp(s, (*st).m);
    }
    (*st).sum_s += s;
    (*st).sum_x += x;
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
    return State(m, a.e * sexp(a.m, m) + b.e * sexp(b.m, m), a.sum_s + b.sum_s,
                 a.sum_x + b.sum_x, a.c + b.c, a.bad | b.bad);
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
    if (st.bad != 0u || st.c == 0u) {
        out[params.base_out + r] = F32_NEG_INF_BITS;
        return;
    }
    let c = f32(st.c);
    var lp = lgamma_int(st.c) + (c - 1.0) * params.log_tau + st.sum_s - c * (st.m + log(st.e));
    if (params.simplex != 0u) {
        lp -= st.sum_x;
    }
    out[params.base_out + r] = bitcast<u32>(lp);
}

@compute @workgroup_size(WG_SIZE)
fn row_per_thread(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    var st = empty_state();
    for (var j = 0u; j < params.k; j++) {
        push(&st, r * params.k + j);
    }
    finish(r, st);
}

var<workgroup> shared_states: array<State, WG_SIZE>;
@group(0) @binding(4) var<storage, read_write> partials: array<State>;


@compute @workgroup_size(WG_SIZE)
fn row_per_workgroup(@builtin(local_invocation_index) lid: u32,
                     @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    var st = empty_state();
    for (var j = lid; j < params.k; j += WG_SIZE) {
        push(&st, r * params.k + j);
    }
    let row = reduce_team(lid, WG_SIZE, st);
    if (lid == 0u) {
        finish(r, row);
    }
}

@compute @workgroup_size(WG_SIZE)
fn row_per_team(@builtin(local_invocation_index) lid: u32,
                @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * (WG_SIZE / params.team) + lid / params.team;
    let t = lid % params.team;
    var st = empty_state();
    if (r < params.rows) {
        for (var j = t; j < params.k; j += params.team) {
            push(&st, r * params.k + j);
        }
    }
    let row = reduce_team(lid, params.team, st);
    if (r < params.rows && t == 0u) {
        finish(r, row);
    }
}

@compute @workgroup_size(WG_SIZE)
fn segment_partials(@builtin(local_invocation_index) lid: u32,
                    @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let gi = group_index(wid, nwg);
    if (gi >= params.rows * params.segs) {
        return;
    }
    let r = gi / params.segs;
    let j0 = (gi % params.segs) * params.seg_len;
    let j1 = min(params.k, j0 + params.seg_len);
    var st = empty_state();
    for (var j = j0 + lid; j < j1; j += WG_SIZE) {
        push(&st, r * params.k + j);
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
    var st = empty_state();
    for (var i = 0u; i < params.segs; i++) {
        st = merge(st, partials[r * params.segs + i]);
    }
    finish(r, st);
}
