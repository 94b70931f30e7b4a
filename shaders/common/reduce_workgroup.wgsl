// Whole-workgroup reductions without subgroups (GL and adapters without Features::SUBGROUP):
// the including kernel's workgroup-memory trees. The composer picks reduce_workgroup_subgroup.wgsl
// instead where the adapter has subgroups; both define:
//   struct WgIds: the entry point's invocation builtins (take it as a parameter);
//   fn workgroup_setup(ids: WgIds) -> u32: local_invocation_index (call it first);
//   reduce_best(lid, (key, index)): the first in the order (larger key, then lower index);
//   reduce_sum4(lid, v): the sum; reduce_lse(lid, m, s): (max, sum of s * exp(m - max)).
// Every invocation gets the result; all must call them, in uniform control flow.
// Contract: the kernel defines reduce_best_tree, reduce_sum4_tree and reduce_lse_tree with
// these signatures and meanings.

struct WgIds {
    @builtin(local_invocation_index) lid: u32,
}

fn workgroup_setup(ids: WgIds) -> u32 {
    return ids.lid;
}

fn reduce_best(lid: u32, mine: vec2<u32>) -> vec2<u32> {
    return reduce_best_tree(lid, mine);
}

fn reduce_sum4(lid: u32, mine: vec4<f32>) -> vec4<f32> {
    return reduce_sum4_tree(lid, mine);
}

fn reduce_lse(lid: u32, m: f32, s: f32) -> vec2<f32> {
    return reduce_lse_tree(lid, m, s);
}
