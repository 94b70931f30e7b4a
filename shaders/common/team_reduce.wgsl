// Team reduction without subgroups (so it runs on every adapter, GL included): the
// workgroup-memory tree of reduce_tree.wgsl. The composer picks reduce_subgroup.wgsl instead
// where the adapter has subgroups; both define the same interface:
//   struct LaneIds: the entry point's invocation builtins (take it as a parameter);
//   fn lane_setup(ids: LaneIds) -> u32: the invocation's index in the workgroup, a permutation
//     of 0 .. WG_SIZE - 1 (here local_invocation_index): index rows and teams by it;
//   fn reduce_team(lid, size, mine): every invocation gets the merge of its team's states.
// Contract: that of reduce_tree.wgsl, plus `const STATE_WORDS: u32`,
// `fn state_to_words(s: State) -> array<u32, STATE_WORDS>` and its inverse `state_from_words`
// (used by the subgroup variant only).
#import reduce_tree

struct LaneIds {
    @builtin(local_invocation_index) lid: u32,
}

fn lane_setup(ids: LaneIds) -> u32 {
    return ids.lid;
}

// Teams are `size` consecutive invocations (size a power of two dividing WG_SIZE); all
// invocations of the workgroup must call it, in uniform control flow.
fn reduce_team(lid: u32, size: u32, mine: State) -> State {
    return reduce_team_tree(lid, size, mine);
}
