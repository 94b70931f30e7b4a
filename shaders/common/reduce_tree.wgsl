// Workgroup-memory tree reduction of per-invocation states over teams of invocations: runs on
// every adapter (GL included), and is the fallback of the subgroup path (reduce_subgroup.wgsl).
// Contract: the including kernel defines `struct State` (or an alias),
// `fn merge(a: State, b: State) -> State` (associative) and
// `var<workgroup> shared_states: array<State, WG_SIZE>`.

// Reduces the states of each team of `size` consecutive invocations (size a power of two
// dividing WG_SIZE); every invocation gets its team's state, slot t merging slot t + size / 2,
// then t + size / 4, ... (merge(lower, upper)). All invocations of the workgroup must call it
// (barriers). Indices: lid < WG_SIZE, lid + stride stays in lid's team; shared_states[lid] is
// written before the first barrier and read after it.
fn reduce_team_tree(lid: u32, size: u32, mine: State) -> State {
    shared_states[lid] = mine;
    workgroupBarrier();
    let t = lid % size;
    for (var stride = size / 2u; stride > 0u; stride >>= 1u) {
        if (t < stride) {
            shared_states[lid] = merge(shared_states[lid], shared_states[lid + stride]);
        }
        workgroupBarrier();
    }
    let st = shared_states[lid - t];
    workgroupBarrier();
    return st;
}
