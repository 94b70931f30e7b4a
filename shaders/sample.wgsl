// Gumbel-max sampling and Gumbel-top-k: per row, the indices of the `top` largest values of
// z_j = l_j / t_r + g_j (t_r = 1 without temperatures), in decreasing order of z.
//
// Bindings (group 0):
//   0: uniform SampleParams (generated from the Rust struct: #import params)
//   1: storage, read       logits: array<u32>  f32 bits, or f16/bf16 packed two per word
//                          (logits.wgsl); element n = r * k + j of this dispatch is
//                          logit_bits(logit_base + n + r * row_pad) (rows row_pad elements
//                          apart beyond k: LogitsView's stride)
//   2: storage, read       temps: array<f32>   per-row temperature t_r = temps[temp_base + r]
//                          (read only when per_row_tau != 0, a dummy buffer otherwise; then
//                          t_r = params.tau, and x / 1.0 is exact, so tau 1 is no temperature);
//                          a row whose t_r is not finite, positive and normal samples NO_INDEX
//   3: storage, read_write out: array<u32>     out[out_base + r * top + i], i < top
//   4: storage, read_write scratch: array<vec2<u32>> (key, index) pairs: for top = 1 the split
//                          path's partials at r * chunks + c (a dummy buffer on the other
//                          paths); for top > 1 the candidate lists (see "Gumbel-top-k" below)
//
// Counter scheme: flat element n = r * k + j of this dispatch uses stream word n (noise64 = 0,
// Noise::Bits32), or words 2n (high half) and 2n + 1 (low half) (noise64 = 1, Noise::Bits64);
// word s is lane (phase + s) % 4 of Philox block block0 + (phase + s) / 4 (philox.wgsl). Every
// path walks a row's words in whole blocks: word s belongs to block (phase + s) / 4, and an
// element to the block of its first word (block_candidates), so one philox call yields the
// noise of 4 consecutive elements (2 with noise64; with noise64 and an odd phase, the last
// element's low word is the next block's first, one more philox call).
//
// Order: a candidate is (key, index) with key the order-preserving u32 image of z's bits; larger
// key first, and on equal keys the lower index first, so every path (and any reduction order)
// picks the same winner. No inf/NaN arithmetic: special logits are classified by bit pattern.
//   * -inf logit (masked) and NaN logit: no candidate (key 0), never selected;
//   * +inf logit: key of +inf, above every finite z; among several, the lowest index first;
//   * a row with fewer than `top` candidates gets NO_INDEX (0xffffffff) in the remaining slots
//     (so an all-masked row samples NO_INDEX).
// Every path reads each element once (one philox call per block of 4 words).
//
// Entry points for top = 1 (Gumbel-max: one arg-max per row, one pass; the host uses them for
// top = 1 only and out/scratch hold one entry per row/chunk):
//   sample_thread:    one row per invocation (small k), WG_SIZE rows per workgroup.
//   sample_group:     `seg` invocations per row (a power of two up to WG_SIZE: a whole
//                     workgroup, or WG_SIZE / seg rows per workgroup); tree reduction of
//                     (key, index) per segment in workgroup memory.
//   sample_partial:   split rows, pass 1: workgroup (r, c) takes blocks of chunk c of row r,
//                     writes its top list to scratch.
//   sample_combine:   split rows, pass 2: one workgroup per row merges the chunks' lists.
// and for top > 1 (Gumbel-top-k, below): topk_thread, topk_group, topk_partial, topk_combine, on
// the same paths.
// Workgroups are linearised over a 2-D grid (x fastest); surplus groups return.
#import config
#import philox
#import gumbel
#import logits
#import grid
#import team_reduce

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> temps: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<storage, read_write> scratch: array<vec2<u32>>;

const NO_INDEX: u32 = 0xffffffffu;
// Key of a +inf logit: the image of +inf's bits, above the image of every finite f32.
const POS_INF_KEY: u32 = 0xff800000u;
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

