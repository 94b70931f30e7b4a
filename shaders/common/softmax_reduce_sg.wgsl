// The forward family's workgroup reduction with subgroups (composed only for devices with
// Features::SUBGROUP): a butterfly of shuffles merges each subgroup's states in registers, one
// state per subgroup goes to workgroup memory, and every invocation merges those in the same
// order (so all agree bit for bit). No subgroup size is assumed: the loop runs to the
// subgroup_size builtin, and subgroups are found by the subgroup_id builtin, not by lid.
// Contract: the including shader (softmax.wgsl) defines State, Row, merge, reduce_wg and
// `var<workgroup> red_wg: array<State, RED_SLOTS>`; subgroups of fewer than WG_SIZE / RED_SLOTS
// lanes (more subgroups than slots; num_subgroups is the same for the whole workgroup, so the
// branch is uniform) take reduce_wg, the workgroup-memory path.
//   * every invocation of the workgroup calls reduce in uniform control flow (after uniform
//     early returns only), so every lane of every subgroup is active for the shuffles: WG_SIZE
//     (256) is a multiple of every subgroup size (a power of two, at most 128 in wgpu), so no
//     subgroup is partial;
//   * subgroupShuffleXor(x, m) with m < size reads lane lane ^ m < size (size a power of two);
//   * red_wg[sg.id]: sg.id < sg.count <= RED_SLOTS; red_wg[i] is read for i < sg.count only,
//     after the barrier that follows every subgroup's write of red_wg[its id]; the trailing
//     barrier keeps a later write of red_wg from racing these reads;
//   * loops end: m doubles from 1 to size (<= 128), i counts up to count (<= WG_SIZE).
// (No `enable subgroups;`: naga 30 rejects the directive and takes the builtins without it.)

struct SubgroupIds {
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
    @builtin(subgroup_id) id: u32,
    @builtin(num_subgroups) count: u32,
}

fn shuffle_state(s: State, m: u32) -> State {
    return State(subgroupShuffleXor(s.nan, m), subgroupShuffleXor(s.n_inf, m),
                 subgroupShuffleXor(s.first_inf, m), subgroupShuffleXor(s.n_fin, m),
                 subgroupShuffleXor(s.s, m), subgroupShuffleXor(s.idx, m),
                 subgroupShuffleXor(s.l_a, m), subgroupShuffleXor(s.g_a, m));
}

fn reduce(lid: u32, st: State, row: Row, sg: SubgroupIds) -> State {
    if (sg.count > RED_SLOTS) {
        return reduce_wg(lid, st, row);
    }
    var s = st;
    for (var m = 1u; m < sg.size; m = m * 2u) {
        s = merge(s, shuffle_state(s, m), row);
    }
    if (sg.lane == 0u) {
        red_wg[sg.id] = s;
    }
    workgroupBarrier();
    var fin = red_wg[0];
    for (var i = 1u; i < sg.count; i++) {
        fin = merge(fin, red_wg[i], row);
    }
    workgroupBarrier();
    return fin;
}
