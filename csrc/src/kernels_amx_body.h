/*
 * kernels_amx_body.h - the amx tier's batched int8 product (Qwen3MatmulQ8Fn, kernels.h),
 * written once on six tile operations; kernels_amx.c (real tiles) and kernels_amx_emu.c
 * (tiles emulated in plain C, for the tests) include it after kernels_amx.h, defining
 *
 *   AMX_ATTR               the function attribute of the variant (the AMX + AVX-512
 *                          target for the real tiles, nothing for the emulation)
 *   AMX_P(name)            a per-variant name for its functions
 *   T_CONFIG(e, cfg)       ldtilecfg
 *   T_ZERO(e, t)           tilezero
 *   T_LOAD(e, t, p, s)     tileloadd: tile t's rows from p, s bytes apart
 *   T_STORE(e, t, p, s)    tilestored
 *   T_DPBSSD(e, c, a, b)   tdpbssd: C[m][n] += sum over k, i of A[m][4k+i] * B[k][4n+i]
 *   T_RELEASE(e)           tilerelease
 *   PACK_X(xp, xs, x, ts0, ntb, ntiles, c0, nc)
 *                          a pass's activations as B tiles (kernels_amx.h: amx_pack_x_plain)
 *   ACC_LOAD(acc, o, ld, nr, ntok, nt16, zero), ACC_STORE(acc, o, ld, nr, ntok)
 *                          the running sums from and to the output rows (kernels_amx.h:
 *                          amx_acc_load_plain, amx_acc_store_plain; data movement only)
 *
 * Tile numbers are literals (the instructions encode them); e is the emulation's tile state,
 * unused by the real operations. Everything else here is plain C, compiled for AVX-512 in
 * the real variant (the compiler vectorises the epilogue across tokens; -ffp-contract=off
 * keeps every product and sum rounded as written), so the tests run this same text on the
 * emulated tiles. The layout and the numerics are in kernels_amx.c.
 *
 * Requires amx_shape_ok (kernels_amx.h) and row_begin < row_end.
 */

