// The split path's last step (after tokens_split.wgsl's passes): one workgroup per row takes the
// decisions after the last pass (the draw's, or the post pass's rank), merges the top-n lists of the draw's workgroups and writes the row's
// outputs, as the one-workgroup kernel tokens.wgsl does at its end (token_outputs.wgsl).
//
// Bindings (group 0):
//   0: uniform TokenParams  (as for the split passes: seq = nseq, prev = the last pass, P_DRAW
//                           or P_POST)
//   1: storage, read       state: array<u32>    the split passes' state (tokens_split.wgsl)
//   2: storage, read_write tokens: array<u32>   as in tokens.wgsl
//   3: storage, read_write logprobs: array<u32> as in tokens.wgsl
//   4: storage, read_write top: array<u32>      as in tokens.wgsl
//   5: storage, read_write status: array<u32>   as in tokens.wgsl
//   6: storage, read_write aux: array<u32>      ranks (OUT_RANK), as in tokens.wgsl
// Indices: r < rows; the row's state as in tokens_split.wgsl (slots w < split, entries < n_top).
#import config
#import grid
#import reduce_workgroup

#import params
@group(0) @binding(1) var<storage, read> state: array<u32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(3) var<storage, read_write> logprobs: array<u32>;
@group(0) @binding(4) var<storage, read_write> top: array<u32>;
@group(0) @binding(5) var<storage, read_write> status: array<u32>;
@group(0) @binding(6) var<storage, read_write> aux: array<u32>;

#import token_core
#import token_outputs
#import token_merge

var<private> row_state: u32;

fn draw_slot_word(w: u32, i: u32) -> u32 {
    return state[state_slot(row_state, w) + i];
}

@compute @workgroup_size(WG_SIZE)
fn tokens_final(ids: WgIds, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let lid = workgroup_setup(ids);
    let r = group_index(wid, nwg);
    if (r >= params.rows) {
        return;
    }
    let row = params.state_base + r * params.state_stride;
    row_state = row;
    if (lid < DEC_WORDS) {
        dec[lid] = state[row + ((params.seq - 1u) & 1u) * DEC_WORDS + lid];
    }
    let last = state_region(row, params.seq - 1u);
    if (lid < AGG_WORDS) {
        atomicStore(&agg[lid], state[last + lid]);
    }
    var d = workgroupUniformLoad(&dec);
    if (params.prev == P_POST && applies(P_POST, &d)) {
        if (lid == 0u) {
            finish_post(&d);
        }
        d = workgroupUniformLoad(&dec);
    } else if (params.prev == P_DRAW && applies(P_DRAW, &d)) {
        merge_draw(lid, &d);
        d = workgroupUniformLoad(&dec);
    }
    // The draw's workgroups' lists, merged into each invocation's list (exact: any order).
    list_clear();
    let n = n_top();
    for (var w = lid; w < params.split; w += WG_SIZE) {
        let s = state_slot(row, w);
        for (var i = 0u; i < n; i++) {
            let c = vec2<u32>(state[s + 4u + 2u * i], state[s + 5u + 2u * i]);
            if (c.y != NO_INDEX) {
                list_insert(c, n);
            }
        }
    }
    write_outputs(lid, r, &d);
}