// The key of element n (dispatch-local flat index) of row r, given its noise words (lo unused
// without noise64).
fn candidate_key(r: u32, n: u32, hi: u32, lo: u32) -> u32 {
    let bits = logit_bits(params.logit_base + n + r * params.row_pad, params.format);
    if (is_masked_bits(bits) || is_nan_bits(bits)) {
        return 0u;
    }
    if (is_pos_inf_bits(bits)) {
        return POS_INF_KEY;
    }
    var x = bitcast<f32>(bits);
    if (params.per_row_tau != 0u) {
        // A temperature that is not finite, positive and normal (the host checks only a scalar
        // one) leaves the row without candidates: NO_INDEX in every slot.
        let t = temps[params.temp_base + r];
        let tb = bitcast<u32>(t);
        if (tb < 0x00800000u || tb >= 0x7f800000u) {
            return 0u;
        }
        x = x / t;
    } else {
        x = x / params.tau;
    }
    var g = 0.0;
    if (params.noise64 != 0u) {
        g = gumbel_from_words64(hi, lo);
    } else {
        g = gumbel_from_word(hi);
    }
    return key_of(bitcast<u32>(x + g));
}

// The candidate (key, index in the row) of the element of row r whose first word is word s - phase
// of this dispatch (noise words hi, lo), or EMPTY: no element of row r starts there (another
// row's, the low word of a 64-bit pair, or the block's padding), or its logit is no candidate.
fn candidate(r: u32, s: u32, hi: u32, lo: u32) -> vec2<u32> {
    let row0 = r * params.k;
    // Words per element: 1, or 2 with noise64.
    let first = params.phase + (row0 << params.noise64);
    if (s < first) {
        return EMPTY;
    }
    let rel = s - params.phase;
    if ((rel & params.noise64) != 0u) {
        return EMPTY;
    }
    let n = rel >> params.noise64;
    if (n >= row0 + params.k) {
        return EMPTY;
    }
    return vec2<u32>(candidate_key(r, n, hi, lo), n - row0);
}

// The candidates of row r in dispatch-local block b (one philox call, two with noise64 and an
// odd phase), in word order; EMPTY where none starts.
fn block_candidates(r: u32, b: u32) -> array<vec2<u32>, 4> {
    let key = vec2<u32>(params.key_lo, params.key_hi);
    let block0 = vec2<u32>(params.block0_lo, params.block0_hi);
    let w = philox_block(key, block0, b);
    var next = 0u;
    if (params.noise64 != 0u && (params.phase & 1u) != 0u) {
        next = philox_block(key, block0, b + 1u).x;
    }
    return array<vec2<u32>, 4>(candidate(r, 4u * b, w.x, w.y), candidate(r, 4u * b + 1u, w.y, w.z),
                               candidate(r, 4u * b + 2u, w.z, w.w),
                               candidate(r, 4u * b + 3u, w.w, next));
}

// `best`, or candidate c if it is one (key above 0: masked and NaN logits have key 0, with their
// index) and comes before `best`.
fn consider(c: vec2<u32>, best: vec2<u32>) -> vec2<u32> {
    return select(best, c, c.x != 0u && before(c, best));
}

// Updates `best` with the candidates of row r in dispatch-local block b. The four lanes are
// written out rather than looped: llvmpipe stops every loop of an invocation once their
// iterations add up to 65535.
fn scan_block(r: u32, b: u32, best_in: vec2<u32>) -> vec2<u32> {
    let c = block_candidates(r, b);
    var best = consider(c[0], best_in);
    best = consider(c[1], best);
    best = consider(c[2], best);
    return consider(c[3], best);
}

// First and one-past-last dispatch-local block of row r's words.
fn row_blocks(r: u32) -> vec2<u32> {
    let first = params.phase + ((r * params.k) << params.noise64);
    let last = first + (params.k << params.noise64) - 1u;
    return vec2<u32>(first / 4u, last / 4u + 1u);
}

