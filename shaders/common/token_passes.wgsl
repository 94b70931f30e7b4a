// Token sampling's passes over a row and the decisions taken after each, shared by the
// one-workgroup kernel (tokens.wgsl, which runs them all in one dispatch over the whole row) and
// the split kernel (tokens_split.wgsl, one dispatch per pass, each workgroup over a part of the
// row). The semantics (the order, the filters, the counter scheme) are stated in tokens.wgsl.
//
// Needs from the importer: token_core, philox, gumbel, logits, reduce_workgroup (reduce_best),
// params (TokenParams), the bindings `logits`, `rowp`, `proc` (read) and `aux` (read_write), and
// a function `gather_put(key, j)` that stores a kept entry for P_GATHER (workgroup memory on the
// one-workgroup path, the row's state on the split path).
//
// Index safety: a workgroup's part is [j0, j1) with j1 <= k (elements) or [b0, b1) with
// b1 <= blocks (Philox blocks, each lane tested against phase and k); rows are < params.rows;
// hist digits are 8-bit (< 256), top-p bins 4-bit (< 16).

// The logits the filters and the draw see: the processed row, or the input.
fn row_logit_bits(r: u32, j: u32) -> u32 {
    if (params.processed != 0u) {
        return proc[params.proc_base + r * params.k + j];
    }
    return raw_logit_bits(r, j);
}

// The input logits (raw log-probabilities), rows `stride` elements apart.
fn raw_logit_bits(r: u32, j: u32) -> u32 {
    return logit_bits(params.logit_base + r * params.stride + j, params.format);
}

// Key of logit bits: 0 for masked (-inf) and NaN entries, which are never kept.
fn logit_key(bits: u32) -> u32 {
    if (is_masked_bits(bits) || is_nan_bits(bits)) {
        return 0u;
    }
    return key_of(bits);
}

// Whether a row's parameters are out of their domain (tested on bits: WGSL may assume floats
// are finite).
fn bad_params(t: u32, top_p: u32, min_p: u32, rp: u32, fp: u32, pp: u32, ns: u32) -> bool {
    let fin = is_finite_bits(t) && is_finite_bits(top_p) && is_finite_bits(min_p)
        && is_finite_bits(rp) && is_finite_bits(fp) && is_finite_bits(pp) && is_finite_bits(ns);
    if (!fin) {
        return true;
    }
    // A subnormal temperature (either sign; the device may flush it to 0, and l / t overflows
    // for |l| above ~1e-38 / t) is out of domain, as in the other families.
    if ((t & 0x7f800000u) == 0u && (t & 0x007fffffu) != 0u) {
        return true;
    }
    let p = bitcast<f32>(top_p);
    let mp = bitcast<f32>(min_p);
    return bitcast<f32>(t) < 0.0 || !(p > 0.0 && p <= 1.0) || !(mp >= 0.0 && mp < 1.0)
        || !(bitcast<f32>(rp) > 0.0) || bitcast<f32>(ns) < 0.0;
}

// Invocation 0: the row's decisions before any pass, from its parameters.
fn dec_init(r: u32) {
    for (var i = 0u; i < DEC_WORDS; i++) {
        dec[i] = 0u;
    }
    let b = params.row_base + 12u * r;
    var bad = bad_params(rowp[b], rowp[b + 2u], rowp[b + 3u], rowp[b + 8u], rowp[b + 9u],
                         rowp[b + 10u], rowp[b + 11u]);
    if (params.processed != 0u && proc[params.proc_base + r * params.k] == BAD_ROW_BITS) {
        bad = true;
    }
    dec[D_T] = rowp[b];
    dec[D_TOPK] = rowp[b + 1u];
    dec[D_TOPP] = rowp[b + 2u];
    dec[D_MINP] = rowp[b + 3u];
    dec[D_SEED] = rowp[b + 4u];
    dec[D_SEED + 1u] = rowp[b + 5u];
    dec[D_OFF] = rowp[b + 6u];
    dec[D_OFF + 1u] = rowp[b + 7u];
    dec[D_NSIG] = rowp[b + 11u];
    dec[D_CODE] = select(0u, STATUS_BAD_PARAMS, bad);
    dec[D_TH] = KEEP_ALL.x;
    dec[D_TH + 1u] = KEEP_ALL.y;
    dec[D_TOKEN] = NO_INDEX;
    dec[D_TOKB] = NAN_BITS;
    dec[D_TOKRAW] = NAN_BITS;
    // Read back as the workgroup-uniform copy the settings are tested on.
    var row: array<u32, DEC_WORDS>;
    for (var i = 0u; i < DEC_WORDS; i++) {
        row[i] = dec[i];
    }
    let d = &row;
    // A filter the job left out (TokenFilters, params.filters) makes the row bad: the split
    // path records no pass for it.
    let f = params.filters;
    let in_kept = top_p_in_kept_set(d);
    if ((use_top_k(d) && (f & F_TOP_K) == 0u) || (use_top_p(d) && in_kept && (f & F_TOP_P_IN_TOP_K) == 0u)
        || (use_top_p(d) && !in_kept && (f & F_TOP_P) == 0u) || (use_min_p(d) && (f & F_MIN_P) == 0u)
        || (use_n_sigma(d) && (f & F_TOP_N_SIGMA) == 0u)) {
        dec[D_CODE] = STATUS_BAD_PARAMS;
        return;
    }
    if (use_top_k(d)) {
        select_start(1u, (*d)[D_TOPK], 0u);
    }
    dec[D_PON] = select(0u, 1u, use_top_p(d) && !top_p_in_kept_set(d));
}

