// Fused Gumbel-Softmax forward over the rows of a row-major `rows x k` logits matrix:
//   z_j = (l_j + g_j) / tau,  soft: y = softmax(z),  log: log y = z - logsumexp(z),
//   hard: one-hot of argmax z (ties to the lowest index).
// The noise is made in registers (never stored) and every output is written once.
// Entry points (the host picks one by shape, src/softmax.rs):
//   softmax_rows       one row per thread; pass 2 re-reads the row (from cache) and remakes noise
//   softmax_registers  params.group threads per row (1..WG_SIZE), several rows per workgroup;
//                      the row's logit bits and noise stay in registers: logits read once
//   softmax_onchip     one workgroup per row, the row in registers (REG_BLOCKS blocks a
//                      thread) and workgroup memory (SOFTMAX_CACHE_WORDS logit words): logits
//                      read once, the cached part's noise remade
//   softmax_online     one workgroup per row; online pass 1, pass 2 re-reads and remakes noise
//   softmax_split_*    a row split over workgroups of SEG_BLOCKS blocks; partial states, then
//                      every segment merges its row's partials and writes (two dispatches)
// This file is not a whole shader: src/softmax.rs prefixes each variant with
// `#import softmax_reduce_wg` or `#import softmax_reduce_sg` (the workgroup reduction `reduce`
// and the entry points' SubgroupIds, with subgroups only where the device has them) and
// `const SOFTMAX_CACHE_WORDS: u32 = N;` (the on-chip cache, sized to the device's
// max_compute_workgroup_storage_size tier).
//
// Bindings (group 0). Each storage binding is a window that starts at the device-aligned offset
// at or below the job's first element for this dispatch (src/family.rs, FamilyCore::window); the
// `*_base` parameter is the element index in the window where the dispatch's data starts, and
// every access adds it, so callers' slices may start at any 4-byte offset:
//   0: uniform SoftmaxParams (generated from the Rust struct: #import params)
//   1: storage, read       logits: array<u32>  f32, or f16/bf16 packed two per word (logits.wgsl);
//                          element j of dispatch row r is
//                          logit_bits(logit_base + r * (k + row_pad) + j) (row_pad: the
//                          view's stride - k, so rows may sit apart in an engine's padded
//                          matrix; 16-bit formats: logit_base counts halves, any stride)
//   2: storage, read       taus: array<u32>    row r's tau bits at taus[tau_base + r] (when
//                          per_row_tau; an unused 16-byte buffer otherwise, and params.tau is
//                          the tau)
//   3: storage, read_write out: array<u32>     f32 bits of y / log y / the one-hot row:
//                          element n at out[out_base + n]
//   4: storage, read_write status: array<atomic<u32>> (when use_status, else a dummy): atomicMin
//      of the job's global row index (row0 + r) into status[status_base + 0] a row holding NaN,
//      [status_base + 1] an all -inf row, [status_base + 2] a row whose tau is not a normal,
//      finite, positive f32.
//   5: storage, read_write partials: array<State> (split kernels only; a one-state window of the
//      family's scratch buffer otherwise): (row r, segment s) at partial_base + r * segments + s.
// Counter scheme: row r of the dispatch (global row row0 + r; the host advances the stream by
// row0 * k per dispatch) holds dispatch-relative flat elements n0 = r*k .. n0 + k - 1; element n
// uses stream word n: block block0 + (phase + n) / 4, lane (phase + n) % 4.
// Safety contract (the modules are compiled without wgpu's runtime checks by default):
//   * indices stay in the windows: logits are read at base + r*(k + row_pad) + j and out
//     written at base + r*k + j with r < params.rows and j < params.k, and the host binds
//     (rows - 1) * (k + row_pad) + k logits and rows * k outputs from each base;
//     taus[tau_base + r] only when per_row_tau (rows words bound); status[status_base + 0..2]
//     only when use_status (3 words bound); partials[partial_base + i] with
//     i < rows * segments, split kernels only (rows * segments states bound); register slots
//     4 * i + lane < REG_SLOTS; red[lid + w] with lid % group < w <= group / 2 < WG_SIZE;
//     red_wg[lid % RED_SLOTS], red_wg[lid + w] with lid < w <= RED_SLOTS / 2;
//     onchip_cache[4 * (q - REG_CAP_BLOCKS) + lane] with REG_CAP_BLOCKS <= q < nblocks and
//     lane < 4, and the host runs softmax_onchip only when k <= onchip_max_k, i.e.
//     nblocks <= (k + 6) / 4 <= REG_CAP_BLOCKS + SOFTMAX_CACHE_WORDS / 4 (src/softmax.rs,
//     onchip_capacity; the cache size is a multiple of 4). The subgroup reduction's indices:
//     see softmax_reduce_sg.wgsl.
//   * every loop ends: bounds are params (k, nblocks, segments) or constants, steps >= 1, and
//     the tree reductions halve w down to 0.
//   * no divisor is zero: params.k >= 1 (host check), segments >= 1, group a power of two in
//     1..WG_SIZE, tau normal and > 0 (bad per-row taus are replaced by 1 and flagged).
//   * workgroup memory (red, red_wg) is written by every thread of the workgroup before the barrier that
//     precedes any read (the subgroup reduction: by one lane per subgroup, read for subgroups
//     that exist only); early returns are uniform per workgroup (they depend on the
//     workgroup index and params only), so every thread reaches every barrier and every lane
//     every shuffle. onchip_cache is private to each thread in effect: thread t writes the
//     words of its own blocks (q = REG_CAP_BLOCKS + t + i * WG_SIZE) in pass 1 and reads the
//     same words, written earlier in its own program order, in pass 2; no word is read
//     unwritten (pass 2 reads j < k only, the words pass 1 wrote).
//   * the on-chip loops run q from REG_CAP_BLOCKS + lid to nblocks by WG_SIZE: they end.
// Rows are walked in Philox blocks (one philox call yields the noise of 4 consecutive elements);
// a row's block q (0 .. nblocks) holds elements j = 4q + lane - off.
//
// Numerics: with a the row's argmax of l + g, every entry is taken relative to it as
// diff_j = (l_j - l_a) + (g_j - g_a) (both differences exact where they matter, so f32 keeps the
// noise's precision even for |l| ~ 1e4, and a near-tie is resolved on a small number);
// s = sum exp(diff / tau), y_j = exp(diff_j / tau) / s, log y_j = diff_j / tau - log(s).
// One pass keeps an online state (argmax, s), rescaling s when the argmax changes; states merge
// associatively. Finite logits are clamped to +-2^125 and diff to [-2^100 tau', 0] so no inf
// is formed.
// Special rows (never inf/NaN arithmetic; found by bit pattern): masked (-inf) entries give
// y = 0, log y = -inf bits; rows with +inf logits share the mass equally among those entries;
// bad rows (NaN, all -inf, bad tau) get the quiet-NaN bits 0x7fc00000 in every output.
#import config
#import philox
#import gumbel
#import logits
#import grid

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> taus: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<storage, read_write> status: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> partials: array<State>;