@compute @workgroup_size(WG_SIZE)
fn sample_thread(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    let blocks = row_blocks(r);
    var best = EMPTY;
    for (var b = blocks.x; b < blocks.y; b++) {
        best = scan_block(r, b, best);
    }
    out[params.out_base + r] = best.y;
}

// The team reduction (team_reduce.wgsl) of candidates: merge(a, b) is the one that comes first,
// a on a tie (only EMPTY ties with EMPTY: candidates' indices differ), so every reduction order
// and subgroup size picks the same winner.
alias State = vec2<u32>;
var<workgroup> shared_states: array<State, WG_SIZE>;
fn merge(a: State, b: State) -> State {
    return select(a, b, before(b, a));
}
const STATE_WORDS: u32 = 2u;
fn state_to_words(s: State) -> array<u32, STATE_WORDS> {
    return array<u32, STATE_WORDS>(s.x, s.y);
}
fn state_from_words(w: array<u32, STATE_WORDS>) -> State {
    return State(w[0], w[1]);
}

// The best of `mine` over each segment of `seg` consecutive invocations (seg a power of two
// dividing WG_SIZE; called in uniform control flow); every invocation gets its segment's best.
fn reduce_segment(lid: u32, seg: u32, mine: vec2<u32>) -> vec2<u32> {
    return reduce_team(lid, seg, mine);
}

@compute @workgroup_size(WG_SIZE)
fn sample_group(ids: LaneIds, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
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
    var best = EMPTY;
    for (var b = blocks.x + lane; b < blocks.y; b += seg) {
        best = scan_block(r, b, best);
    }
    best = reduce_segment(lid, seg, best);
    if (valid && lane == 0u) {
        out[params.out_base + r] = best.y;
    }
}

@compute @workgroup_size(WG_SIZE)
fn sample_partial(ids: LaneIds, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
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
    var best = EMPTY;
    for (var b = lo + lid; b < hi; b += WG_SIZE) {
        best = scan_block(r, b, best);
    }
    best = reduce_segment(lid, WG_SIZE, best);
    if (lid == 0u) {
        scratch[g] = best;
    }
}

@compute @workgroup_size(WG_SIZE)
fn sample_combine(ids: LaneIds, @builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = lane_setup(ids);
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let base = r * params.chunks;
    var best = EMPTY;
    for (var e = lid; e < params.chunks; e += WG_SIZE) {
        best = consider(scratch[base + e], best);
    }
    best = reduce_segment(lid, WG_SIZE, best);
    if (lid == 0u) {
        out[params.out_base + r] = best.y;
    }
}

// ---------------------------------------------------------------------------------------------
// Gumbel-top-k for top > 1: one read of each row.
//
// A team (one invocation, a segment of `seg`, or a whole workgroup, on a row or on one chunk of
// a split row) keeps the best `top` candidates it has seen as a list L in scratch: sorted (best
// first) and padded with EMPTY, which comes after every candidate. It reads its blocks once, in
// rounds of one Philox block (4 elements) per invocation; an element enters the team's tile in
// workgroup memory only if it comes before L[top - 1], the threshold. When the fullest tile of
// the workgroup could overflow in the next round, and after the last round, every team sorts
// its tile (a bitonic network in workgroup memory) and merges it into L by rank: an entry's new
// place is its place in its own list plus the number of entries of the other list that come
// before it (a binary search). The order is total (indices differ), so the places are distinct;
// those past `top` are dropped. L alternates between the two halves of the team's region.
//
// Scratch (binding 4) on these paths, in (key, index) pairs:
//   topk_thread:  row r's list at r * top (one half: the insertion is sequential);
//   topk_group:   row r's two halves at r * 2 * top;
//   topk_partial: chunk c of row r at (r * chunks + c) * 2 * top, its final list in the first
//                 half; topk_combine merges the chunks' lists into the region of chunk 0.
//
// Indices stay in range by construction: a team's tile count is at most 2 * seg before a round
// (else it merged) and a round adds at most 4 * seg, so slots stay below TEAM_SLOTS * seg; the
// sort and the binary searches touch tile[tbase .. tbase + n) only; list entries stay inside
// their region (i < top, places checked < top); teams past the last row touch no scratch.
// Loops are bounded by top, the tile size, the block count and log2 of these (the host's
// `loop_iterations` counts them at their worst for llvmpipe). Workgroup memory is written
// (appends, counters reset by their owner) before a barrier and read after it.