// Part w of nw of 0..n: [lo, hi).
fn part(n: u32, w: u32, nw: u32) -> vec2<u32> {
    let span = (n + nw - 1u) / nw;
    return vec2<u32>(min(n, w * span), min(n, (w + 1u) * span));
}

// The row's Philox blocks for the draw: 4 words each, phase + words per element * k words.
fn draw_blocks(d: ptr<function, array<u32, DEC_WORDS>>) -> u32 {
    let per = select(1u, 2u, params.noise64 != 0u);
    return (((*d)[D_OFF] & 3u) + per * params.k + 3u) / 4u;
}

// The body of pass `pid` over part w of nw of row r, aggregated into `agg` / `hist` (and, for
// the draw, the invocations' top-n lists; it returns the workgroup's best draw candidate). All
// invocations call it, in uniform control flow.
fn pass_body(lid: u32, r: u32, pid: u32, d: ptr<function, array<u32, DEC_WORDS>>, w: u32, nw: u32) -> vec2<u32> {
    let range = part(params.k, w, nw);
    let th = d_th(d);
    let m = d_m(d);
    let t = d_f32(d, D_T);
    if (pid == P_STATS) {
        let viewed = params.processed != 0u;
        let raw_sep = raw_out() && viewed;
        let round0 = (*d)[S_MODE] == 1u && (*d)[S_NEXT] == 0u;
        var mk = 0u;
        var mr = 0u;
        var nmin = 0u;
        var cnt = 0u;
        for (var j = range.x + lid; j < range.y; j += WG_SIZE) {
            let bits = row_logit_bits(r, j);
            let key = logit_key(bits);
            if (round0 && key != 0u) {
                atomicAdd(&hist[key >> 24u], 1u);
            }
            if (is_finite_bits(bits)) {
                let kk = key_of(bits);
                mk = max(mk, kk);
                nmin = max(nmin, ~kk);
                cnt += 1u;
            }
            if (raw_sep) {
                let rb = raw_logit_bits(r, j);
                if (is_finite_bits(rb)) {
                    mr = max(mr, key_of(rb));
                }
            }
        }
        atomicMax(&agg[A_MAX], mk);
        atomicMax(&agg[A_RAW], mr);
        atomicMax(&agg[A_NMIN], nmin);
        atomicAdd(&agg[A_CNT], cnt);
    } else if (pid == P_MEAN || pid == P_VAR) {
        let shift = bitcast<i32>((*d)[D_SHIFT]);
        let mean = d_f32(d, D_MEAN);
        var s = FX_ZERO;
        for (var j = range.x + lid; j < range.y; j += WG_SIZE) {
            let bits = row_logit_bits(r, j);
            if (is_finite_bits(bits)) {
                let x = bitcast<f32>(bits);
                if (pid == P_MEAN) {
                    s = fx_add(s, fx_of(m - x, shift));
                } else {
                    let dx = x - mean;
                    s = fx_add(s, fx_of(dx * dx, 2 * shift - 62));
                }
            }
        }
        fx_add_agg(A_FXA, s);
    } else if ((pid >= P_TOPK && pid < P_GATHER) || (pid >= P_TIES && pid < P_DRAW)) {
        let round = (*d)[S_NEXT];
        let on_key = round < 4u;
        let shift = select(8u * (params.idx_rounds - 1u - (round - 4u)), 24u - 8u * round, on_key);
        let ties = (*d)[S_MODE] == 2u;
        for (var j = range.x + lid; j < range.y; j += WG_SIZE) {
            let key = logit_key(row_logit_bits(r, j));
            if (key != 0u && (key & (*d)[S_KM]) == (*d)[S_KP] && (j & (*d)[S_IM]) == (*d)[S_IP]
                && (!ties || is_kept(key, j, th))) {
                atomicAdd(&hist[(select(j, key, on_key) >> shift) & 0xffu], 1u);
            }
        }
    } else if (pid == P_GATHER) {
        // Top-k's candidates (every key from D_GLO up), or the kept set for top-p.
        let candidates = (*d)[S_MODE] == 3u;
        for (var j = range.x + lid; j < range.y; j += WG_SIZE) {
            let key = logit_key(row_logit_bits(r, j));
            if (select(is_kept(key, j, th), key != 0u && key >= (*d)[D_GLO], candidates)) {
                gather_put(key, j);
            }
        }
    } else if (pid >= P_TOPP && pid < P_TIES) {
        let round = pid - P_TOPP;
        let shift = 28u - 4u * round;
        // Explicitly zeroed: kernels may be compiled without wgpu's zero-initialisation.
        var bins = array<vec3<u32>, 16>();
        for (var j = range.x + lid; j < range.y; j += WG_SIZE) {
            let bits = row_logit_bits(r, j);
            let key = logit_key(bits);
            if (is_kept(key, j, th) && (key & (*d)[D_PM]) == (*d)[D_PP]) {
                let dg = (key >> shift) & 15u;
                bins[dg] = fx_add(bins[dg], fx_of(exp((bitcast<f32>(bits) - m) / t), FX_MASS_SHIFT));
            }
        }
        for (var i = 0u; i < 16u; i++) {
            fx_add_agg(A_BINS + 3u * i, bins[i]);
        }
    } else if (pid == P_DRAW) {
        return draw_body(lid, r, d, w, nw);
    } else if (pid == P_POST) {
        post_body(lid, r, d, range);
    }
    return EMPTY;
}

