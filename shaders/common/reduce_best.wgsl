// Whole-workgroup arg-max without subgroups (GL and adapters without Features::SUBGROUP): the
// tree of reduce_best_tree.wgsl. The composer picks reduce_best_subgroup.wgsl instead where the
// adapter has subgroups; both define:
//   struct WgIds: the entry point's invocation builtins (take it as a parameter);
//   fn workgroup_setup(ids: WgIds) -> u32: local_invocation_index (call it first);
//   reduce_best(lid, (key, index)): the first in the order (larger key, then lower index).
// Every invocation gets the result; all must call it, in uniform control flow. The importer
// defines nothing for it; reduce_workgroup.wgsl adds the sum and log-sum-exp reductions.
#import config
#import reduce_best_tree

struct WgIds {
    @builtin(local_invocation_index) lid: u32,
}

fn workgroup_setup(ids: WgIds) -> u32 {
    return ids.lid;
}

fn reduce_best(lid: u32, mine: vec2<u32>) -> vec2<u32> {
    return reduce_best_tree(lid, mine);
}