// Tile slots per invocation of a team: a team of `seg` owns 6 * seg slots; it merges once a
// round (up to 4 * seg candidates) could overflow them, so at most every round, typically
// rarely (few elements beat the threshold once L is full).
const TEAM_SLOTS: u32 = 6u;
var<workgroup> tile: array<vec2<u32>, TEAM_SLOTS * WG_SIZE>;   // 12 KiB
var<workgroup> tile_count: array<atomic<u32>, WG_SIZE>;        // per team: 1 KiB
var<workgroup> most: atomic<u32>;
var<workgroup> shared_word: u32;

// Entries of the sorted tile[base .. base + n) that come before x (a prefix).
fn tile_rank(base: u32, n: u32, x: vec2<u32>) -> u32 {
    var lo = 0u;
    var hi = n;
    while (lo < hi) {
        let mid = (lo + hi) >> 1u;
        if (before(tile[base + mid], x)) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// Entries of the sorted scratch[base .. base + n) that come before x (a prefix).
fn list_rank(base: u32, n: u32, x: vec2<u32>) -> u32 {
    var lo = 0u;
    var hi = n;
    while (lo < hi) {
        let mid = (lo + hi) >> 1u;
        if (before(scratch[base + mid], x)) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// Offers candidate c to team `team`'s tile if it comes before thr.
fn offer(c: vec2<u32>, thr: vec2<u32>, team: u32, tbase: u32) {
    if (c.x != 0u && before(c, thr)) {
        // At most 4 * seg offers a round, into a tile holding at most 2 * seg before it.
        let slot = atomicAdd(&tile_count[team], 1u);
        tile[tbase + slot] = c;
    }
}

// tile[tbase + i] and tile[tbase + j] (i < j) in order; an entry at j >= n counts as the worst.
fn order_pair(tbase: u32, n: u32, i: u32, j: u32) {
    if (j < n) {
        let a = tile[tbase + i];
        let b = tile[tbase + j];
        if (before(b, a)) {
            tile[tbase + i] = b;
            tile[tbase + j] = a;
        }
    }
}

// Sorts every team's tile[tbase .. tbase + n), best first, with a bitonic network of width p
// (a power of two >= every team's n, uniform) in which every comparator puts the better entry
// first: each merge stage begins by pairing an entry with its mirror in the block, so entries
// at n and past (the worst, conceptually) never move and need not exist. Uniform control flow.
fn sort_tiles(lane: u32, seg: u32, tbase: u32, n: u32, p: u32) {
    for (var size = 2u; size <= p; size <<= 1u) {
        let half_size = size >> 1u;
        for (var e = lane; e < p / 2u; e += seg) {
            let off = e & (half_size - 1u);
            let start = (e - off) << 1u;
            order_pair(tbase, n, start + off, start + size - 1u - off);
        }
        workgroupBarrier();
        for (var stride = half_size >> 1u; stride > 0u; stride >>= 1u) {
            for (var e = lane; e < p / 2u; e += seg) {
                let off = e & (stride - 1u);
                let i = ((e - off) << 1u) + off;
                order_pair(tbase, n, i, i + stride);
            }
            workgroupBarrier();
        }
    }
}

// The team's work (see above): team `team` of `seg` invocations (`lane` its index, `lid` the
// workgroup's) reads dispatch-local blocks [lo, hi) of row r in `rounds` rounds (uniform), its
// list pair at scratch[region * 2 * top ..]. Teams with `valid` false (past the last row) own
// no scratch and take part only in the barriers. Returns the half holding the final list.
// Called in uniform control flow.
fn team_top(lid: u32, lane: u32, team: u32, seg: u32, valid: bool, r: u32, lo: u32, hi: u32,
            rounds: u32, region: u32) -> u32 {
    let top = params.top;
    let lbase = region * 2u * top;
    let cap = TEAM_SLOTS * seg;
    let tbase = team * cap;
    if (valid) {
        for (var i = lane; i < top; i += seg) {
            scratch[lbase + i] = EMPTY;
        }
    }
    if (lane == 0u) {
        atomicStore(&tile_count[team], 0u);
    }
    if (lid == 0u) {
        atomicStore(&most, 0u);
    }
    storageBarrier();
    workgroupBarrier();
    var half = 0u;
    var thr = EMPTY;
    // Round `rounds` reads nothing: it makes the last merge.
    for (var round = 0u; round <= rounds; round++) {
        let b = lo + round * seg + lane;
        if (valid && round < rounds && b < hi) {
            let c = block_candidates(r, b);
            offer(c[0], thr, team, tbase);
            offer(c[1], thr, team, tbase);
            offer(c[2], thr, team, tbase);
            offer(c[3], thr, team, tbase);
        }
        workgroupBarrier();
        let n = atomicLoad(&tile_count[team]);
        if (lane == 0u) {
            atomicMax(&most, n);
        }
        workgroupBarrier();
        if (lid == 0u) {
            shared_word = atomicLoad(&most);
            atomicStore(&most, 0u);
        }
        let m = workgroupUniformLoad(&shared_word);
        // Merge once the next round could overflow a tile, and at the end.
        if (m > 0u && (round == rounds || m + 4u * seg > cap)) {
            // Everyone has read the counts; they restart for the next round.
            if (lane == 0u) {
                atomicStore(&tile_count[team], 0u);
            }
            var p = 1u;
            if (m > 1u) {
                p = 1u << (32u - countLeadingZeros(m - 1u));
            }
            sort_tiles(lane, seg, tbase, n, p);
            if (valid) {
                let src = lbase + half * top;
                let dst = lbase + (half ^ 1u) * top;
                for (var i = lane; i < top; i += seg) {
                    let l = scratch[src + i];
                    var rank = n;
                    if (l.x != 0u) {
                        rank = tile_rank(tbase, n, l);
                    }
                    if (i + rank < top) {
                        scratch[dst + i + rank] = l;
                    }
                }
                for (var j = lane; j < n; j += seg) {
                    let t = tile[tbase + j];
                    let place = j + list_rank(src, top, t);
                    if (place < top) {
                        scratch[dst + place] = t;
                    }
                }
            }
            // The lists' writes before anyone reads them; the tiles' reads and the counters'
            // reset before the next round's appends (the sort has no barrier when m = 1).
            storageBarrier();
            workgroupBarrier();
            half ^= 1u;
            if (valid) {
                thr = scratch[lbase + half * top + top - 1u];
            }
        }
    }
    return half;
}

@compute @workgroup_size(WG_SIZE)
fn topk_group(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let seg = params.seg;
    let first_row = group_index(wid, nwg) * (WG_SIZE / seg);
    if (first_row >= params.rows) {
        return;
    }
    let lane = lid & (seg - 1u);
    let team = lid / seg;
    let r = first_row + team;
    let valid = r < params.rows;
    var blocks = vec2<u32>(0u, 0u);
    if (valid) {
        blocks = row_blocks(r);
    }
    // A row of k elements (k << noise64 words) spans at most (k << noise64) / 4 + 2 blocks.
    let rounds = (((params.k << params.noise64) / 4u) + 2u + seg - 1u) / seg;
    let half = team_top(lid, lane, team, seg, valid, r, blocks.x, blocks.y, rounds, r);
    if (valid) {
        let top = params.top;
        let src = r * 2u * top + half * top;
        for (var i = lane; i < top; i += seg) {
            out[params.out_base + r * top + i] = scratch[src + i].y;
        }
    }
}

@compute @workgroup_size(WG_SIZE)
fn topk_partial(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
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
    let rounds = (per_chunk + WG_SIZE - 1u) / WG_SIZE;
    let half = team_top(lid, lid, 0u, WG_SIZE, true, r, lo, hi, rounds, g);
    // The combine pass reads each chunk's list from the first half.
    if (half == 1u) {
        let top = params.top;
        for (var i = lid; i < top; i += WG_SIZE) {
            scratch[g * 2u * top + i] = scratch[g * 2u * top + top + i];
        }
    }
}

@compute @workgroup_size(WG_SIZE)
fn topk_combine(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let top = params.top;
    let chunks = params.chunks;
    let region = r * chunks * 2u * top;
    // A merge tree: at the level of stride s, the list of chunk c (a multiple of 2s) and that of
    // chunk c + s (if any) merge into the other half of chunk c's region, so after the level
    // of stride s every list lies in half `level & 1` where it was, and the next level's in
    // the other one. Entry e of pair p: e < top is the first list's entry e, else the second's.
    var h = 0u;
    for (var s = 1u; s < chunks; s <<= 1u) {
        let pairs = (chunks + 2u * s - 1u) / (2u * s);
        for (var w = lid; w < pairs * 2u * top; w += WG_SIZE) {
            let c = (w / (2u * top)) * 2u * s;
            let e = w % (2u * top);
            let a = region + c * 2u * top + h * top;
            let dst = region + c * 2u * top + (h ^ 1u) * top;
            var b = a;
            var m = 0u;
            if (c + s < chunks) {
                b = region + (c + s) * 2u * top + h * top;
                m = top;
            }
            if (e < top) {
                // With no partner (m = 0) this copies the list.
                let x = scratch[a + e];
                let place = e + list_rank(b, m, x);
                if (place < top) {
                    scratch[dst + place] = x;
                }
            } else if (e - top < m) {
                // EMPTY entries of the second list land where the first list's EMPTY entries
                // already go (every slot from the candidates of both lists on).
                let x = scratch[b + e - top];
                let place = e - top + list_rank(a, top, x);
                if (x.x != 0u && place < top) {
                    scratch[dst + place] = x;
                }
            }
        }
        storageBarrier();
        h ^= 1u;
    }
    for (var i = lid; i < top; i += WG_SIZE) {
        out[params.out_base + r * top + i] = scratch[region + h * top + i].y;
    }
}

// Row r's list at scratch[r * top ..]: `list_n` entries, sorted; `list_thr` is its last entry
// once it holds `top`, EMPTY before (every candidate comes before EMPTY).
var<private> list_n: u32;
var<private> list_thr: vec2<u32>;

// Inserts candidate c into row r's list if it comes before the threshold: at most `top` loop
// iterations.
fn insert(r: u32, c: vec2<u32>) {
    if (c.x == 0u || !before(c, list_thr)) {
        return;
    }
    let top = params.top;
    let base = r * top;
    // A full list drops its last entry.
    var j = min(list_n, top - 1u);
    list_n = min(list_n + 1u, top);
    loop {
        if (j == 0u) {
            break;
        }
        let p = scratch[base + j - 1u];
        if (!before(c, p)) {
            break;
        }
        scratch[base + j] = p;
        j -= 1u;
    }
    scratch[base + j] = c;
    if (list_n == top) {
        list_thr = scratch[base + top - 1u];
    }
}

@compute @workgroup_size(WG_SIZE)
fn topk_thread(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    list_n = 0u;
    list_thr = EMPTY;
    let blocks = row_blocks(r);
    for (var b = blocks.x; b < blocks.y; b++) {
        let c = block_candidates(r, b);
        insert(r, c[0]);
        insert(r, c[1]);
        insert(r, c[2]);
        insert(r, c[3]);
    }
    let top = params.top;
    for (var i = 0u; i < top; i++) {
        var idx = NO_INDEX;
        if (i < list_n) {
            idx = scratch[r * top + i].y;
        }
        out[params.out_base + r * top + i] = idx;
    }
}