// What the draw pass adds for element j besides its candidate: the input's mass (raw
// log-probabilities), the kept mass (processed log-probabilities, the law) and the lists.
struct DrawSums {
    raw: vec3<u32>,
    kept: vec3<u32>,
    flags: u32,
}

fn draw_extras(acc: DrawSums, r: u32, j: u32, bits: u32, kept: bool, row: DrawRow) -> DrawSums {
    var s = acc;
    s.flags |= select(0u, 1u, is_nan_bits(bits)) | select(0u, 2u, is_pos_inf_bits(bits));
    if (row.raw_out) {
        let rb = select(bits, raw_logit_bits(r, j), params.processed != 0u);
        if (!is_nan_bits(rb)) {
            // Masked entries take part with the key of -inf: the top n lists every entry.
            list_insert(vec2<u32>(key_of(rb), j), row.n);
            if (is_finite_bits(rb)) {
                s.raw = fx_add(s.raw, fx_of(exp(bitcast<f32>(rb) - row.m_raw), FX_MASS_SHIFT));
            }
        }
    }
    if (!row.greedy) {
        if (row.proc_out) {
            list_insert(vec2<u32>(select(0u, logit_key(bits), kept), j), row.n);
        }
        if (kept && row.kept_mass) {
            s.kept = fx_add(s.kept, fx_of(exp((bitcast<f32>(bits) - row.m) / row.t), FX_MASS_SHIFT));
        }
    }
    return s;
}

// What draw_extras needs of the row, taken once per pass.
struct DrawRow {
    greedy: bool,
    raw_out: bool,
    proc_out: bool,
    kept_mass: bool,
    n: u32,
    m: f32,
    m_raw: f32,
    t: f32,
}

