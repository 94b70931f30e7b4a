// The forward family's workgroup reduction without subgroups (GL, devices without
// Features::SUBGROUP, GpuOptions::subgroups off): workgroup memory only. The forward variants
// that import this piece get no subgroup builtins; SubgroupIds carries an unused builtin so the
// entry points keep one signature in both variants.
// Contract: the including shader (softmax.wgsl) defines State, Row and reduce_wg.
struct SubgroupIds {
    @builtin(local_invocation_id) unused: vec3<u32>,
}

// Every invocation of the workgroup calls it (barriers); every one gets the workgroup's state.
fn reduce(lid: u32, st: State, row: Row, sg: SubgroupIds) -> State {
    return reduce_wg(lid, st, row);
}