// Philox blocks per thread of the register path (checked against src/softmax.rs by a test).
const REG_BLOCKS: u32 = 4u;
// Elements per thread of the register path: 4 * REG_BLOCKS.
const REG_SLOTS: u32 = 16u;
// Philox blocks per workgroup segment of the split kernels.
const SEG_BLOCKS: u32 = WG_SIZE * REG_BLOCKS;

const NAN_BITS: u32 = 0x7fc00000u;
const L_CLAMP: f32 = 0x1p125f;

const KIND_FINITE: u32 = 0u;
const KIND_POS_INF: u32 = 1u;
const KIND_BAD: u32 = 2u;

struct Row {
    n0: u32,
    l0: u32,         // element index (in the logits window) of the row's first logit
    off: u32,
    qb0: u32,
    nblocks: u32,
    tau: f32,
    lim: f32,
    bad_tau: u32,
}

// The online state of a row (or of the part of it one thread has seen).
struct State {
    nan: u32,        // a NaN logit was seen
    n_inf: u32,      // +inf logits seen
    first_inf: u32,  // lowest index of a +inf logit
    n_fin: u32,      // finite logits seen; the fields below are valid when > 0
    s: f32,          // sum over finite entries of exp(diff / tau), >= 1
    idx: u32,        // argmax of l + g, ties to the lowest index
    l_a: f32,        // the argmax's logit and noise
    g_a: f32,
}

