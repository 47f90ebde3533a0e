/*
 * kernels_blocks_neon.h - the per-tier part of the ARM block-weight product
 * (kernels_blocks_neon.c, which describes the method), included once per tier after defining
 *
 *   BLK_TARGET                 the function attribute that enables the tier's ISA (or nothing)
 *   BLK_DOT16(a, b)            int32x4_t whose lanes sum to the exact dot product of two
 *                              int8x16_t (one 16-value half)
 *   BLK_DOT32(a0, b0, a1, b1)  the same for two pairs (one 32-value chunk)
 *   BLK_NAME                   the name of the Qwen3MatmulBlocksFn it defines
 *   BLK_P(name)                a per-tier name for its helpers
 */

/* The exact chunk sums of one row's unit (q) against one token's 256 activations (xv):
 * chunks 0..3 in s[0], 4..7 in s[1]. */
BLK_TARGET INLINE void BLK_P(isums)(const int8x16_t q[16], const int8x16_t xv[16], int q6, const int32x4_t m16[4],
                                    int32x4_t s[2]) {
    if (q6) {
        int32x4_t h[16];
        for (int i = 0; i < 16; i++) h[i] = BLK_DOT16(q[i], xv[i]);
        q6_isums(h, m16, s);
        return;
    }
    int32x4_t v[8];
    for (int c = 0; c < 8; c++) v[c] = BLK_DOT32(q[2 * c], xv[2 * c], q[2 * c + 1], xv[2 * c + 1]);
    s[0] = reduce4(v[0], v[1], v[2], v[3]);
    s[1] = reduce4(v[4], v[5], v[6], v[7]);
}

/* Unit u (nc chunks: 8 but in a 32-value type's last unit) of rows [r, r + nr) (nr <= BLK_ROWS),
 * added to every token's sums; nr and nc are constants where this is inlined. */
BLK_TARGET INLINE void BLK_P(unit)(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                                   uint32_t r, uint32_t row_begin, uint32_t u, const uint32_t nr,
                                   const uint32_t nc) {
    const uint32_t type = w->type, ng = x->n / 32;
    const size_t unit_bytes = (size_t)(256 / qwen3_block_values(type)) * qwen3_block_bytes(type);
    const int q6 = type == QWEN3_BLOCK_Q6_K, off = qwen3_block_has_offset(type);
    /* each row's unit decoded once for every token of the batch */
    int8x16_t q[BLK_ROWS][16];
    Params par[BLK_ROWS];
    for (uint32_t i = 0; i < nr; i++) {
        const uint8_t* blk = w->data + (size_t)(r + i) * w->row_bytes + (size_t)u * unit_bytes;
        params(type, blk, nc, &par[i]);
        decode(type, blk, nc, q[i]);
    }
    for (uint32_t t = 0; t < x->n_tokens; t++) {
        const int8_t* xq = x->q + (size_t)t * x->n + (size_t)u * 256;
        const size_t g = (size_t)t * ng + (size_t)u * 8;
        int8x16_t xv[16];
        float32x4_t xs[2], xsum[2];
        if (nc == 8) {
            for (int i = 0; i < 16; i++) xv[i] = vld1q_s8(xq + 16 * i);
            for (int k = 0; k < 2; k++) {
                xs[k] = vld1q_f32(x->s + g + 4 * k);
                xsum[k] = vcvtq_f32_s32(vld1q_s32(x->sums + g + 4 * k));
            }
        } else {
            /* a short unit: nothing read past the row's activations, zeros for the rest */
            float s8[8], m8[8];
            for (uint32_t c = 0; c < 8; c++) {
                xv[2 * c] = c < nc ? vld1q_s8(xq + 32 * c) : vdupq_n_s8(0);
                xv[2 * c + 1] = c < nc ? vld1q_s8(xq + 32 * c + 16) : vdupq_n_s8(0);
                s8[c] = c < nc ? x->s[g + c] : 0.0f;
                m8[c] = c < nc ? (float)x->sums[g + c] : 0.0f;
            }
            for (int k = 0; k < 2; k++) {
                xs[k] = vld1q_f32(s8 + 4 * k);
                xsum[k] = vld1q_f32(m8 + 4 * k);
            }
        }
        float32x4_t prod[BLK_ROWS][2];
        for (uint32_t i = 0; i < nr; i++) {
            int32x4_t s[2];
            BLK_P(isums)(q[i], xv, q6, par[i].m16, s);
            products(s, &par[i], xs, xsum, off, prod[i]);
        }
        float* dst = out + (size_t)t * out_stride + (r - row_begin);
        if (nr == BLK_ROWS) {
            /* rows in lanes; chunk by chunk, in order, onto the rows' sums */
            float32x4_t c[8], v[4];
            for (int i = 0; i < 4; i++) v[i] = prod[i][0];
            transpose4(v, c);
            for (int i = 0; i < 4; i++) v[i] = prod[i][1];
            transpose4(v, c + 4);
            float32x4_t acc = vld1q_f32(dst);
            for (uint32_t k = 0; k < nc; k++) acc = vaddq_f32(acc, c[k]);
            vst1q_f32(dst, acc);
        } else {
            for (uint32_t i = 0; i < nr; i++) {
                float pv[8];
                vst1q_f32(pv, prod[i][0]);
                vst1q_f32(pv + 4, prod[i][1]);
                float acc = dst[i];
                for (uint32_t k = 0; k < nc; k++) acc = acc + pv[k];
                dst[i] = acc;
            }
        }
    }
}

/* Rows [r, r + nr) for every token, unit by unit in order. */
BLK_TARGET INLINE void BLK_P(rows)(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                                   uint32_t r, uint32_t row_begin, const uint32_t nr) {
    for (uint32_t t = 0; t < x->n_tokens; t++) {
        for (uint32_t i = 0; i < nr; i++) out[(size_t)t * out_stride + (r + i - row_begin)] = 0.0f;
    }
    /* K-quant rows are whole blocks of 256; a 32-value type's row may end in a short unit */
    const uint32_t units = w->cols / 256;
    const uint32_t rest = qwen3_block_values(w->type) == 32 ? (w->cols / 32) % 8 : 0;
    for (uint32_t u = 0; u < units; u++) BLK_P(unit)(out, out_stride, w, x, r, row_begin, u, nr, 8);
    if (rest) BLK_P(unit)(out, out_stride, w, x, r, row_begin, units, nr, rest);
}

BLK_TARGET void BLK_NAME(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                         uint32_t row_begin, uint32_t row_end) {
    if (qwen3_block_values(w->type) == 0) { /* not a block type: the reference's handling */
        qwen3_matmul_blocks_ref(out, out_stride, w, x, row_begin, row_end);
        return;
    }
    uint32_t r = row_begin;
    for (; r < row_end && row_end - r >= BLK_ROWS; r += BLK_ROWS) BLK_P(rows)(out, out_stride, w, x, r, row_begin, BLK_ROWS);
    for (; r < row_end; r++) BLK_P(rows)(out, out_stride, w, x, r, row_begin, 1);
}
