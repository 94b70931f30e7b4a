// Gumbel-max sampling and Gumbel-top-k: per row, the indices of the `top` largest values of
// z_j = l_j / t_r + g_j (t_r = 1 without temperatures), in decreasing order of z.
//
// Bindings (group 0):
//   0: uniform SampleParams (generated from the Rust struct: #import params)
//   1: storage, read       logits: array<u32>  f32 bits, or f16/bf16 packed two per word
//                          (logits.wgsl); element n of this dispatch is logit_bits(logit_base + n)
//   2: storage, read       temps: array<f32>   per-row temperature t_r = temps[temp_base + r]
//                          (read only when per_row_tau != 0, a dummy buffer otherwise; then
//                          t_r = params.tau, and x / 1.0 is exact, so tau 1 is no temperature)
//   3: storage, read_write out: array<u32>     out[out_base + r * top + i], i < top
//   4: storage, read_write scratch: array<vec2<u32>> split-row partials, (key, index) at
//                          (r * chunks + c) * top + i (a dummy buffer on the other paths)
//
// Counter scheme: flat element n = r * k + j of this dispatch uses stream word n, i.e. lane
// (phase + n) % 4 of Philox block block0 + (phase + n) / 4 (philox.wgsl). Every path walks a row
// in whole blocks, so one philox call yields the noise of 4 consecutive elements.
//
// Order: a candidate is (key, index) with key the order-preserving u32 image of z's bits; larger
// key first, and on equal keys the lower index first, so every path (and any reduction order)
// picks the same winner. No inf/NaN arithmetic: special logits are classified by bit pattern.
//   * -inf logit (masked) and NaN logit: no candidate (key 0), never selected;
//   * +inf logit: key of +inf, above every finite z; among several, the lowest index first;
//   * a row with fewer than `top` candidates gets NO_INDEX (0xffffffff) in the remaining slots
//     (so an all-masked row samples NO_INDEX).
// Top-k is `top` rounds of arg-max, round i keeping only candidates strictly after round i-1's
// winner in the order above: exact, O(top * k) work, no extra memory.
//
// Entry points:
//   sample_thread:    one row per invocation (small k), WG_SIZE rows per workgroup.
//   sample_group:     `seg` invocations per row (a power of two up to WG_SIZE: a whole
//                     workgroup, or WG_SIZE / seg rows per workgroup); tree reduction of
//                     (key, index) per segment in workgroup memory.
//   sample_partial:   split rows, pass 1: workgroup (r, c) takes blocks of chunk c of row r,
//                     writes its top list to scratch.
//   sample_combine:   split rows, pass 2: one workgroup per row merges the chunks' lists.
// Workgroups are linearised over a 2-D grid (x fastest); surplus groups return.
#import config
#import philox
#import gumbel
#import logits
#import grid

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> temps: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<storage, read_write> scratch: array<vec2<u32>>;

const NO_INDEX: u32 = 0xffffffffu;
// Key of a +inf logit: the image of +inf's bits, above the image of every finite f32.
const POS_INF_KEY: u32 = 0xff800000u;
// Precedes every candidate: +inf's key is the largest a candidate can have.
const BEFORE_ALL: vec2<u32> = vec2<u32>(0xffffffffu, 0u);
const EMPTY: vec2<u32> = vec2<u32>(0u, NO_INDEX);

// a comes before b: larger key, or equal keys and lower index.
fn before(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y < b.y);
}