fn empty_state() -> State {
    return State(0u, 0u, 0xffffffffu, 0u, 0.0, 0xffffffffu, 0.0, 0.0);
}

fn row_info(r: u32) -> Row {
    var row: Row;
    row.n0 = r * params.k;
    // Logits rows are k + row_pad elements apart (LogitsView's stride); out rows are dense.
    row.l0 = params.logit_base + r * (params.k + params.row_pad);
    let p0 = params.phase + row.n0;
    row.off = p0 % 4u;
    row.qb0 = p0 / 4u;
    row.nblocks = (row.off + params.k + 3u) / 4u;
    row.tau = params.tau;
    row.bad_tau = 0u;
    if (params.per_row_tau != 0u) {
        let tb = taus[params.tau_base + r];
        // Normal, finite, positive: no inf/NaN/zero/subnormal temperature reaches arithmetic.
        if (tb >= 0x00800000u && tb < 0x7f800000u) {
            row.tau = bitcast<f32>(tb);
        } else {
            row.bad_tau = 1u;
            row.tau = 1.0;
        }
    }
    row.lim = min(row.tau, 0x1p27f) * 0x1p100f;
    return row;
}

fn block_words(row: Row, q: u32) -> vec4<u32> {
    return philox_block(vec2<u32>(params.key_lo, params.key_hi),
                        vec2<u32>(params.block0_lo, params.block0_hi), row.qb0 + q);
}

fn is_finite_bits(b: u32) -> bool {
    return (b & 0x7fffffffu) < F32_POS_INF_BITS;
}

fn clamped_logit(b: u32) -> f32 {
    return clamp(bitcast<f32>(b), -L_CLAMP, L_CLAMP);
}

// The exponent diff / tau, diff clamped so it is finite and not positive.
fn scaled(diff: f32, row: Row) -> f32 {
    return clamp(diff, -row.lim, 0.0) / row.tau;
}

// (l + g) - (l_a + g_a), computed so that it is exact or nearly so when it is small.
fn rel(l: f32, g: f32, l_a: f32, g_a: f32) -> f32 {
    return (l - l_a) + (g - g_a);
}

fn absorb_finite(st: ptr<function, State>, l: f32, g: f32, j: u32, row: Row) {
    if ((*st).n_fin == 0u) {
        (*st).n_fin = 1u;
        (*st).s = 1.0;
        (*st).idx = j;
        (*st).l_a = l;
        (*st).g_a = g;
        return;
    }
    (*st).n_fin += 1u;
    let d = rel(l, g, (*st).l_a, (*st).g_a);
    if (d > 0.0 || (d == 0.0 && j < (*st).idx)) {
        (*st).s = (*st).s * exp(scaled(-d, row)) + 1.0;
        (*st).idx = j;
        (*st).l_a = l;
        (*st).g_a = g;
    } else {
        (*st).s += exp(scaled(d, row));
    }
}

// Element j with logit bits b and stream word w.
fn absorb(st: ptr<function, State>, b: u32, w: u32, j: u32, row: Row) {
    if (is_finite_bits(b)) {
        absorb_finite(st, clamped_logit(b), gumbel_from_word(w), j, row);
    } else if (is_pos_inf_bits(b)) {
        (*st).n_inf += 1u;
        (*st).first_inf = min((*st).first_inf, j);
    } else if (is_nan_bits(b)) {
        (*st).nan = 1u;
    }
    // -inf: a masked entry, nothing to add.
}

fn merge(a: State, b: State, row: Row) -> State {
    var r = a;
    r.nan = a.nan | b.nan;
    r.n_inf = a.n_inf + b.n_inf;
    r.first_inf = min(a.first_inf, b.first_inf);
    r.n_fin = a.n_fin + b.n_fin;
    if (b.n_fin == 0u) {
        return r;
    }
    if (a.n_fin == 0u) {
        r.s = b.s;
        r.idx = b.idx;
        r.l_a = b.l_a;
        r.g_a = b.g_a;
        return r;
    }
    let d = rel(b.l_a, b.g_a, a.l_a, a.g_a);
    if (d > 0.0 || (d == 0.0 && b.idx < a.idx)) {
        r.s = a.s * exp(scaled(-d, row)) + b.s;
        r.idx = b.idx;
        r.l_a = b.l_a;
        r.g_a = b.g_a;
    } else {
        r.s = a.s + b.s * exp(scaled(d, row));
    }
    return r;
}

