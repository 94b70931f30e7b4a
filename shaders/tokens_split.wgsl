// Token sampling with each row spread over `split` workgroups, for batches too small to fill the
// device: one dispatch per pass of token_passes.wgsl (the host records the pass sequence, each
// dispatch with its own parameters), then tokens_final.wgsl writes the outputs. Same semantics,
// counter scheme and results, bit for bit, as the one-workgroup kernel tokens.wgsl (whose
// contract states them): every aggregate is exact (token_core.wgsl), so cutting a row into parts
// changes nothing.
//
// Bindings (group 0):
//   0: uniform TokenParams  (step: this dispatch's pass; prev: the previous dispatch's, seq: its
//                           index in the sequence of nseq, split: workgroups per row)
//   1: storage, read       logits: array<u32>  as in tokens.wgsl
//   2: storage, read       rowp: array<u32>    as in tokens.wgsl
//   3: storage, read       proc: array<u32>    as in tokens.wgsl (processed rows)
//   4: storage, read_write state: array<atomic<u32>>  state_stride words per row at
//                          state_base + r * state_stride, zeroed by the host before the first
//                          dispatch:
//                            [0, 2 DEC_WORDS): the row's decisions, two slots: dispatch s reads
//                              slot (s - 1) % 2 and its workgroup 0 writes slot s % 2 (so no
//                              dispatch reads what it writes);
//                            then nseq regions of AGG_WORDS + 256 words: dispatch s's aggregates
//                              (agg, then hist), merged from its workgroups exactly (atomicMax,
//                              atomicOr, integer adds, fixed-point adds with carries);
//                            then 2 KEPT_CAP words: P_GATHER's kept entries (count in its agg);
//                            then split slots of SLOT_WORDS: each workgroup's best draw
//                              candidate (key, index), its logit's bits (view, input), then its
//                              top n (key, index) pairs.
//   5: storage, read_write aux: array<u32>     the law (OUT_LAW), as in tokens.wgsl
//
// Each dispatch: every workgroup of row r (group g = r * split + w) reads the row's decisions,
// takes the decisions after the previous pass from the merged aggregates (the same function the
// one-workgroup kernel calls, on the same exact values), then runs this pass over part w of the
// row and merges its aggregates into the row's region. Workgroup 0 keeps the decisions for the
// next dispatch. Indices: g < rows * split so r < rows; regions and slots lie inside the row's
// state_stride words (seq < nseq, w < split, slot words < SLOT_WORDS); kept slots < KEPT_CAP.
#import config
#import philox
#import gumbel
#import logits
#import grid
#import reduce_workgroup

#import params
@group(0) @binding(1) var<storage, read> logits: array<u32>;
@group(0) @binding(2) var<storage, read> rowp: array<u32>;
@group(0) @binding(3) var<storage, read> proc: array<u32>;
@group(0) @binding(4) var<storage, read_write> state: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> aux: array<u32>;

#import token_core
#import token_passes
#import token_merge

var<private> row_state: u32;

fn region(seq: u32) -> u32 {
    return state_region(row_state, seq);
}

fn gather_base() -> u32 {
    return state_gather(row_state);
}

fn slot_base(w: u32) -> u32 {
    return state_slot(row_state, w);
}

// P_GATHER's kept entries go to the row's state (the count in this dispatch's region).
fn gather_put(key: u32, j: u32) {
    let slot = atomicAdd(&state[region(params.seq) + A_KEPT], 1u);
    // Always below KEPT_CAP (a top-k of at most that many); checked so no write can stray.
    if (slot < KEPT_CAP) {
        atomicStore(&state[gather_base() + 2u * slot], key);
        atomicStore(&state[gather_base() + 2u * slot + 1u], j);
    }
}

fn draw_slot_word(w: u32, i: u32) -> u32 {
    return atomicLoad(&state[slot_base(w) + i]);
}

// Adds the global fixed-point triple at i (as fx_add_agg does in workgroup memory).
fn fx_add_state(i: u32, v: vec3<u32>) {
    if (fx_is_zero(v)) {
        return;
    }
    let old = atomicAdd(&state[i], v.x);
    let c0 = select(0u, 1u, old + v.x < old);
    let add = v.y + c0;
    let old1 = atomicAdd(&state[i + 1u], add);
    let c1 = select(0u, 1u, old1 + add < old1) + select(0u, 1u, add < v.y);
    let hi = v.z + c1;
    if (hi != 0u) {
        atomicAdd(&state[i + 2u], hi);
    }
}

