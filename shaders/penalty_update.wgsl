// The device-side penalty state of token sampling, updated from the sampled tokens: row r's
// output count of its token goes up by one (saturating), so the next step's penalties
// (token_process.wgsl) see this step's token without a readback. Twin: the host's history
// (tokens::penalty_state_words counts it the same way).
//
// Bindings (group 0):
//   0: uniform UpdateParams
//   1: storage, read       tokens: array<u32>  rows tokens at token_base + r (NO_INDEX, or
//                          any token >= k, from a bad row: no update)
//   2: storage, read_write state: array<u32>   state_words per row at state_base + r *
//                          state_words: mask_words prompt-presence words, then k counts
//
// One invocation per row (rows spread over workgroups of WG_SIZE, 2-D grid past 65535 groups):
// each writes only its own row's count, so no two invocations touch one word. Indices: r <
// rows, token < k.
#import config
#import grid

#import params
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read_write> state: array<u32>;

@compute @workgroup_size(WG_SIZE)
fn update_counts(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = group_index(wid, nwg) * WG_SIZE + lid;
    if (r >= params.rows) {
        return;
    }
    let t = tokens[params.token_base + r];
    if (t >= params.k) {
        return;
    }
    let i = params.state_base + r * params.state_words + params.mask_words + t;
    let c = state[i];
    if (c != 0xffffffffu) {
        state[i] = c + 1u;
    }
}
