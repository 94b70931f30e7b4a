// Whole-workgroup reductions without subgroups (GL and adapters without Features::SUBGROUP):
// the workgroup-memory trees of reduce_best_tree.wgsl and reduce_sum_tree.wgsl. The composer
// picks reduce_workgroup_subgroup.wgsl instead where the adapter has subgroups; both define,
// beside reduce_best's interface (WgIds, workgroup_setup, reduce_best; reduce_best.wgsl):
//   reduce_sum4(lid, v): the sum; reduce_lse(lid, m, s): (max, sum of s * exp(m - max)).
// Every invocation gets the result; all must call them, in uniform control flow. The importer
// defines nothing for them.
#import config
#import reduce_best
#import reduce_sum_tree

fn reduce_sum4(lid: u32, mine: vec4<f32>) -> vec4<f32> {
    return reduce_sum4_tree(lid, mine);
}

fn reduce_lse(lid: u32, m: f32, s: f32) -> vec2<f32> {
    return reduce_lse_tree(lid, m, s);
}
