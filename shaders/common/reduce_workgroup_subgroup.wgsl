// Whole-workgroup reductions with subgroup operations (wgpu Features::SUBGROUP): the interface
// of reduce_workgroup.wgsl, arg-max from reduce_best_subgroup.wgsl (whose workgroup_setup sets
// the wg_* state used here). Each subgroup reduces with subgroupMax / subgroupAdd, its lane 0
// writes the result to slot subgroup_id (at most WG_SIZE / 4 slots), a barrier, then every
// subgroup reduces all the slots (each lane its slots lane, lane + size, ... in order, then the
// subgroup operation), so every invocation gets the same value, and a barrier before the slots
// are written again. Where subgroups are not all full or have fewer than 4 lanes, the
// workgroup-memory trees run (reduce_sum_tree.wgsl; a test on values uniform over the dispatch).
// Sums (and log-sum-exp) associate differently from the tree.
// No `enable subgroups;`: naga 30 rejects it and gates the builtins by the SUBGROUP capability;
// the composer includes this piece only then.
#import config
#import reduce_best
#import reduce_sum_tree

var<workgroup> wg_slot_f: array<vec4<f32>, WG_SLOTS>;

fn reduce_sum4(lid: u32, mine: vec4<f32>) -> vec4<f32> {
    if (!wg_on) {
        return reduce_sum4_tree(lid, mine);
    }
    let t = subgroupAdd(mine);
    if (wg_lane == 0u) {
        wg_slot_f[wg_index] = t;
    }
    workgroupBarrier();
    var v = vec4<f32>(0.0);
    for (var j = wg_lane; j < wg_count; j += wg_size) {
        v += wg_slot_f[j];
    }
    let total = subgroupAdd(v);
    workgroupBarrier();
    return total;
}

// (max, sum) of pairs relative to their own max; an empty pair is (-3.4e38, 0).
fn subgroup_lse(m: f32, s: f32) -> vec2<f32> {
    let mm = subgroupMax(m);
    return vec2<f32>(mm, subgroupAdd(s * exp(m - mm)));
}

fn reduce_lse(lid: u32, m: f32, s: f32) -> vec2<f32> {
    if (!wg_on) {
        return reduce_lse_tree(lid, m, s);
    }
    let t = subgroup_lse(m, s);
    if (wg_lane == 0u) {
        wg_slot_f[wg_index] = vec4<f32>(t, 0.0, 0.0);
    }
    workgroupBarrier();
    var v = vec2<f32>(-3.4028235e38, 0.0);
    for (var j = wg_lane; j < wg_count; j += wg_size) {
        let c = wg_slot_f[j].xy;
        let mm = max(v.x, c.x);
        v = vec2<f32>(mm, v.y * exp(v.x - mm) + c.y * exp(c.x - mm));
    }
    let total = subgroup_lse(v.x, v.y);
    workgroupBarrier();
    return total;
}
