// The workgroup-memory trees of reduce_sum4 and reduce_lse (reduce_workgroup.wgsl): their path
// without subgroups and the fallback of their subgroup twins. Needs: config (WG_SIZE).
// All invocations must call them, in uniform control flow (barriers); every invocation gets the
// result. Indices: lid < WG_SIZE and lid + s < 2 s <= WG_SIZE; red_f[lid] is written before the
// first barrier, and a barrier follows the last read.

var<workgroup> red_f: array<vec4<f32>, WG_SIZE>;

fn reduce_sum4_tree(lid: u32, mine: vec4<f32>) -> vec4<f32> {
    red_f[lid] = mine;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_f[lid] = red_f[lid] + red_f[lid + s];
        }
        workgroupBarrier();
    }
    let total = red_f[0];
    workgroupBarrier();
    return total;
}

// (max, sum exp(x - max)) over the workgroup, each invocation's pair already relative to its own
// max; an invocation that saw nothing has max -3.4e38 and sum 0.
fn reduce_lse_tree(lid: u32, m: f32, s: f32) -> vec2<f32> {
    red_f[lid] = vec4<f32>(m, s, 0.0, 0.0);
    workgroupBarrier();
    for (var st = WG_SIZE / 2u; st > 0u; st >>= 1u) {
        if (lid < st) {
            let a = red_f[lid];
            let b = red_f[lid + st];
            let mm = max(a.x, b.x);
            red_f[lid] = vec4<f32>(mm, a.y * exp(a.x - mm) + b.y * exp(b.x - mm), 0.0, 0.0);
        }
        workgroupBarrier();
    }
    let total = red_f[0].xy;
    workgroupBarrier();
    return total;
}
