// Workgroup-memory reduction of per-invocation states over teams of invocations, without
// subgroups (so it runs on every adapter, GL included).
// Contract: the including kernel defines `struct State`, `fn merge(a: State, b: State) -> State`
// (associative) and `var<workgroup> shared_states: array<State, WG_SIZE>`.

// Reduces the states of each team of `size` consecutive invocations (size a power of two
// dividing WG_SIZE); every invocation gets its team's state. All invocations of the workgroup
// must call it (barriers).
fn reduce_team(lid: u32, size: u32, mine: State) -> State {
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
