// Device-to-device copy, the roofline the memory-bound kernels are judged against. Part of the
// bench, not the library: it is built with plain wgpu (examples/bench/roofline.rs).
//
// Bindings (group 0):
//   0: storage, read        array<vec4<u32>> src
//   1: storage, read_write  array<vec4<u32>> dst
// Grid-stride loop over a 2-D grid of workgroups (x fastest); arrayLength bounds the loop.
const WG_SIZE: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(WG_SIZE)
fn copy(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let threads = nwg.x * nwg.y * WG_SIZE;
    let len4 = min(arrayLength(&src), arrayLength(&dst));
    var i = (wid.x + wid.y * nwg.x) * WG_SIZE + lid;
    for (; i < len4; i += threads) {
        dst[i] = src[i];
    }
}
