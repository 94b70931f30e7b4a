// Team reduction with subgroup operations (wgpu Features::SUBGROUP), the interface of
// team_reduce.wgsl. No subgroup size is assumed: the invocation's index is re-derived from its
// subgroup (subgroup_id * subgroup_size + subgroup_invocation_id), so that a team of `size`
// invocations is `size` aligned lanes of one subgroup (size <= subgroup size) or whole
// consecutive subgroups, whatever the driver's mapping of local_invocation_index to lanes.
// Where that derivation is not a permutation of 0 .. WG_SIZE - 1 (subgroups not full, a size
// that is not a power of two or below 4 lanes), every workgroup takes the workgroup-memory tree
// (reduce_tree.wgsl); the test is on values uniform over the dispatch.
//   * team within a subgroup: a shuffle-xor butterfly, masks size / 2 .. 1, each pair merged as
//     merge(lower lane, upper lane): the same merges, in the same order, as the tree, so the
//     result is bit-identical to the path without subgroups.
//   * team of several subgroups: the butterfly over each subgroup, lane 0 writes its
//     subgroup's state to reduce_slots[subgroup id] (at most WG_SIZE / 4 slots), a barrier,
//     then every subgroup of the team merges the team's slots (in slot order per lane, then a
//     butterfly), and a barrier before the slots can be written again.
// Every lane of a team computes its result from the same values by the same operations, so all
// get the same state. Contract: that of team_reduce.wgsl.
// No `enable subgroups;`: naga 30 rejects it as not yet implemented and gates the builtins by
// the device's SUBGROUP capability instead; the composer includes this piece only then.

#import reduce_tree

struct LaneIds {
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) sid: u32,
    @builtin(subgroup_size) size: u32,
    @builtin(subgroup_id) sgid: u32,
    @builtin(num_subgroups) count: u32,
}

// Subgroups of at least 4 lanes: at most WG_SIZE / 4 of them.
const REDUCE_SLOTS: u32 = WG_SIZE / 4u;
var<workgroup> reduce_slots: array<State, REDUCE_SLOTS>;

// Set by lane_setup; sg_on is uniform over the dispatch.
var<private> sg_on: bool;
var<private> sg_lane: u32;
var<private> sg_size: u32;
var<private> sg_index: u32;

fn lane_setup(ids: LaneIds) -> u32 {
    let s = ids.size;
    // count * s == WG_SIZE with at most s lanes per subgroup: every subgroup is full, so
    // sgid * s + sid (sgid < count, sid < s) is a permutation of 0 .. WG_SIZE - 1.
    sg_on = s >= 4u && s <= WG_SIZE && (s & (s - 1u)) == 0u && ids.count * s == WG_SIZE;
    sg_lane = ids.sid;
    sg_size = s;
    sg_index = ids.sgid;
    if (sg_on) {
        return ids.sgid * s + ids.sid;
    }
    return ids.lid;
}

fn shuffle_xor_state(s: State, mask: u32) -> State {
    var w = state_to_words(s);
    for (var i = 0u; i < STATE_WORDS; i++) {
        w[i] = subgroupShuffleXor(w[i], mask);
    }
    return state_from_words(w);
}

// Merges `v` over aligned groups of `width` lanes (a power of two, at most the subgroup size);
// every lane gets its group's state. Called by every lane of the subgroup.
fn butterfly(v_in: State, width: u32) -> State {
    var v = v_in;
    for (var mask = width / 2u; mask > 0u; mask >>= 1u) {
        let other = shuffle_xor_state(v, mask);
        if ((sg_lane & mask) == 0u) {
            v = merge(v, other);
        } else {
            v = merge(other, v);
        }
    }
    return v;
}

// Teams are `size` consecutive invocations by lane_setup's index (size a power of two dividing
// WG_SIZE); all invocations of the workgroup must call it, in uniform control flow.
fn reduce_team(lid: u32, size: u32, mine: State) -> State {
    if (!sg_on) {
        return reduce_team_tree(lid, size, mine);
    }
    if (size <= sg_size) {
        return butterfly(mine, size);
    }
    let total = butterfly(mine, sg_size);
    if (sg_lane == 0u) {
        reduce_slots[sg_index] = total;   // sg_index < WG_SIZE / sg_size <= REDUCE_SLOTS
    }
    workgroupBarrier();
    // The team's subgroups: n (a power of two, 2 .. REDUCE_SLOTS) from `first`, all < count.
    let n = size / sg_size;
    let first = sg_index & ~(n - 1u);
    var v: State;
    if (n >= sg_size) {
        v = reduce_slots[first + sg_lane];
        for (var j = sg_lane + sg_size; j < n; j += sg_size) {
            v = merge(v, reduce_slots[first + j]);
        }
        v = butterfly(v, sg_size);
    } else {
        v = butterfly(reduce_slots[first + (sg_lane & (n - 1u))], n);
    }
    workgroupBarrier();
    return v;
}