// The order-preserving image of z (an f32's bits): negative values bit-flipped, non-negative
// ones with the sign bit set; -0 counts as +0. Finite z map to keys in (0x007fffff, 0xff800000).
fn key_of(zb: u32) -> u32 {
    var b = zb;
    if (b == 0x80000000u) {
        b = 0u;
    }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The key of element n (dispatch-local flat index) of row r, given its noise word.
fn candidate_key(r: u32, n: u32, w: u32) -> u32 {
    let bits = logit_bits(params.logit_base + n, params.format);
    if (is_masked_bits(bits) || is_nan_bits(bits)) {
        return 0u;
    }
    if (is_pos_inf_bits(bits)) {
        return POS_INF_KEY;
    }
    var x = bitcast<f32>(bits);
    if (params.per_row_tau != 0u) {
        x = x / temps[params.temp_base + r];
    } else {
        x = x / params.tau;
    }
    return key_of(bitcast<u32>(x + gumbel_from_word(w)));
}

// `best`, or element s - phase (dispatch-local flat index) of row r if it is a candidate after
// `prev` and before `best`. `row0` = r * k.
fn consider(r: u32, row0: u32, s: u32, w: u32, best: vec2<u32>, prev: vec2<u32>) -> vec2<u32> {
    if (s < params.phase + row0 || s - params.phase >= row0 + params.k) {
        return best;
    }
    let n = s - params.phase;
    let c = vec2<u32>(candidate_key(r, n, w), n - row0);
    if (c.x != 0u && before(prev, c) && before(c, best)) {
        return c;
    }
    return best;
}

// Updates `best` with the elements of row r in dispatch-local block b (one philox call),
// keeping only candidates after `prev`. The four lanes are written out rather than looped:
// llvmpipe stops every loop of an invocation once their iterations add up to 65535.
fn scan_block(r: u32, b: u32, best_in: vec2<u32>, prev: vec2<u32>) -> vec2<u32> {
    let words = philox_block(vec2<u32>(params.key_lo, params.key_hi),
                             vec2<u32>(params.block0_lo, params.block0_hi), b);
    let row0 = r * params.k;
    var best = consider(r, row0, 4u * b, words.x, best_in, prev);
    best = consider(r, row0, 4u * b + 1u, words.y, best, prev);
    best = consider(r, row0, 4u * b + 2u, words.z, best, prev);
    return consider(r, row0, 4u * b + 3u, words.w, best, prev);
}

// First and one-past-last dispatch-local block of row r.
fn row_blocks(r: u32) -> vec2<u32> {
    let first = (params.phase + r * params.k) / 4u;
    let last = (params.phase + r * params.k + params.k - 1u) / 4u;
    return vec2<u32>(first, last + 1u);
}

@compute @workgroup_size(WG_SIZE)
fn sample_thread(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    let blocks = row_blocks(r);
    var prev = BEFORE_ALL;
    for (var i = 0u; i < params.top; i++) {
        var best = EMPTY;
        for (var b = blocks.x; b < blocks.y; b++) {
            best = scan_block(r, b, best, prev);
        }
        out[params.out_base + r * params.top + i] = best.y;
        prev = best;
    }
}

var<workgroup> red: array<vec2<u32>, WG_SIZE>;

// The best of `mine` over each segment of `seg` consecutive invocations (seg a power of two
// dividing WG_SIZE; called in uniform control flow); every invocation gets its segment's best.
fn reduce_segment(lid: u32, seg: u32, mine: vec2<u32>) -> vec2<u32> {
    red[lid] = mine;
    workgroupBarrier();
    let lane = lid & (seg - 1u);
    for (var stride = seg / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride && before(red[lid + stride], red[lid])) {
            red[lid] = red[lid + stride];
        }
        workgroupBarrier();
    }
    let best = red[lid - lane];
    // Nobody may overwrite the segment's result before everyone has read it.
    workgroupBarrier();
    return best;
}

@compute @workgroup_size(WG_SIZE)
fn sample_group(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let seg = params.seg;
    let first_row = group_index(wid, nwg) * (WG_SIZE / seg);
    if (first_row >= params.rows) {
        return;
    }
    let lane = lid & (seg - 1u);
    let r = first_row + lid / seg;
    // Invocations past the last row stay for the barriers.
    let valid = r < params.rows;
    var blocks = vec2<u32>(0u, 0u);
    if (valid) {
        blocks = row_blocks(r);
    }
    var prev = BEFORE_ALL;
    for (var i = 0u; i < params.top; i++) {
        var best = EMPTY;
        for (var b = blocks.x + lane; b < blocks.y; b += seg) {
            best = scan_block(r, b, best, prev);
        }
        best = reduce_segment(lid, seg, best);
        if (valid && lane == 0u) {
            out[params.out_base + r * params.top + i] = best.y;
        }
        prev = best;
    }
}

@compute @workgroup_size(WG_SIZE)
fn sample_partial(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let g = group_index(wid, nwg);
    let r = g / params.chunks;
    if (r >= params.rows) {
        return;
    }
    let c = g % params.chunks;
    let blocks = row_blocks(r);
    let per_chunk = (blocks.y - blocks.x + params.chunks - 1u) / params.chunks;
    let lo = min(blocks.x + c * per_chunk, blocks.y);
    let hi = min(lo + per_chunk, blocks.y);
    var prev = BEFORE_ALL;
    for (var i = 0u; i < params.top; i++) {
        var best = EMPTY;
        for (var b = lo + lid; b < hi; b += WG_SIZE) {
            best = scan_block(r, b, best, prev);
        }
        best = reduce_segment(lid, WG_SIZE, best);
        if (lid == 0u) {
            scratch[g * params.top + i] = best;
        }
        prev = best;
    }
}

@compute @workgroup_size(WG_SIZE)
fn sample_combine(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let m = params.chunks * params.top;
    let base = r * m;
    var prev = BEFORE_ALL;
    for (var i = 0u; i < params.top; i++) {
        var best = EMPTY;
        for (var e = lid; e < m; e += WG_SIZE) {
            let c = scratch[base + e];
            if (c.x != 0u && before(prev, c) && before(c, best)) {
                best = c;
            }
        }
        best = reduce_segment(lid, WG_SIZE, best);
        if (lid == 0u) {
            out[params.out_base + r * params.top + i] = best.y;
        }
        prev = best;
    }
}
