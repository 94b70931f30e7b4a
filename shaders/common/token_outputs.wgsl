// Token sampling's per-row outputs, shared by the one-workgroup kernel (tokens.wgsl) and the
// split path's last step (tokens_final.wgsl): the token, its log-probability, the status, the
// rank and the top n, from the row's decisions and the invocations' top-n lists.
//
// Needs from the importer: token_core, reduce_workgroup (reduce_best), params, and the bindings
// `tokens`, `logprobs`, `top`, `status`, `aux` (read_write). Indices: r < params.rows, i <
// n_top <= MAX_TOP_N, windows as the host binds them (tokens.wgsl's contract).

// All invocations call it (uniform control flow): n rounds of the best head over the lists.
fn write_outputs(lid: u32, r: u32, d: ptr<function, array<u32, DEC_WORDS>>) {
    let n = n_top();
    let code = (*d)[D_CODE];
    let greedy = d_greedy(d);
    let processed = params.mode != 0u;
    let token = (*d)[D_TOKEN];
    if (processed && greedy && code == 0u) {
        // A greedy row's law is one-hot: the token first, then the lowest other indices at -inf.
        if (lid == 0u) {
            for (var i = 0u; i < n; i++) {
                let o = params.top_base + 2u * (r * params.n_top + i);
                let other = i - 1u + select(0u, 1u, i - 1u >= token);
                top[o] = select(other, token, i == 0u);
                top[o + 1u] = select(NEG_INF_BITS, 0u, i == 0u);
            }
        }
    } else {
        var head = 0u;
        for (var i = 0u; i < n; i++) {
            var mine = EMPTY;
            if (head < n) {
                mine = list[head];
            }
            let w = reduce_best(lid, mine);
            if (w.y != NO_INDEX && mine.y == w.y) {
                head++;
            }
            if (lid == 0u) {
                let o = params.top_base + 2u * (r * params.n_top + i);
                var lp = NAN_BITS;
                var idx = NO_INDEX;
                if (code == 0u && w.y != NO_INDEX) {
                    idx = w.y;
                    if (processed) {
                        lp = processed_logprob_of_key(w.x, greedy, d);
                    } else {
                        lp = raw_logprob_of_key(w.x, d);
                    }
                }
                top[o] = idx;
                top[o + 1u] = lp;
            }
        }
    }
    if (lid == 0u) {
        var lp = NAN_BITS;
        if (code == 0u) {
            if (processed) {
                lp = select(bitcast<u32>((d_f32(d, D_TOKB) - d_m(d)) / d_f32(d, D_T)
                                         - d_f32(d, D_LOGS)), 0u, greedy);
            } else {
                lp = bitcast<u32>(d_f32(d, D_TOKRAW) - d_f32(d, D_LOGZ));
            }
        }
        tokens[params.token_base + r] = select(NO_INDEX, token, code == 0u);
        if ((params.outputs & OUT_LOGPROB) != 0u) {
            logprobs[params.logprob_base + r] = lp;
        }
        if ((params.outputs & OUT_STATUS) != 0u) {
            status[params.status_base + r] = code;
        }
        if (rank_out()) {
            aux[params.aux_base + r] = select(0u, (*d)[D_RANK], code == 0u);
        }
    }
}