fn row_kind(row: Row, st: State) -> u32 {
    if (row.bad_tau != 0u || st.nan != 0u || (st.n_fin == 0u && st.n_inf == 0u)) {
        return KIND_BAD;
    }
    if (st.n_inf > 0u) {
        return KIND_POS_INF;
    }
    return KIND_FINITE;
}

// Records a bad row in the status words (first bad row = lowest index, by atomicMin).
fn report(row: Row, st: State, r: u32) {
    if (params.use_status == 0u) {
        return;
    }
    let g = params.row0 + r;
    if (st.nan != 0u) {
        atomicMin(&status[params.status_base], g);
    } else if (st.n_fin == 0u && st.n_inf == 0u) {
        atomicMin(&status[params.status_base + 1u], g);
    }
    if (row.bad_tau != 0u) {
        atomicMin(&status[params.status_base + 2u], g);
    }
}

// Whether emit() needs the noise of an element with logit bits b.
fn needs_noise(kind: u32, b: u32) -> bool {
    return kind == KIND_FINITE && params.want_hard == 0u && is_finite_bits(b);
}

// The output bits of element j (logit bits b, noise g when needs_noise) of a finished row.
fn emit(row: Row, st: State, kind: u32, j: u32, b: u32, g: f32) -> u32 {
    if (kind == KIND_BAD) {
        return NAN_BITS;
    }
    if (params.want_hard != 0u) {
        let hot = select(st.idx, st.first_inf, kind == KIND_POS_INF);
        return bitcast<u32>(select(0.0, 1.0, j == hot));
    }
    var x: f32;
    var log_s: f32;
    if (kind == KIND_POS_INF) {
        if (!is_pos_inf_bits(b)) {
            return select(0u, F32_NEG_INF_BITS, params.want_log != 0u);
        }
        // Each +inf entry gets 1 / n_inf of the mass.
        x = 0.0;
        log_s = log(f32(st.n_inf));
    } else {
        if (!is_finite_bits(b)) {
            return select(0u, F32_NEG_INF_BITS, params.want_log != 0u);
        }
        x = scaled(rel(clamped_logit(b), g, st.l_a, st.g_a), row);
        log_s = log(st.s);
    }
    if (params.want_log != 0u) {
        return bitcast<u32>(x - log_s);
    }
    if (kind == KIND_POS_INF) {
        return bitcast<u32>(1.0 / f32(st.n_inf));
    }
    return bitcast<u32>(exp(x) / st.s);
}

// Pass 1 over blocks q_first, q_first + q_step, ... (below q_end) of a row.
fn scan(row: Row, q_first: u32, q_step: u32, q_end: u32) -> State {
    var st = empty_state();
    for (var q = q_first; q < q_end; q += q_step) {
        let w = block_words(row, q);
        for (var lane = 0u; lane < 4u; lane++) {
            let j = 4u * q + lane - row.off;
            if (j < params.k) {
                absorb(&st, logit_bits(row.l0 + j, params.format), w[lane], j, row);
            }
        }
    }
    return st;
}

// Pass 2 over the same blocks: re-reads the logits, remakes the noise, writes the outputs.
fn write_scan(row: Row, st: State, kind: u32, q_first: u32, q_step: u32, q_end: u32) {
    for (var q = q_first; q < q_end; q += q_step) {
        var w = vec4<u32>(0u);
        if (kind == KIND_FINITE && params.want_hard == 0u) {
            w = block_words(row, q);
        }
        for (var lane = 0u; lane < 4u; lane++) {
            let j = 4u * q + lane - row.off;
            if (j < params.k) {
                var b = 0u;
                var g = 0.0;
                if (kind != KIND_BAD && params.want_hard == 0u) {
                    b = logit_bits(row.l0 + j, params.format);
                    if (needs_noise(kind, b)) {
                        g = gumbel_from_word(w[lane]);
                    }
                }
                out[params.out_base + row.n0 + j] = emit(row, st, kind, j, b, g);
            }
        }
    }
}

