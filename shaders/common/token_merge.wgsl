// The split path's merge of the draw over a row's workgroups, shared by tokens_split.wgsl (the
// pass after the draw) and tokens_final.wgsl (when the draw was the last pass).
//
// Needs from the importer: token_core, reduce_workgroup (reduce_best), params (split), and
// `fn draw_slot_word(w: u32, i: u32) -> u32`: word i of workgroup w's draw slot (key, index,
// the logit's view bits, its input bits). Indices: w < params.split, i < 4.

// The winning slot's logit bits (view, input), written by the one invocation holding it (slots
// hold disjoint indices), read after a barrier.
var<workgroup> draw_bits: vec2<u32>;

// The row's best draw candidate over the slots in the exact order, then finish_draw with its
// bits. All invocations call it (uniform control flow); the caller reloads `dec` after it.
fn merge_draw(lid: u32, d: ptr<function, array<u32, DEC_WORDS>>) {
    var mine = EMPTY;
    var bits = vec2<u32>(NAN_BITS, NAN_BITS);
    for (var w = lid; w < params.split; w += WG_SIZE) {
        let c = vec2<u32>(draw_slot_word(w, 0u), draw_slot_word(w, 1u));
        // A slot of key 0 holds no candidate.
        if (c.y != NO_INDEX && c.x != 0u && before(c, mine)) {
            mine = c;
            bits = vec2<u32>(draw_slot_word(w, 2u), draw_slot_word(w, 3u));
        }
    }
    let best = reduce_best(lid, mine);
    if (best.y != NO_INDEX && mine.y == best.y) {
        draw_bits = bits;
    }
    workgroupBarrier();
    if (lid == 0u) {
        finish_draw(d, best, draw_bits.x, draw_bits.y);
    }
}
