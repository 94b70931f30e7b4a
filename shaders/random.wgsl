// Random fills: Philox words, uniforms in (0, 1) and Gumbel noise, element n = stream word n.
//
// Bindings (group 0):
//   0: uniform RandomParams (generated from the Rust struct: #import params)
//   1: storage, read_write, array<u32> out: the words, or the f32 results' bits; element n of
//      this dispatch is out[out_base + n] (the binding starts at an aligned offset below it)
// Each invocation computes one Philox block (4 words) and writes the ones that fall inside
// [0, len): invocation t covers block block0 + t, i.e. elements 4t - phase .. 4t - phase + 3.
// Workgroups are linearised over a 2-D grid (x fastest) to pass 65535 per dimension.
// The `transform_*` entry points read words already in `out` and replace them in place (tests
// drive the word -> number maps with chosen words this way).
// Safe without wgpu's runtime checks (the default, GpuOptions::runtime_checks): an invocation
// writes out[out_base + n] only for n < params.len, and the window bound holds out_base + len
// elements; the lane loop runs 4 times; the only divisor is the constant 4; no workgroup memory.
#import config
#import philox
#import gumbel
#import grid

#import params
@group(0) @binding(1) var<storage, read_write> out: array<u32>;

fn invocation_index(lid: u32, wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return group_index(wid, nwg) * WG_SIZE + lid;
}

// mode 0: words, 1: uniform bits, 2: Gumbel bits.
fn fill(t: u32, mode: u32) {
    let words = philox_block(vec2<u32>(params.key_lo, params.key_hi),
                             vec2<u32>(params.block0_lo, params.block0_hi), t);
    for (var j = 0u; j < 4u; j++) {
        let s = 4u * t + j;
        if (s < params.phase) {
            continue;
        }
        let n = s - params.phase;
        if (n >= params.len) {
            break;
        }
        let w = words[j];
        var v = w;
        if (mode == 1u) {
            v = bitcast<u32>(uniform_from_word(w));
        } else if (mode == 2u) {
            v = bitcast<u32>(gumbel_from_word(w));
        }
        out[params.out_base + n] = v;
    }
}

@compute @workgroup_size(WG_SIZE)
fn fill_words(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    fill(invocation_index(lid, wid, nwg), 0u);
}

@compute @workgroup_size(WG_SIZE)
fn fill_uniform(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    fill(invocation_index(lid, wid, nwg), 1u);
}

@compute @workgroup_size(WG_SIZE)
fn fill_gumbel(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    fill(invocation_index(lid, wid, nwg), 2u);
}

@compute @workgroup_size(WG_SIZE)
fn transform_uniform(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = invocation_index(lid, wid, nwg);
    if (i < params.len) {
        let j = params.out_base + i;
        out[j] = bitcast<u32>(uniform_from_word(out[j]));
    }
}

@compute @workgroup_size(WG_SIZE)
fn transform_gumbel(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = invocation_index(lid, wid, nwg);
    if (i < params.len) {
        let j = params.out_base + i;
        out[j] = bitcast<u32>(gumbel_from_word(out[j]));
    }
}
