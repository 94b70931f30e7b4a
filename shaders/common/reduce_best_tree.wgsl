// The arg-max order and its workgroup-memory tree, shared by every kernel that reduces
// (key, index) pairs over a workgroup (tokens.wgsl, speculative.wgsl): the path without
// subgroups of reduce_best (reduce_best.wgsl) and the fallback of its subgroup twin.
// Needs: config (WG_SIZE).

// a comes before b in the order: larger key, or equal keys and lower index. Exact (no
// arithmetic), so every reduction tree or subgroup order picks the same entry.
fn before(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y < b.y);
}

// The tree's slots. Each call writes red_best[lid] before its first barrier, reads slots only
// between barriers, and ends with a barrier after its last read, so an importer may use the
// slots for its own workgroup reductions between calls (same discipline).
var<workgroup> red_best: array<vec2<u32>, WG_SIZE>;

// The first of the workgroup's pairs in the order; every invocation gets it. All invocations
// must call it, in uniform control flow (barriers). Indices: lid < WG_SIZE and lid + s <
// 2 s <= WG_SIZE.
fn reduce_best_tree(lid: u32, mine: vec2<u32>) -> vec2<u32> {
    red_best[lid] = mine;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if (lid < s && before(red_best[lid + s], red_best[lid])) {
            red_best[lid] = red_best[lid + s];
        }
        workgroupBarrier();
    }
    let best = red_best[0];
    workgroupBarrier();
    return best;
}
