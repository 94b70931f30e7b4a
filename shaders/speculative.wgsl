// Speculative verification (Leviathan et al. 2023; Chen et al. 2023): accept draft i while
// u_i * q_i(d_i) < p_i(d_i); at the first rejection emit a Gumbel-max draw from max(0, p_i - q_i)
// (from p_i if that is all zero), after n acceptances a bonus draw from p_n. Twin of
// cpu::verify_speculative.
//
// Entry points (the host picks the path from the shape, SpeculativeVerifier::strategy_for; both
// give the same bits, below):
//   verify_row:     one workgroup per row: the acceptance walk (invocation 0, sequential), then
//                   the draw over the whole row (a second draw from p_i if the residual is all
//                   zero).
//   verify_partial: split rows, pass 1: workgroup g = r * chunks + c. The walk in parallel (every
//                   position is checked on its own; the lowest stop wins), then the draw's
//                   candidates in chunk c of the stopping position's blocks: the best of the
//                   drawn law and the best p_i fallback (scan), each reduced over the workgroup
//                   (the fallback only where the chunk's residual best is EMPTY: else the row's
//                   draw has a candidate and the fallback is ignored; EMPTY is stored), into
//                   scratch; chunk 0 also stores the verdict (stop, bad).
//   verify_combine: split rows, pass 2: one workgroup per row merges the chunks' pairs (the
//                   fallback where the drawn law's best is EMPTY) and writes accepted and out.
//
// Bindings (group 0):
//   0: uniform SpecParams
//   1: storage, read       drafts: array<u32>   drafts[draft_base + r * n + i]
//   2: storage, read       q: array<f32>        draft laws, q[q_base + (r * n + i) * k + j]
//   3: storage, read       p: array<f32>        target laws, p[p_base + (r * (n + 1) + i) * k + j]
//   4: storage, read       streams: array<u32>  4 words per row at stream_base + 4 r: seed lo,
//                          seed hi, offset lo, offset hi
//   5: storage, read_write accepted: array<u32> accepted[accepted_base + r]
//   6: storage, read_write out: array<u32>      out[out_base + r * (n + 1) + i], i <= n
//   7: storage, read_write scratch: array<vec2<u32>> split path only (a dummy buffer for
//                          verify_row): row r's region of 1 + 2 * chunks pairs from
//                          r * (1 + 2 * chunks): the verdict (stop i, bad flag) at 0, chunk c's
//                          best of the drawn law at 1 + 2c and its fallback at 2 + 2c
//
// Counter scheme: position i (0..=n) of row r owns noise elements i * (k + 1) + j, j = 0..=k, of
// the row's stream: j < k the Gumbel noise of category j, j = k the acceptance uniform u_i
// (cpu::speculative_word). With noise64 == 0 (Noise::Bits32) element e is word e: position i
// owns words i * (k + 1) .. i * (k + 1) + k. With noise64 != 0 (Noise::Bits64) element e is words
// 2e (high half) and 2e + 1 (low half), per = 2 words per element: category j uses words
// 2 i (k + 1) + 2j and + 2j + 1 (gumbel_from_words64), u_i words 2 i (k + 1) + 2k and + 2k + 1
// (uniform_from_words64); a draw walks 2k words, two categories per Philox block, and for an odd
// phase each block's last pair ends in the next block (a second philox call). The host keeps
// per * (n + 1) * (k + 1) below 2^32, so every word index of a row fits one u32 and is added to
// the 64-bit offset with a carry; it also keeps (n + 1) * k within one storage binding (below
// 2^30 elements), so phase + per * k + 3 does not wrap.
//
// The split path gives verify_row's bits: chunks cut a draw's blocks (draw_span) into runs of
// whole Philox blocks, ceil(blocks / chunks) each (the last shorter, some empty when chunks >
// blocks), and an element belongs to the block of its first word on both paths, so each
// element is read once with the same noise words (a 64-bit pair straddling the end of a chunk's
// last block takes lane 0 of the next block, as verify_row does); the candidates are the same
// expressions (scan), and the arg-max is exact (larger key, then lower index) in any order. The
// fallback: verify_row draws from p_i only when the residual draw found no candidate, i.e. every
// residual entry is zero and good; then no invocation's residual best ever leaves EMPTY, so each
// took the p_i candidate of every entry it read, and the fallbacks merge to the p_i draw. Where
// some residual entry is positive or bad, the fallback is ignored. The parallel walk stops where
// the sequential one does: position i stops the row (rejection, or bad) independently of the
// others, so the first stop is the lowest i with 2 i + bad (< NO_INDEX: n + 1 < 2^31, from
// per * (n + 1) * (k + 1) < 2^32 with k >= 1).
//
// Indices stay in range: i < n for drafts and q, i <= n for p (the verdict's i <= n: the lowest
// stopping position, or n), j < k, ws[e + 1] with e < 4 in the five-word window; a draft token
// >= k (not checked on the device) counts as rejected with nothing to emit: the row's slot gets
// NO_INDEX. Scratch: g < rows * chunks, c < chunks, so 2 + 2c < 1 + 2 * chunks; the host binds
// rows * (1 + 2 * chunks) pairs (within one binding, so chunks < 2^30 and no product wraps).
// A chunk's blocks [lo, hi): lo = min(c * per_chunk, blocks) <= hi <= blocks.
// Bad probabilities (NaN, +-inf, negative; -0 is fine) are not checked on the host for buffer
// jobs, and max(NaN - q, 0), log(inf) and u * inf < inf are not portable, so every value the row
// reads is tested by its bits (is_bad) before use: a bad p_i(d_i) or q_i(d_i) in the acceptance
// walk stops the row at i as an out-of-range draft does, and a bad entry of the law drawn at the
// stopping position (p_i, and q_i for the residual) makes the draw's candidate BAD_KEY, a key no
// good candidate reaches (log(w) + g is finite or +inf for finite w > 0 and finite g), so the
// reduction returns it and the slot gets NO_INDEX. Either way accepted = i and the output is
// defined; values the row's result does not depend on (positions past the stop, which the
// parallel walk may read) do not matter.
// Workgroups are linearised over a 2-D grid; surplus groups return (the whole group: the
// reductions' barriers and subgroup operations stay in uniform control flow, as do both draws,
// taken on workgroupUniformLoad values; the loops before a reduction hold no barrier). The
// arg-max is reduce_best (reduce_best.wgsl, its subgroup version where the adapter has
// subgroups): exact, the largest key, then the lowest index, whichever path runs. Workgroup
// memory (verdict, empty_draw, the reduction's slots) is written by invocation 0 or by each
// invocation before a barrier, then read. Scratch is written by the partial pass and read by the
// combine pass, a later dispatch of the same compute pass (ordered by WebGPU's usage scopes).
#import config
#import philox
#import gumbel
#import grid
#import reduce_best