// The draw: Gumbel-max over the kept entries (greedy: the largest logit), by stream blocks.
fn draw_body(lid: u32, r: u32, d: ptr<function, array<u32, DEC_WORDS>>, w: u32, nw: u32) -> vec2<u32> {
    let th = d_th(d);
    let t = d_f32(d, D_T);
    let seed = vec2<u32>((*d)[D_SEED], (*d)[D_SEED + 1u]);
    let offset = vec2<u32>((*d)[D_OFF], (*d)[D_OFF + 1u]);
    var sums = DrawSums(FX_ZERO, FX_ZERO, 0u);
    let row = DrawRow(d_greedy(d), raw_out(), proc_out(), proc_out() || law_out(), n_top(), d_m(d),
                      d_m_raw(d), t);
    var best = EMPTY;
    if (d_greedy(d)) {
        let range = part(params.k, w, nw);
        for (var j = range.x + lid; j < range.y; j += WG_SIZE) {
            let bits = row_logit_bits(r, j);
            let c = vec2<u32>(logit_key(bits), j);
            sums = draw_extras(sums, r, j, bits, c.x != 0u, row);
            if (c.x != 0u && before(c, best)) {
                best = c;
            }
        }
    } else if (params.noise64 != 0u) {
        let phase = offset.x & 3u;
        let block0 = vec2<u32>((offset.x >> 2u) | (offset.y << 30u), offset.y >> 2u);
        let blocks = part(draw_blocks(d), w, nw);
        for (var b = blocks.x + lid; b < blocks.y; b += WG_SIZE) {
            let words = philox_block(seed, block0, b);
            var next = 0u;
            if ((phase & 1u) != 0u) {
                next = philox_block(seed, block0, b + 1u).x;
            }
            let ws = array<u32, 5>(words.x, words.y, words.z, words.w, next);
            for (var e = 0u; e < 4u; e++) {
                let s = 4u * b + e;
                if (s < phase || ((s - phase) & 1u) != 0u || (s - phase) / 2u >= params.k) {
                    continue;
                }
                let j = (s - phase) / 2u;
                let bits = row_logit_bits(r, j);
                let kp = is_kept(logit_key(bits), j, th);
                sums = draw_extras(sums, r, j, bits, kp, row);
                // Noise only for kept entries (two logs each).
                if (kp) {
                    let z = bitcast<f32>(bits) / t + gumbel_from_words64(ws[e], ws[e + 1u]);
                    let c = vec2<u32>(key_of(bitcast<u32>(z)), j);
                    if (before(c, best)) {
                        best = c;
                    }
                }
            }
        }
    } else {
        let phase = offset.x & 3u;
        let block0 = vec2<u32>((offset.x >> 2u) | (offset.y << 30u), offset.y >> 2u);
        let blocks = part(draw_blocks(d), w, nw);
        for (var b = blocks.x + lid; b < blocks.y; b += WG_SIZE) {
            let words = philox_block(seed, block0, b);
            // The four lanes written out (no inner loop: llvmpipe counts loop iterations).
            let ws = array<u32, 4>(words.x, words.y, words.z, words.w);
            for (var e = 0u; e < 4u; e++) {
                let s = 4u * b + e;
                if (s < phase || s - phase >= params.k) {
                    continue;
                }
                let j = s - phase;
                let bits = row_logit_bits(r, j);
                let kp = is_kept(logit_key(bits), j, th);
                sums = draw_extras(sums, r, j, bits, kp, row);
                if (kp) {
                    let z = bitcast<f32>(bits) / t + gumbel_from_word(ws[e]);
                    let c = vec2<u32>(key_of(bitcast<u32>(z)), j);
                    if (before(c, best)) {
                        best = c;
                    }
                }
            }
        }
    }
    atomicOr(&agg[A_FLAGS], sums.flags);
    fx_add_agg(A_FXA, sums.raw);
    fx_add_agg(A_FXB, sums.kept);
    return reduce_best(lid, best);
}

// The post pass: the rank count (entries whose logit is >= the token's: kept ones, processed)
// and the final law.
fn post_body(lid: u32, r: u32, d: ptr<function, array<u32, DEC_WORDS>>, range: vec2<u32>) {
    let code = (*d)[D_CODE];
    let greedy = d_greedy(d);
    let processed = params.mode != 0u;
    let th = d_th(d);
    let token = (*d)[D_TOKEN];
    if (rank_out() && code == 0u && !(processed && greedy)) {
        let tkey = key_of(select((*d)[D_TOKRAW], (*d)[D_TOKB], processed));
        var c = 0u;
        for (var j = range.x + lid; j < range.y; j += WG_SIZE) {
            if (processed) {
                let key = logit_key(row_logit_bits(r, j));
                c += select(0u, 1u, is_kept(key, j, th) && key >= tkey);
            } else {
                let bits = raw_logit_bits(r, j);
                c += select(0u, 1u, !is_nan_bits(bits) && key_of(bits) >= tkey);
            }
        }
        atomicAdd(&agg[A_RANK], c);
    }
    if (law_out()) {
        let m = d_m(d);
        let t = d_f32(d, D_T);
        let log_s = d_f32(d, D_LOGS);
        for (var j = range.x + lid; j < range.y; j += WG_SIZE) {
            var v = NAN_BITS;
            if (code == 0u) {
                let bits = row_logit_bits(r, j);
                if (greedy) {
                    v = select(0u, bitcast<u32>(1.0), j == token);
                } else if (is_kept(logit_key(bits), j, th)) {
                    v = bitcast<u32>(exp((bitcast<f32>(bits) - m) / t - log_s));
                } else {
                    v = 0u;
                }
            }
            aux[params.aux_base + r * params.k + j] = v;
        }
    }
}