// Teams of fewer than WG_SIZE threads (softmax_registers only) reduce in `red`, one slot per
// thread; whole-workgroup reductions (every other kernel) in `red_wg`, RED_SLOTS states (2 KiB,
// not 8: the on-chip kernel's cache gets the rest of the workgroup memory, checked against
// src/softmax.rs by a test). Each entry point is compiled with the workgroup variables it uses
// only, so the on-chip kernel holds red_wg and its cache, never `red`.
var<workgroup> red: array<State, WG_SIZE>;
const RED_SLOTS: u32 = 64u;
var<workgroup> red_wg: array<State, RED_SLOTS>;

// Merge of the states of each aligned group of `group` threads (a power of two below WG_SIZE;
// tree, no subgroups needed); every thread gets its group's state.
fn reduce_group(lid: u32, st: State, row: Row, group: u32) -> State {
    red[lid] = st;
    workgroupBarrier();
    for (var w = group / 2u; w > 0u; w = w / 2u) {
        if (lid % group < w) {
            red[lid] = merge(red[lid], red[lid + w], row);
        }
        workgroupBarrier();
    }
    let r = red[lid - lid % group];
    workgroupBarrier();
    return r;
}

// Workgroup-wide merge through workgroup memory only: every thread gets the workgroup's state.
// `reduce(lid, st, row, sg)`, which the kernels call, is this (softmax_reduce_wg.wgsl) or a
// subgroup reduction first (softmax_reduce_sg.wgsl), by the family variant's prefix.
// Threads fold into the RED_SLOTS slots in WG_SIZE / RED_SLOTS turns (slot lid % RED_SLOTS:
// threads below RED_SLOTS write, then each further slice merges its state in, a barrier
// between turns), then a tree over the slots; every thread gets red_wg[0] (the same value: one
// merge order for all). Indices: lid % RED_SLOTS < RED_SLOTS; lid + w < 2 w <= RED_SLOTS.
fn reduce_wg(lid: u32, st: State, row: Row) -> State {
    let slot = lid % RED_SLOTS;
    if (lid < RED_SLOTS) {
        red_wg[slot] = st;
    }
    workgroupBarrier();
    for (var turn = 1u; turn < WG_SIZE / RED_SLOTS; turn++) {
        if (lid / RED_SLOTS == turn) {
            red_wg[slot] = merge(red_wg[slot], st, row);
        }
        workgroupBarrier();
    }
    for (var w = RED_SLOTS / 2u; w > 0u; w = w / 2u) {
        if (lid < w) {
            red_wg[lid] = merge(red_wg[lid], red_wg[lid + w], row);
        }
        workgroupBarrier();
    }
    let r = red_wg[0];
    workgroupBarrier();
    return r;
}

// Many rows of small k: one row per thread, two passes over it (the second hits the cache).
@compute @workgroup_size(WG_SIZE)
fn softmax_rows(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    let row = row_info(r);
    let st = scan(row, 0u, 1u, row.nblocks);
    let kind = row_kind(row, st);
    report(row, st, r);
    write_scan(row, st, kind, 0u, 1u, row.nblocks);
}