#import params
@group(0) @binding(1) var<storage, read> drafts: array<u32>;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> p: array<f32>;
@group(0) @binding(4) var<storage, read> streams: array<u32>;
@group(0) @binding(5) var<storage, read_write> accepted: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<u32>;
@group(0) @binding(7) var<storage, read_write> scratch: array<vec2<u32>>;

const NO_INDEX: u32 = 0xffffffffu;
const EMPTY: vec2<u32> = vec2<u32>(0u, NO_INDEX);
// key_of(+NaN bits 0x7fffffff): above key_of(+inf) = 0xff800000, the largest good key.
const BAD_KEY: u32 = 0xffffffffu;

// NaN, +-inf or negative (other than -0): bits 0x7f800000.. (+inf, +NaN) or above 0x80000000.
fn is_bad(x: f32) -> bool {
    let b = bitcast<u32>(x);
    return b >= 0x7f800000u && b != 0x80000000u;
}

// (first rejected position or n, 1 if that position's draft token is out of range or its
// p_i(d_i) or q_i(d_i) is bad).
var<workgroup> verdict: vec2<u32>;
var<workgroup> empty_draw: u32;

fn key_of(xb: u32) -> u32 {
    var b = xb;
    if (b == 0x80000000u) {
        b = 0u;
    }
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The 64-bit word index offset + w as (lo, hi).
fn word_index(offset: vec2<u32>, w: u32) -> vec2<u32> {
    let lo = offset.x + w;
    return vec2<u32>(lo, offset.y + select(0u, 1u, lo < w));
}

// Word m (64-bit) of the stream keyed by `key`.
fn stream_word(key: vec2<u32>, m: vec2<u32>) -> u32 {
    let block = vec2<u32>((m.x >> 2u) | (m.y << 30u), m.y >> 2u);
    let words = philox_block(key, block, 0u);
    let ws = array<u32, 4>(words.x, words.y, words.z, words.w);
    return ws[m.x & 3u];
}

// log2 of the words per noise element: 0 (Noise::Bits32) or 1 (Noise::Bits64).
fn word_shift() -> u32 {
    return select(0u, 1u, params.noise64 != 0u);
}

// The acceptance uniform u_i of position i (element i * (k + 1) + k).
fn acceptance_uniform(key: vec2<u32>, offset: vec2<u32>, i: u32) -> f32 {
    let w = (i * (params.k + 1u) + params.k) << word_shift();
    if (params.noise64 != 0u) {
        return uniform_from_words64(stream_word(key, word_index(offset, w)),
                                    stream_word(key, word_index(offset, w + 1u)));
    }
    return uniform_from_word(stream_word(key, word_index(offset, w)));
}

// Draft i of row r (i < n) in the acceptance walk: its token d (< k) if it is accepted
// (u_i * q_i(d) < p_i(d)), else REJECTED, or BAD_DRAFT if d >= k or p_i(d) or q_i(d) is bad.
// Positions are independent: the split path checks them in parallel.
const REJECTED: u32 = 0xfffffffeu;
const BAD_DRAFT: u32 = 0xffffffffu;

fn position_verdict(r: u32, i: u32, key: vec2<u32>, offset: vec2<u32>) -> u32 {
    let k = params.k;
    let n = params.n;
    let d = drafts[params.draft_base + r * n + i];
    if (d >= k) {
        return BAD_DRAFT;
    }
    let u = acceptance_uniform(key, offset, i);
    let pd = p[params.p_base + (r * (n + 1u) + i) * k + d];
    let qd = q[params.q_base + (r * n + i) * k + d];
    if (is_bad(pd) || is_bad(qd)) {
        return BAD_DRAFT;
    }
    if (!(u * qd < pd)) {
        return REJECTED;
    }
    return d;
}

// Where position i's draw lies in the row's stream: its first Philox block (64-bit), the lane
// of its first word (phase) and the blocks its per * k words touch. Block b of the draw holds
// words 4 b - phase .. 4 b - phase + 3 of the position; an element belongs to the block of its
// first word (with noise64 and an odd phase its low word is lane 0 of block b + 1).
struct Span {
    block0: vec2<u32>,
    phase: u32,
    blocks: u32,
}

fn draw_span(i: u32, offset: vec2<u32>) -> Span {
    let sh = word_shift();
    let base = word_index(offset, (i * (params.k + 1u)) << sh);
    let phase = base.x & 3u;
    return Span(vec2<u32>((base.x >> 2u) | (base.y << 30u), base.y >> 2u), phase,
                (phase + (params.k << sh) + 3u) / 4u);
}

// This invocation's share of position i's Gumbel-max draw: blocks lo + lid, lo + lid + WG_SIZE,
// ... below hi of the span; lanes s - phase that are not a multiple of per, or past per * k,
// are skipped. Returns .xy, the best candidate of the drawn law (the residual max(0, p_i - q_i)
// when `residual`, else p_i; a bad entry, of p_i or of q_i for the residual, is BAD_KEY), and
// .zw, when `fallback`, the best candidate of p_i among the entries read while .xy was still
// EMPTY (EMPTY otherwise). The fallback is what the draw from p_i would give if the residual is
// all zero: then every entry leaves .xy EMPTY, so every entry's p_i candidate is taken; where
// some residual entry is positive (or bad) the fallback is never used, whatever it holds.
fn scan(lid: u32, r: u32, i: u32, residual: bool, fallback: bool, key: vec2<u32>, span: Span,
        lo: u32, hi: u32) -> vec4<u32> {
    let k = params.k;
    let n = params.n;
    let sh = word_shift();
    let wide = sh != 0u;
    let phase = span.phase;
    let prow = params.p_base + (r * (n + 1u) + i) * k;
    let qrow = params.q_base + (r * n + i) * k;
    var best = EMPTY;
    var alt = EMPTY;
    for (var b = lo + lid; b < hi; b += WG_SIZE) {
        let words = philox_block(key, span.block0, b);
        // A pair starting in lane 3 (odd phase) ends in lane 0 of the next block.
        var next = 0u;
        if (wide && (phase & 1u) != 0u) {
            next = philox_block(key, span.block0, b + 1u).x;
        }
        let ws = array<u32, 5>(words.x, words.y, words.z, words.w, next);
        for (var e = 0u; e < 4u; e++) {
            let s = 4u * b + e;
            if (s < phase || ((s - phase) & sh) != 0u || ((s - phase) >> sh) >= k) {
                continue;
            }
            let j = (s - phase) >> sh;
            let pj = p[prow + j];
            var w = pj;
            var bad = is_bad(pj);
            if (residual) {
                let qj = q[qrow + j];
                bad = bad || is_bad(qj);
                w = max(w - qj, 0.0);
            }
            if (bad) {
                let c = vec2<u32>(BAD_KEY, j);
                if (before(c, best)) {
                    best = c;
                }
            } else if (w > 0.0 || (fallback && best.y == NO_INDEX && pj > 0.0)) {
                var g = 0.0;
                if (wide) {
                    g = gumbel_from_words64(ws[e], ws[e + 1u]);
                } else {
                    g = gumbel_from_word(ws[e]);
                }
                if (w > 0.0) {
                    let c = vec2<u32>(key_of(bitcast<u32>(log(w) + g)), j);
                    if (before(c, best)) {
                        best = c;
                    }
                } else {
                    let c = vec2<u32>(key_of(bitcast<u32>(log(pj) + g)), j);
                    if (before(c, alt)) {
                        alt = c;
                    }
                }
            }
        }
    }
    return vec4<u32>(best, alt);
}

// Gumbel-max over the categories of position i, the whole row by this workgroup: the residual
// when `residual`, else p_i.
fn draw(lid: u32, r: u32, i: u32, residual: bool, key: vec2<u32>, offset: vec2<u32>) -> vec2<u32> {
    let span = draw_span(i, offset);
    return reduce_best(lid, scan(lid, r, i, residual, false, key, span, 0u, span.blocks).xy);
}

@compute @workgroup_size(WG_SIZE)
fn verify_row(ids: WgIds, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = workgroup_setup(ids);
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let k = params.k;
    let n = params.n;
    let sb = params.stream_base + 4u * r;
    let key = vec2<u32>(streams[sb], streams[sb + 1u]);
    let offset = vec2<u32>(streams[sb + 2u], streams[sb + 3u]);
    // The acceptance walk is sequential and short (n drafts): invocation 0 does it.
    if (lid == 0u) {
        var i = 0u;
        var bad = 0u;
        for (; i < n; i++) {
            let d = position_verdict(r, i, key, offset);
            if (d == REJECTED) {
                break;
            }
            if (d == BAD_DRAFT) {
                bad = 1u;
                break;
            }
            out[params.out_base + r * (n + 1u) + i] = d;
        }
        verdict = vec2<u32>(i, bad);
        accepted[params.accepted_base + r] = i;
        for (var s = i + 1u; s <= n; s++) {
            out[params.out_base + r * (n + 1u) + s] = NO_INDEX;
        }
    }
    let v = workgroupUniformLoad(&verdict);
    let i = v.x;
    var best = EMPTY;
    if (v.y == 0u) {
        best = draw(lid, r, i, i < n, key, offset);
        if (lid == 0u) {
            empty_draw = select(0u, 1u, best.y == NO_INDEX && i < n);
        }
        // The residual is all zero (p_i <= q_i everywhere): draw from p_i instead.
        if (workgroupUniformLoad(&empty_draw) != 0u) {
            best = draw(lid, r, i, false, key, offset);
        }
    }
    if (lid == 0u) {
        // A bad law entry wins the draw (BAD_KEY) and emits nothing; a fallback draw after it
        // is never taken (best.y is a category, not NO_INDEX).
        out[params.out_base + r * (n + 1u) + i] = select(best.y, NO_INDEX, best.x == BAD_KEY);
    }
}

// ---------------------------------------------------------------------------------------------
// The split path: row r's draw spread over params.chunks workgroups, then a combine pass.

// Row r's region of scratch: 1 + 2 * chunks pairs from r * (1 + 2 * chunks): the verdict
// (stop position, bad flag) at 0, then chunk c's partial best of the drawn law at 1 + 2c and
// of the fallback (p_i while the residual is zero) at 2 + 2c.
fn region(r: u32) -> u32 {
    return r * (1u + 2u * params.chunks);
}

@compute @workgroup_size(WG_SIZE)
fn verify_partial(ids: WgIds, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = workgroup_setup(ids);
    let g = group_index(wid, nwg);
    let chunks = params.chunks;
    let r = g / chunks;
    if (r >= params.rows) {
        return;
    }
    let c = g % chunks;
    let n = params.n;
    let sb = params.stream_base + 4u * r;
    let key = vec2<u32>(streams[sb], streams[sb + 1u]);
    let offset = vec2<u32>(streams[sb + 2u], streams[sb + 3u]);
    // The acceptance walk, in parallel: each invocation finds the first of its positions that
    // stops the row, as 2 i + bad (< NO_INDEX: the host keeps n + 1 below 2^31); the lowest
    // over the workgroup is where the sequential walk stops.
    var stop = EMPTY;
    for (var i = lid; i < n && stop.y == NO_INDEX; i += WG_SIZE) {
        let d = position_verdict(r, i, key, offset);
        if (d == REJECTED || d == BAD_DRAFT) {
            stop = vec2<u32>(1u, 2u * i + select(0u, 1u, d == BAD_DRAFT));
        }
    }
    stop = reduce_best(lid, stop);
    if (lid == 0u) {
        verdict = select(vec2<u32>(stop.y >> 1u, stop.y & 1u), vec2<u32>(n, 0u),
                         stop.y == NO_INDEX);
    }
    let v = workgroupUniformLoad(&verdict);
    let i = v.x;
    // Chunk c: blocks [lo, hi) of the span, whole Philox blocks (a 64-bit pair straddling two
    // blocks belongs to the first, as on the one-workgroup path); none when the row stops at a
    // bad value.
    let span = draw_span(i, offset);
    let per_chunk = (span.blocks + chunks - 1u) / chunks;
    let lo = min(c * per_chunk, span.blocks);
    var hi = min(lo + per_chunk, span.blocks);
    if (v.y != 0u) {
        hi = lo;
    }
    let mine = scan(lid, r, i, i < n, i < n, key, span, lo, hi);
    let best = reduce_best(lid, mine.xy);
    // The fallback matters only if every chunk's best is EMPTY: reduced only then.
    if (lid == 0u) {
        empty_draw = select(0u, 1u, best.y == NO_INDEX && i < n);
    }
    var alt = EMPTY;
    if (workgroupUniformLoad(&empty_draw) != 0u) {
        alt = reduce_best(lid, mine.zw);
    }
    if (lid == 0u) {
        let base = region(r);
        scratch[base + 1u + 2u * c] = best;
        scratch[base + 2u + 2u * c] = alt;
        if (c == 0u) {
            scratch[base] = v;
        }
    }
}

@compute @workgroup_size(WG_SIZE)
fn verify_combine(ids: WgIds, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = workgroup_setup(ids);
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let n = params.n;
    let base = region(r);
    var best = EMPTY;
    var alt = EMPTY;
    for (var c = lid; c < params.chunks; c += WG_SIZE) {
        let b = scratch[base + 1u + 2u * c];
        let a = scratch[base + 2u + 2u * c];
        if (before(b, best)) {
            best = b;
        }
        if (before(a, alt)) {
            alt = a;
        }
    }
    best = reduce_best(lid, best);
    alt = reduce_best(lid, alt);
    // Written by chunk 0 of the row in the partial pass: i <= n.
    let v = scratch[base];
    let i = v.x;
    // An empty residual draw (i < n) takes the draw from p_i; a bonus draw (i = n) has no
    // fallback (alt is EMPTY), nor does a bad stop (both EMPTY: nothing was scanned).
    if (best.y == NO_INDEX) {
        best = alt;
    }
    var token = select(best.y, NO_INDEX, best.x == BAD_KEY);
    if (v.y != 0u) {
        token = NO_INDEX;
    }
    if (lid == 0u) {
        accepted[params.accepted_base + r] = i;
    }
    for (var s = lid; s <= n; s += WG_SIZE) {
        var t = NO_INDEX;
        if (s < i) {
            t = drafts[params.draft_base + r * n + s];
        } else if (s == i) {
            t = token;
        }
        out[params.out_base + r * (n + 1u) + s] = t;
    }
}
