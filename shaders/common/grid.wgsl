// The workgroup's linear index in a dispatch. The host (`grid` in src/gpu.rs) spreads more than
// 65535 workgroups over a 2-D grid, x fastest; kernels skip the few surplus groups themselves.
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