// Mid k: params.group threads per row (a power of two dividing WG_SIZE), WG_SIZE / group rows
// per workgroup; the row (logit bits and noise) stays in registers between the reduction and
// the write, so the logits are read once. Needs nblocks <= group * REG_BLOCKS.
@compute @workgroup_size(WG_SIZE)
fn softmax_registers(@builtin(local_invocation_index) lid: u32,
                     @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>, sg: SubgroupIds) {
    let group = params.group;
    let first = group_index(wid, nwg) * (WG_SIZE / group);
    if (first >= params.rows) {
        return;
    }
    // Threads of a row past the end still take part in the workgroup's barriers, with no blocks.
    let r = first + lid / group;
    let t = lid % group;
    let live = r < params.rows;
    var row = row_info(select(first, r, live));
    if (!live) {
        row.nblocks = 0u;
    }
    var bits: array<u32, REG_SLOTS>;
    var noise: array<f32, REG_SLOTS>;
    var st = empty_state();
    for (var i = 0u; i < REG_BLOCKS; i++) {
        let q = t + i * group;
        if (q < row.nblocks) {
            let w = block_words(row, q);
            for (var lane = 0u; lane < 4u; lane++) {
                let j = 4u * q + lane - row.off;
                let slot = 4u * i + lane;
                bits[slot] = F32_NEG_INF_BITS;
                noise[slot] = 0.0;
                if (j < params.k) {
                    let b = logit_bits(row.l0 + j, params.format);
                    bits[slot] = b;
                    if (is_finite_bits(b)) {
                        let g = gumbel_from_word(w[lane]);
                        noise[slot] = g;
                        absorb_finite(&st, clamped_logit(b), g, j, row);
                    } else {
                        absorb(&st, b, 0u, j, row);
                    }
                }
            }
        }
    }
    var fin = st;
    if (group == WG_SIZE) {
        fin = reduce(lid, st, row, sg);
    } else if (group > 1u) {
        fin = reduce_group(lid, st, row, group);
    }
    let kind = row_kind(row, fin);
    if (t == 0u && live) {
        report(row, fin, r);
    }
    for (var i = 0u; i < REG_BLOCKS; i++) {
        let q = t + i * group;
        if (q < row.nblocks) {
            for (var lane = 0u; lane < 4u; lane++) {
                let j = 4u * q + lane - row.off;
                if (j < params.k) {
                    let slot = 4u * i + lane;
                    out[params.out_base + row.n0 + j] = emit(row, fin, kind, j, bits[slot], noise[slot]);
                }
            }
        }
    }
}

// Rows that fit on chip (k <= the family's onchip_max_k): one workgroup per row; thread t
// holds blocks t + i * WG_SIZE (i < REG_BLOCKS) in registers, as softmax_registers does with a
// group of WG_SIZE (its register loops are written out again on purpose: moved into functions
// taking ptr<function, array> they made the forward tests 35x slower on llvmpipe GL, 232 s
// against 6.6 s, where the arrays are copied in and out of each call), and the blocks beyond, q = REG_CAP_BLOCKS + t + i * WG_SIZE, as logit bits
// in workgroup memory (cache words 4 * (q - REG_CAP_BLOCKS) + lane, written and read by thread
// t only). The logits are read once; the noise of the cached blocks is made again by Philox in
// the writing pass (compute, not memory traffic).
const REG_CAP_BLOCKS: u32 = WG_SIZE * REG_BLOCKS;
var<workgroup> onchip_cache: array<u32, SOFTMAX_CACHE_WORDS>;

