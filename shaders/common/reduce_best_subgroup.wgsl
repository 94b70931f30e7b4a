// Whole-workgroup arg-max with subgroup operations (wgpu Features::SUBGROUP): the interface of
// reduce_best.wgsl. Each subgroup reduces with subgroupMax / subgroupMin, its lane 0 writes the
// result to slot subgroup_id (at most WG_SIZE / 4 slots), a barrier, then every subgroup reduces
// all the slots (each lane its slots lane, lane + size, ... in order, then the subgroup
// operation), so every invocation gets the same value, and a barrier before the slots are
// written again. No subgroup size or lane mapping is assumed; where subgroups are not all full
// or have fewer than 4 lanes, the workgroup-memory tree runs (reduce_best_tree.wgsl; a test on
// values uniform over the dispatch). workgroup_setup's state (wg_on, wg_lane, ...) also serves
// the subgroup sums of reduce_workgroup_subgroup.wgsl.
// Arg-max is exact: the largest key, then the lowest index among the entries with that key,
// the same entry as the tree's.
// No `enable subgroups;`: naga 30 rejects it and gates the builtins by the SUBGROUP capability;
// the composer includes this piece only then.
#import config
#import reduce_best_tree

struct WgIds {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) size: u32,
    @builtin(subgroup_id) sgid: u32,
    @builtin(num_subgroups) count: u32,
}

const WG_SLOTS: u32 = WG_SIZE / 4u;
var<workgroup> wg_slot_best: array<vec2<u32>, WG_SLOTS>;

// Set by workgroup_setup; wg_on is uniform over the dispatch.
var<private> wg_on: bool;
var<private> wg_lane: u32;
var<private> wg_size: u32;
var<private> wg_index: u32;
var<private> wg_count: u32;

fn workgroup_setup(ids: WgIds) -> u32 {
    // count * size == WG_SIZE with at most `size` lanes per subgroup: all full, count <= 64.
    wg_on = ids.size >= 4u && ids.size <= WG_SIZE && ids.count * ids.size == WG_SIZE;
    wg_lane = ids.sid;
    wg_size = ids.size;
    wg_index = ids.sgid;
    wg_count = ids.count;
    return ids.lid;
}

fn subgroup_best(v: vec2<u32>) -> vec2<u32> {
    let key = subgroupMax(v.x);
    return vec2<u32>(key, subgroupMin(select(0xffffffffu, v.y, v.x == key)));
}

fn reduce_best(lid: u32, mine: vec2<u32>) -> vec2<u32> {
    if (!wg_on) {
        return reduce_best_tree(lid, mine);
    }
    let b = subgroup_best(mine);
    if (wg_lane == 0u) {
        wg_slot_best[wg_index] = b;   // wg_index < wg_count <= WG_SLOTS
    }
    workgroupBarrier();
    // Lanes past the slots repeat slot 0: the arg-max is idempotent.
    var v = wg_slot_best[0];
    for (var j = wg_lane; j < wg_count; j += wg_size) {
        let c = wg_slot_best[j];
        if (before(c, v)) {
            v = c;
        }
    }
    let best = subgroup_best(v);
    workgroupBarrier();
    return best;
}