@compute @workgroup_size(WG_SIZE)
fn tokens_split(ids: WgIds, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = workgroup_setup(ids);
    let g = group_index(wid, nwg);
    if (g >= params.rows * params.split) {
        return;
    }
    let r = g / params.split;
    let w = g % params.split;
    row_state = params.state_base + r * params.state_stride;
    if (params.seq == 0u) {
        if (lid == 0u) {
            dec_init(r);
        }
    } else if (lid < DEC_WORDS) {
        dec[lid] = atomicLoad(&state[row_state + ((params.seq - 1u) & 1u) * DEC_WORDS + lid]);
    }
    var d = workgroupUniformLoad(&dec);
    list_clear();
    if (params.seq > 0u && applies(params.prev, &d)) {
        // The previous pass's aggregates, merged over the row's workgroups.
        let prev = region(params.seq - 1u);
        if (lid < AGG_WORDS) {
            atomicStore(&agg[lid], atomicLoad(&state[prev + lid]));
        }
        atomicStore(&hist[lid], atomicLoad(&state[prev + AGG_WORDS + lid]));
        workgroupBarrier();
        if (params.prev == P_GATHER) {
            let n = min(atomicLoad(&agg[A_KEPT]), KEPT_CAP);
            for (var i = lid; i < n; i += WG_SIZE) {
                kept[i] = vec2<u32>(atomicLoad(&state[gather_base() + 2u * i]),
                                    atomicLoad(&state[gather_base() + 2u * i + 1u]));
            }
        }
        workgroupBarrier();
        if (params.prev == P_DRAW) {
            merge_draw(lid, &d);
        } else {
            finish(lid, r, params.prev, &d, EMPTY);
        }
        d = workgroupUniformLoad(&dec);
    }
    if (w == 0u && lid < DEC_WORDS) {
        atomicStore(&state[row_state + (params.seq & 1u) * DEC_WORDS + lid], d[lid]);
    }
    if (!applies(params.step, &d)) {
        return;
    }
    agg_reset(lid);
    workgroupBarrier();
    let best = pass_body(lid, r, params.step, &d, w, params.split);
    workgroupBarrier();
    // This workgroup's aggregates into the row's region: maxima, flags and counts by their own
    // atomics, fixed-point triples with carries (one invocation each), the histogram's bins.
    // Zero words are skipped (every merge leaves them unchanged).
    let here = region(params.seq);
    let word = select(0u, atomicLoad(&agg[min(lid, AGG_WORDS - 1u)]), lid < AGG_WORDS);
    if (word != 0u && (lid == A_MAX || lid == A_RAW || lid == A_NMIN)) {
        atomicMax(&state[here + lid], word);
    } else if (word != 0u && lid == A_FLAGS) {
        atomicOr(&state[here + lid], word);
    } else if (word != 0u && (lid == A_CNT || lid == A_RANK)) {
        atomicAdd(&state[here + lid], word);
    } else if (lid >= 32u && lid < 32u + 18u) {
        // Triple i: A_FXA, A_FXB, then the 16 top-p bins.
        let i = A_FXA + 3u * (lid - 32u);
        fx_add_state(here + i, agg_fx(i));
    }
    let h = atomicLoad(&hist[lid]);
    if (h != 0u) {
        atomicAdd(&state[here + AGG_WORDS + lid], h);
    }
    if (params.step == P_DRAW) {
        // The workgroup's best and its top n (n rounds of the best head over the lists).
        let slot = slot_base(w);
        if (lid == 0u) {
            atomicStore(&state[slot], best.x);
            atomicStore(&state[slot + 1u], best.y);
            if (best.y != NO_INDEX) {
                atomicStore(&state[slot + 2u], row_logit_bits(r, best.y));
                atomicStore(&state[slot + 3u], raw_logit_bits(r, best.y));
            }
        }
        let n = n_top();
        var head = 0u;
        for (var i = 0u; i < n; i++) {
            var mine = EMPTY;
            if (head < n) {
                mine = list[head];
            }
            let top_i = reduce_best(lid, mine);
            if (top_i.y != NO_INDEX && mine.y == top_i.y) {
                head++;
            }
            if (lid == 0u) {
                atomicStore(&state[slot + 4u + 2u * i], top_i.x);
                atomicStore(&state[slot + 5u + 2u * i], top_i.y);
            }
        }
    }
}