@compute @workgroup_size(WG_SIZE)
fn softmax_onchip(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>, sg: SubgroupIds) {
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let row = row_info(r);
    var bits: array<u32, REG_SLOTS>;
    var noise: array<f32, REG_SLOTS>;
    var st = empty_state();
    for (var i = 0u; i < REG_BLOCKS; i++) {
        let q = lid + i * WG_SIZE;
        if (q < row.nblocks) {
            let w = block_words(row, q);
            for (var lane = 0u; lane < 4u; lane++) {
                let j = 4u * q + lane - row.off;
                let slot = 4u * i + lane;
                bits[slot] = F32_NEG_INF_BITS;
                noise[slot] = 0.0;
                if (j < params.k) {
                    let b = logit_bits(row.l0 + j, params.format);
                    bits[slot] = b;
                    if (is_finite_bits(b)) {
                        let g = gumbel_from_word(w[lane]);
                        noise[slot] = g;
                        absorb_finite(&st, clamped_logit(b), g, j, row);
                    } else {
                        absorb(&st, b, 0u, j, row);
                    }
                }
            }
        }
    }
    for (var q = REG_CAP_BLOCKS + lid; q < row.nblocks; q += WG_SIZE) {
        let w = block_words(row, q);
        let c = 4u * (q - REG_CAP_BLOCKS);
        for (var lane = 0u; lane < 4u; lane++) {
            let j = 4u * q + lane - row.off;
            if (j < params.k) {
                let b = logit_bits(row.l0 + j, params.format);
                onchip_cache[c + lane] = b;
                absorb(&st, b, w[lane], j, row);
            }
        }
    }
    let fin = reduce(lid, st, row, sg);
    let kind = row_kind(row, fin);
    if (lid == 0u) {
        report(row, fin, r);
    }
    for (var i = 0u; i < REG_BLOCKS; i++) {
        let q = lid + i * WG_SIZE;
        if (q < row.nblocks) {
            for (var lane = 0u; lane < 4u; lane++) {
                let j = 4u * q + lane - row.off;
                if (j < params.k) {
                    let slot = 4u * i + lane;
                    out[params.out_base + row.n0 + j] = emit(row, fin, kind, j, bits[slot], noise[slot]);
                }
            }
        }
    }
    for (var q = REG_CAP_BLOCKS + lid; q < row.nblocks; q += WG_SIZE) {
        var w = vec4<u32>(0u);
        if (kind == KIND_FINITE && params.want_hard == 0u) {
            w = block_words(row, q);
        }
        let c = 4u * (q - REG_CAP_BLOCKS);
        for (var lane = 0u; lane < 4u; lane++) {
            let j = 4u * q + lane - row.off;
            if (j < params.k) {
                var b = 0u;
                var g = 0.0;
                if (kind != KIND_BAD && params.want_hard == 0u) {
                    b = onchip_cache[c + lane];
                    if (needs_noise(kind, b)) {
                        g = gumbel_from_word(w[lane]);
                    }
                }
                out[params.out_base + row.n0 + j] = emit(row, fin, kind, j, b, g);
            }
        }
    }
}

// Large k: one workgroup per row; pass 1 keeps an online (argmax, sum) state per thread and
// merges them, pass 2 re-reads the logits, remakes the noise and writes.
@compute @workgroup_size(WG_SIZE)
fn softmax_online(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>, sg: SubgroupIds) {
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let row = row_info(r);
    let fin = reduce(lid, scan(row, lid, WG_SIZE, row.nblocks), row, sg);
    let kind = row_kind(row, fin);
    if (lid == 0u) {
        report(row, fin, r);
    }
    write_scan(row, fin, kind, lid, WG_SIZE, row.nblocks);
}

// Few rows of huge k, split across workgroups: workgroup g handles segment g % segments (blocks
// SEG_BLOCKS * seg ..) of row g / segments. Dispatch 1 stores each segment's state in partials;
// dispatch 2 merges the row's partials (every segment the same way, so all agree), then writes
// its segment.
fn split_range(wid: vec3<u32>, nwg: vec3<u32>) -> vec3<u32> {
    let g = group_index(wid, nwg);
    return vec3<u32>(g / params.segments, g % params.segments, g);
}

@compute @workgroup_size(WG_SIZE)
fn softmax_split_partial(@builtin(local_invocation_index) lid: u32,
                         @builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>, sg: SubgroupIds) {
    let rs = split_range(wid, nwg);
    if (rs.x >= params.rows) {
        return;
    }
    let row = row_info(rs.x);
    let q0 = rs.y * SEG_BLOCKS;
    let st = reduce(lid, scan(row, q0 + lid, WG_SIZE, min(q0 + SEG_BLOCKS, row.nblocks)), row, sg);
    if (lid == 0u) {
        partials[params.partial_base + rs.z] = st;
    }
}

@compute @workgroup_size(WG_SIZE)
fn softmax_split_write(@builtin(local_invocation_index) lid: u32,
                       @builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>, sg: SubgroupIds) {
    let rs = split_range(wid, nwg);
    if (rs.x >= params.rows) {
        return;
    }
    let row = row_info(rs.x);
    var st = empty_state();
    for (var i = lid; i < params.segments; i += WG_SIZE) {
        st = merge(st, partials[params.partial_base + rs.x * params.segments + i], row);
    }
    let fin = reduce(lid, st, row, sg);
    let kind = row_kind(row, fin);
    if (lid == 0u && rs.y == 0u) {
        report(row, fin, rs.x);
    }
    let q0 = rs.y * SEG_BLOCKS;
    write_scan(row, fin, kind, q0 + lid, WG_SIZE, min(q0 + SEG_BLOCKS, row.nblocks));
}
