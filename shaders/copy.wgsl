// Device-to-device copy, the roofline the memory-bound kernels are judged against.
//
// Bindings (group 0):
//   0: uniform CopyParams { len4: number of vec4<u32> to copy }
//   1: storage, read        array<vec4<u32>> src
//   2: storage, read_write  array<vec4<u32>> dst
// Grid-stride loop over a 2-D grid of workgroups (x fastest).
#import config
#import grid

struct CopyParams {
    len4: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG_SIZE)
fn copy(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let threads = nwg.x * nwg.y * WG_SIZE;
    var i = group_index(wid, nwg) * WG_SIZE + lid;
    for (; i < params.len4; i += threads) {
        dst[i] = src[i];
    }
}