// The decisions after pass `pid`, from its aggregates in `agg` / `hist` (and `best`, the
// row's best draw candidate, after the draw). All invocations call it, in uniform control flow;
// the caller reloads `dec` (workgroupUniformLoad) after it.
fn finish(lid: u32, r: u32, pid: u32, d: ptr<function, array<u32, DEC_WORDS>>, best: vec2<u32>) {
    if (pid == P_GATHER) {
        finish_gather(lid, d);
        return;
    }
    if (lid != 0u) {
        return;
    }
    if (pid == P_STATS) {
        let mk = atomicLoad(&agg[A_MAX]);
        dec[D_M] = mk;
        dec[D_MRAW] = select(mk, atomicLoad(&agg[A_RAW]), raw_out() && params.processed != 0u);
        dec[D_CNT] = atomicLoad(&agg[A_CNT]);
        dec[D_NMIN] = atomicLoad(&agg[A_NMIN]);
        let m = select(-3.4e38, value_of_key(mk), mk != 0u);
        if (use_min_p(d)) {
            // Never above the max: a min_p near 1 keeps the largest logit(s).
            let thr = min(m + d_f32(d, D_T) * log(d_f32(d, D_MINP)), m);
            let lim = tighter(vec2<u32>(dec[D_TH], dec[D_TH + 1u]),
                              vec2<u32>(max(key_of(bitcast<u32>(thr)), 1u), NO_INDEX));
            dec[D_TH] = lim.x;
            dec[D_TH + 1u] = lim.y;
        }
        if (use_n_sigma(d)) {
            // Sigma's fixed point: terms m - l below 2^e units of 2^(e - 62), e the exponent
            // just above the row's range m - min (squares: 2^(2e), shift 2 (62 - e) - 62).
            let nmin = atomicLoad(&agg[A_NMIN]);
            let spread = select(0.0, m - value_of_key(~nmin), nmin != 0u && mk != 0u);
            let eb = i32((bitcast<u32>(spread) >> 23u) & 0xffu);
            var e = eb - 126;
            if (eb == 0) {
                e = -126;
            }
            dec[D_SHIFT] = bitcast<u32>(62 - min(e, 128));
        }
        if ((*d)[S_MODE] == 1u && (*d)[S_NEXT] == 0u) {
            select_step(0u);
        }
    } else if (pid == P_MEAN) {
        let cnt = max(f32((*d)[D_CNT]), 1.0);
        let s = fx_to_f32(agg_fx(A_FXA), bitcast<i32>((*d)[D_SHIFT]));
        dec[D_MEAN] = bitcast<u32>(d_m(d) - s / cnt);
    } else if (pid == P_VAR) {
        let cnt = max(f32((*d)[D_CNT]), 1.0);
        let shift2 = 2 * bitcast<i32>((*d)[D_SHIFT]) - 62;
        let sigma = sqrt(fx_to_f32(agg_fx(A_FXA), shift2) / cnt);
        let m = d_m(d);
        // Never above the max: the largest logit(s) stay.
        let thr = min(m - d_f32(d, D_NSIG) * sigma, m);
        let lim = tighter(vec2<u32>(dec[D_TH], dec[D_TH + 1u]),
                          vec2<u32>(max(key_of(bitcast<u32>(thr)), 1u), NO_INDEX));
        dec[D_TH] = lim.x;
        dec[D_TH + 1u] = lim.y;
    } else if ((pid >= P_TOPK && pid < P_GATHER) || (pid >= P_TIES && pid < P_DRAW)) {
        select_step((*d)[S_NEXT]);
    } else if (pid >= P_TOPP && pid < P_TIES) {
        top_p_step(pid - P_TOPP);
    } else if (pid == P_DRAW) {
        var tokb = NAN_BITS;
        var tokraw = NAN_BITS;
        if (best.y != NO_INDEX) {
            tokb = row_logit_bits(r, best.y);
            tokraw = raw_logit_bits(r, best.y);
        }
        finish_draw(d, best, tokb, tokraw);
    } else if (pid == P_POST) {
        finish_post(d);
    }
}