AMX_ATTR static void AMX_P(matmul)(AmxEmu* e, float* out, size_t ld, const Qwen3Q8Matrix* w,
                                   const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end) {
    (void)e;
    const uint32_t cols = w->cols, gs = w->group_size, ng = cols / gs, nt = x->n_tokens;
    const uint32_t tsb = amx_tokens_per_pass(gs), chunk = amx_chunk_cols(gs);
    const uint32_t kper = gs / 64; /* 64-byte tile steps per group */
    _Alignas(64) int8_t xp[AMX_XP_BYTES];         /* the pass's activations as B tiles */
    _Alignas(64) float xs[AMX_XP_BYTES / 64];     /* their scales: [tile][group][16 tokens] */
    _Alignas(64) int8_t wt[16 * AMX_CHUNK_MAX];   /* a partial 16-row half, zero-padded */
    _Alignas(64) int32_t cb[4][16][16];           /* one group's C tiles: [2h + tt][row][token] */
    _Alignas(64) AmxAcc acc;                      /* running sums: [row][token of the pass] */
    AmxTileConfig cfg;
    amx_config_init(&cfg);
    T_CONFIG(e, &cfg);
    for (uint32_t ts0 = 0; ts0 < nt; ts0 += tsb) {
        const uint32_t ntb = nt - ts0 < tsb ? nt - ts0 : tsb;
        const uint32_t ntiles = (ntb + 15) / 16;
        for (uint32_t c0 = 0; c0 < cols; c0 += chunk) {
            const uint32_t nc = cols - c0 < chunk ? cols - c0 : chunk;
            const uint32_t steps = nc / 64, ngc = nc / gs, g0 = c0 / gs;
            PACK_X(xp, xs, x, ts0, ntb, ntiles, c0, nc);
            for (uint32_t r0 = row_begin; r0 < row_end; r0 += 32) {
                const uint32_t nr = row_end - r0 < 32 ? row_end - r0 : 32;
                const uint32_t nh = nr > 16 ? 2 : 1;
                const int8_t* a_base[2] = {NULL, NULL};
                size_t a_stride[2] = {0, 0};
                for (uint32_t h = 0; h < nh; h++) {
                    const uint32_t hr = nr - 16 * h < 16 ? nr - 16 * h : 16;
                    const int8_t* src = w->q + (size_t)(r0 + 16 * h) * cols + c0;
                    if (hr == 16) {
                        a_base[h] = src; /* straight from the matrix: 16 whole rows */
                        a_stride[h] = cols;
                    } else {
                        /* A tile load reads 16 rows: the last rows of the range are copied
                         * so that none is read past the matrix. */
                        for (uint32_t r = 0; r < 16; r++) {
                            if (r < hr) {
                                memcpy(wt + (size_t)r * nc, src + (size_t)r * cols, nc);
                            } else {
                                memset(wt + (size_t)r * nc, 0, nc);
                            }
                        }
                        a_base[h] = wt;
                        a_stride[h] = nc;
                    }
                }
                /* The A lines of the block after this one (the next 32 rows, else the next
                 * chunk's or pass's first rows) are prefetched a few per pair of token tiles,
                 * spread over this block's work: a tile step reads one line from each of 16
                 * rows, streams too short and too many for the hardware prefetchers, and a
                 * tile load that misses the cache waits for memory. Into L2 (locality 2):
                 * on the AMX Xeon that beat L1 (locality 3) by 6% and no prefetch by 19%. */
                const int8_t* pf = NULL;
                uint32_t pf_rows = 0, pf_steps = steps;
                if (r0 + 32 < row_end) {
                    pf = w->q + (size_t)(r0 + 32) * cols + c0;
                    pf_rows = row_end - (r0 + 32) < 32 ? row_end - (r0 + 32) : 32;
                } else if (c0 + chunk < cols || ts0 + tsb < nt) {
                    const uint32_t c1 = c0 + chunk < cols ? c0 + chunk : 0;
                    pf = w->q + (size_t)row_begin * cols + c1;
                    pf_rows = row_end - row_begin < 32 ? row_end - row_begin : 32;
                    pf_steps = (cols - c1 < chunk ? cols - c1 : chunk) / 64;
                }
                const uint32_t pf_lines = pf_rows * pf_steps, pf_iters = ngc * ((ntiles + 1) / 2);
                const uint32_t pf_per = (pf_lines + pf_iters - 1) / pf_iters;
                uint32_t pf_next = 0;
                /* a stored float reloads exactly: the per-group order runs on across chunks */
                float* o = out + (size_t)ts0 * ld + (r0 - row_begin);
                ACC_LOAD(acc, o, ld, nr, ntb, 16 * ntiles, c0 == 0);
                for (uint32_t gl = 0; gl < ngc; gl++) {
                    /* The group's A tiles (weights) are loaded once and serve every pair of
                     * token tiles when the group is one 64-byte step; longer groups need a
                     * tile per step and reload them per pair. */
                    for (uint32_t tt0 = 0; tt0 < ntiles; tt0 += 2) {
                        const uint32_t nt2 = ntiles - tt0 < 2 ? ntiles - tt0 : 2;
                        for (uint32_t i = 0; i < pf_per && pf_next < pf_lines; i++, pf_next++) {
                            const uint32_t line = pf_next / pf_rows, row = pf_next % pf_rows;
                            __builtin_prefetch(pf + (size_t)row * cols + (size_t)line * 64, 0, 2); /* to L2 */
                        }
                        T_ZERO(e, 0);
                        if (nt2 == 2) T_ZERO(e, 1);
                        if (nh == 2) {
                            T_ZERO(e, 2);
                            if (nt2 == 2) T_ZERO(e, 3);
                        }
                        for (uint32_t s = gl * kper; s < (gl + 1) * kper; s++) {
                            if (kper > 1 || tt0 == 0) {
                                T_LOAD(e, 4, a_base[0] + (size_t)s * 64, a_stride[0]);
                                if (nh == 2) T_LOAD(e, 5, a_base[1] + (size_t)s * 64, a_stride[1]);
                            }
                            T_LOAD(e, 6, xp + ((size_t)tt0 * steps + s) * 1024, 64);
                            T_DPBSSD(e, 0, 4, 6);
                            if (nt2 == 2) {
                                T_LOAD(e, 7, xp + ((size_t)(tt0 + 1) * steps + s) * 1024, 64);
                                T_DPBSSD(e, 1, 4, 7);
                            }
                            if (nh == 2) {
                                T_DPBSSD(e, 2, 5, 6);
                                if (nt2 == 2) T_DPBSSD(e, 3, 5, 7);
                            }
                        }
                        T_STORE(e, 0, cb[0], 64);
                        if (nt2 == 2) T_STORE(e, 1, cb[1], 64);
                        if (nh == 2) {
                            T_STORE(e, 2, cb[2], 64);
                            if (nt2 == 2) T_STORE(e, 3, cb[3], 64);
                        }
                        /* acc = acc + ((float)isum * w_scale) * x_scale, per (row, token) */
                        for (uint32_t h = 0; h < nh; h++) {
                            const uint32_t hr = nr - 16 * h < 16 ? nr - 16 * h : 16;
                            for (uint32_t r = 0; r < hr; r++) {
                                const float ws = w->s[(size_t)(r0 + 16 * h + r) * ng + g0 + gl];
                                for (uint32_t tt = 0; tt < nt2; tt++) {
                                    const int32_t* c = cb[2 * h + tt][r];
                                    const float* xsv = xs + ((size_t)(tt0 + tt) * ngc + gl) * 16;
                                    float* a = acc[16 * h + r] + 16 * (tt0 + tt);
                                    for (uint32_t n = 0; n < 16; n++) a[n] = a[n] + ((float)c[n] * ws) * xsv[n];
                                }
                            }
                        }
                    }
                }
                ACC_STORE(acc, o, ld, nr, ntb);
            }
        }
    }
    T_RELEASE(e);
}
