/*
 * kernels_blocks_x86.h - one body of the block-weight product (Qwen3MatmulBlocksFn, kernels.h)
 * for every x86 tier, in units of 256 values (a K-quant block or eight 32-value blocks; 32-value
 * blocks past the last whole unit take the reference's steps); kernels_blocks_avx2.c includes it once per tier after defining
 *
 *   BLK_TARGET        the function attribute that enables the tier's ISA
 *   BLK_DOT32(w, x)   __m256i: per int32 lane the exact sum of four products of unsigned
 *                     bytes w and signed bytes x (maddubs + madd, or vpdpbusd)
 *   BLK_NAME          the name of the Qwen3MatmulBlocksFn it defines
 *   BLK_P(name)       a per-tier name for its helpers
 *
 * Same bits as the reference (docs/numerics.md#ggml-block-weights): the integer sums of a
 * 256-value block's eight chunks (and Q6_K's sixteen halves) are exact in any order, so they are
 * formed with BLK_DOT32 and a horizontal-add tree; the eight chunk epilogues run lane by lane
 * (the reference's single roundings), and their products are added to the row's sum one at a
 * time, in chunk order. Eight rows go together: their eight product vectors are transposed
 * so that the row is the lane, and the chunks are added with eight vector adds, in order (each
 * lane the scalar sequence of its row).
 *
 * Unsigned weights: Q4_K / Q5_K / Q4_1 / Q5_1 values are 0..31 already; Q6_K's are taken as
 * 6-bit unsigned (0..63) and 32 times each half's activation sum is subtracted, Q4_0 / Q5_0's
 * kept biased (0..31) and 8 / 16 times the chunk's activation sum subtracted. A maddubs pair sum is at most
 * 2 * 63 * 128 = 16128, so it never saturates.
 */

#define BLK_ROWS 8

typedef struct {
    __m256 scale;    /* per chunk: d * sc (Q4_K, Q5_K) or d (Q6_K) */
    __m256 offset;   /* per chunk: -(dmin * m) (Q4_K, Q5_K) */
    __m256i sc_lo;   /* Q6_K: the scale of each chunk's first 16 values */
    __m256i sc_hi;   /* Q6_K: of its last 16 */
} BLK_P(Params);

/* Lane j of *lo: the sum of v[j]'s lanes 0..3 (a chunk's first 16 values); of *hi: 4..7. */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(halves4)(const __m256i v[4], __m128i* lo,
                                                                          __m128i* hi) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    *lo = _mm256_castsi256_si128(h);
    *hi = _mm256_extracti128_si256(h, 1);
}

/* fp16 -> fp32, exactly as qwen3_f16_to_f32, inlined (two per block). */
static inline __attribute__((always_inline)) float BLK_P(f16)(const uint8_t* p) {
    const uint32_t h = qwen3_read_u16le(p), sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0) {
        const float v = (float)mant * 5.9604644775390625e-8f; /* zero or subnormal, exact */
        return sign ? -v : v;
    }
    bits = exp == 0x1F ? sign | 0x7F800000u | (mant << 13) : sign | ((exp + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

BLK_TARGET static inline __attribute__((always_inline)) __m256i BLK_P(dot32)(__m256i w, const int8_t* x) {
    return BLK_DOT32(w, _mm256_loadu_si256((const __m256i*)x));
}

/* A block's scales: Q4_K / Q5_K unpack their 6-bit scales and mins four bytes at a time
 * (chunk j < 4: low 6 bits of bytes j and j + 4; j >= 4: nibbles of byte j + 4 under the top
 * two bits of bytes j - 4 and j, as kernels_blocks.c reads them one by one). */
BLK_TARGET static inline __attribute__((always_inline)) BLK_P(Params) BLK_P(params)(uint32_t type, const uint8_t* blk) {
    BLK_P(Params) p;
    if (type == QWEN3_BLOCK_Q6_K) {
        const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(blk + 192)));
        p.sc_lo = _mm256_srai_epi32(_mm256_slli_epi32(s16, 16), 16); /* scales 0, 2, ..., 14 */
        p.sc_hi = _mm256_srai_epi32(s16, 16);                        /* scales 1, 3, ..., 15 */
        p.scale = _mm256_set1_ps(BLK_P(f16)(blk + 208));
        p.offset = _mm256_setzero_ps();
        return p;
    }
    if (qwen3_block_values(type) == 32) {
        /* eight consecutive 32-value blocks: d of each, and m for Q4_1 / Q5_1 */
        const uint32_t bb = qwen3_block_bytes(type);
        const int has_m = type == QWEN3_BLOCK_Q4_1 || type == QWEN3_BLOCK_Q5_1;
        float d[8], m[8];
        for (int k = 0; k < 8; k++) {
            d[k] = BLK_P(f16)(blk + k * bb);
            m[k] = has_m ? BLK_P(f16)(blk + k * bb + 2) : 0.0f;
        }
        p.scale = _mm256_loadu_ps(d);
        p.offset = _mm256_loadu_ps(m);
        p.sc_lo = p.sc_hi = _mm256_setzero_si256();
        return p;
    }
    const float d = BLK_P(f16)(blk), dmin = BLK_P(f16)(blk + 2);
    const uint32_t a = qwen3_read_u32le(blk + 4), b = qwen3_read_u32le(blk + 8), c = qwen3_read_u32le(blk + 12);
    const uint32_t sc_lo = a & 0x3F3F3F3Fu, m_lo = b & 0x3F3F3F3Fu;
    const uint32_t sc_hi = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
    const uint32_t m_hi = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
    const __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)sc_hi, (int)sc_lo)));
    const __m256 m = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)m_hi, (int)m_lo)));
    p.scale = _mm256_mul_ps(_mm256_set1_ps(d), sc);
    /* -(dmin * m): the product, then its sign flipped, as the reference does */
    p.offset = _mm256_xor_ps(_mm256_mul_ps(_mm256_set1_ps(dmin), m), _mm256_set1_ps(-0.0f));
    p.sc_lo = p.sc_hi = _mm256_setzero_si256();
    return p;
}

/* A block's 256 values as unsigned bytes, chunk c (32 values) in q[c]: Q4_K / Q5_K values
 * (0..31) as they are, Q6_K's as 6-bit unsigned (q + 32). */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(decode)(uint32_t type, const uint8_t* blk,
                                                                         __m256i q[8]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    if (qwen3_block_values(type) == 32) {
        /* eight consecutive blocks, one chunk each: nibbles (value i low, i + 16 high) under
         * Q5_0 / Q5_1's fifth bits (qh bit i -> byte i: each byte takes qh's byte i / 8 and
         * tests bit i % 8); Q4_0 / Q5_0 stay biased by 8 / 16 (undone in isums) */
        const uint32_t bb = qwen3_block_bytes(type);
        const int five = type == QWEN3_BLOCK_Q5_0 || type == QWEN3_BLOCK_Q5_1;
        const uint32_t qs_at = type == QWEN3_BLOCK_Q4_0 ? 2 : type == QWEN3_BLOCK_Q4_1 ? 4 : type == QWEN3_BLOCK_Q5_0 ? 6 : 8;
        const uint32_t qh_at = type == QWEN3_BLOCK_Q5_0 ? 2 : 4;
        const __m128i m4x = _mm_set1_epi8(0x0F);
        const __m256i spread = _mm256_set_epi64x(0x0303030303030303ll, 0x0202020202020202ll, 0x0101010101010101ll, 0);
        const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
        for (int k = 0; k < 8; k++) {
            const uint8_t* b = blk + (size_t)k * bb;
            const __m128i v = _mm_loadu_si128((const __m128i*)(b + qs_at));
            __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4x), _mm_and_si128(v, m4x));
            if (five) {
                const __m256i h = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qwen3_read_u32le(b + qh_at)), spread);
                const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
                w = _mm256_or_si256(w, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
            }
            q[k] = w;
        }
        return;
    }
    if (type == QWEN3_BLOCK_Q6_K) {
        const __m256i m30 = _mm256_set1_epi8(0x30);
        for (int h = 0; h < 2; h++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i*)(blk + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i*)(blk + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256((const __m256i*)(blk + 128 + 32 * h));
            /* low nibbles of ql[0..32), ql[32..64), then their high nibbles, under bits
             * (0,1), (2,3), (4,5), (6,7) of qh moved to bits 4 and 5 */
            q[4 * h] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30));
            q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30));
            q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m30));
            q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                           _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
        }
        return;
    }
    const int five = type == QWEN3_BLOCK_Q5_K;
    const __m256i one = _mm256_set1_epi8(1);
    const uint8_t* qs = blk + (five ? 48 : 16);
    const __m256i hb = five ? _mm256_loadu_si256((const __m256i*)(blk + 16)) : _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        const __m256i v = _mm256_loadu_si256((const __m256i*)(qs + 32 * k));
        __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (five) {
            /* bits 2k and 2k + 1 of each qh byte (16-bit shifts: after the shift, bit 0 of
             * each byte is that byte's own bit) */
            const __m256i b0 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), one);
            const __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k + 1), one);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
        }
        q[2 * k] = lo;
        q[2 * k + 1] = hi;
    }
}

/* 32 times the activation sum of each chunk's first (*lo) and last (*hi) 16 values: what
 * Q6_K's +32 adds, the same for every row. */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(x_halves)(const int8_t* xq, __m256i* lo,
                                                                           __m256i* hi) {
    const __m256i one = _mm256_set1_epi8(1);
    __m256i xv[8];
    for (int j = 0; j < 8; j++) xv[j] = BLK_P(dot32)(one, xq + 32 * j);
    __m128i lo0, hi0, lo1, hi1;
    BLK_P(halves4)(xv, &lo0, &hi0);
    BLK_P(halves4)(xv + 4, &lo1, &hi1);
    *lo = _mm256_slli_epi32(_mm256_set_m128i(lo1, lo0), 5);
    *hi = _mm256_slli_epi32(_mm256_set_m128i(hi1, hi0), 5);
}

/* The eight chunk sums of a decoded unit against 256 activations: lo + hi, minus bias * xsum
 * for Q4_0 / Q5_0 (bias 8 / 16), or for Q6_K m16[2c] * (lo - 32 * xlo) + m16[2c+1] * (hi - 32 * xhi). */
BLK_TARGET static inline __attribute__((always_inline)) __m256i BLK_P(isums)(const __m256i q[8], const int8_t* xq,
                                                                           int q6, const BLK_P(Params) * p,
                                                                           __m256i x32_lo, __m256i x32_hi,
                                                                           int bias_shift, __m256i xsum_i) {
    __m256i v[8];
    for (int c = 0; c < 8; c++) v[c] = BLK_P(dot32)(q[c], xq + 32 * c);
    __m128i lo0, hi0, lo1, hi1;
    BLK_P(halves4)(v, &lo0, &hi0);
    BLK_P(halves4)(v + 4, &lo1, &hi1);
    if (!q6) {
        const __m256i sum = _mm256_set_m128i(_mm_add_epi32(lo1, hi1), _mm_add_epi32(lo0, hi0));
        if (bias_shift == 0) return sum;
        return _mm256_sub_epi32(sum, _mm256_sll_epi32(xsum_i, _mm_cvtsi32_si128(bias_shift)));
    }
    const __m256i lo = _mm256_sub_epi32(_mm256_set_m128i(lo1, lo0), x32_lo);
    const __m256i hi = _mm256_sub_epi32(_mm256_set_m128i(hi1, hi0), x32_hi);
    return _mm256_add_epi32(_mm256_mullo_epi32(p->sc_lo, lo), _mm256_mullo_epi32(p->sc_hi, hi));
}

/* v[i][c] -> v[c][i] for an 8 x 8 block of floats (moves only: the values keep their bits). */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(transpose8)(__m256 v[8]) {
    const __m256 a0 = _mm256_unpacklo_ps(v[0], v[1]), a1 = _mm256_unpackhi_ps(v[0], v[1]);
    const __m256 a2 = _mm256_unpacklo_ps(v[2], v[3]), a3 = _mm256_unpackhi_ps(v[2], v[3]);
    const __m256 a4 = _mm256_unpacklo_ps(v[4], v[5]), a5 = _mm256_unpackhi_ps(v[4], v[5]);
    const __m256 a6 = _mm256_unpacklo_ps(v[6], v[7]), a7 = _mm256_unpackhi_ps(v[6], v[7]);
    const __m256 b0 = _mm256_shuffle_ps(a0, a2, 0x44), b1 = _mm256_shuffle_ps(a0, a2, 0xEE);
    const __m256 b2 = _mm256_shuffle_ps(a1, a3, 0x44), b3 = _mm256_shuffle_ps(a1, a3, 0xEE);
    const __m256 b4 = _mm256_shuffle_ps(a4, a6, 0x44), b5 = _mm256_shuffle_ps(a4, a6, 0xEE);
    const __m256 b6 = _mm256_shuffle_ps(a5, a7, 0x44), b7 = _mm256_shuffle_ps(a5, a7, 0xEE);
    v[0] = _mm256_permute2f128_ps(b0, b4, 0x20);
    v[1] = _mm256_permute2f128_ps(b1, b5, 0x20);
    v[2] = _mm256_permute2f128_ps(b2, b6, 0x20);
    v[3] = _mm256_permute2f128_ps(b3, b7, 0x20);
    v[4] = _mm256_permute2f128_ps(b0, b4, 0x31);
    v[5] = _mm256_permute2f128_ps(b1, b5, 0x31);
    v[6] = _mm256_permute2f128_ps(b2, b6, 0x31);
    v[7] = _mm256_permute2f128_ps(b3, b7, 0x31);
}

/* Rows [r, r + nr) (nr <= BLK_ROWS, a constant where inlined) for every token. */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(rows)(float* out, size_t out_stride,
                                                                       const Qwen3BlockMatrix* w,
                                                                       const Qwen3Q8Batch* x, uint32_t r,
                                                                       uint32_t row_begin, uint32_t row_end,
                                                                       const uint32_t nr) {
    /* units of 256 values: one K-quant block, or eight 32-value blocks; the 32-value blocks
     * past the last whole unit are the tail, done with the reference's steps */
    const uint32_t type = w->type, nb = w->cols / 256, ng = x->n / 32;
    const size_t bb = (size_t)(256 / qwen3_block_values(type)) * qwen3_block_bytes(type);
    const int q6 = type == QWEN3_BLOCK_Q6_K, off = qwen3_block_has_offset(type);
    const int bias_shift = type == QWEN3_BLOCK_Q4_0 ? 3 : type == QWEN3_BLOCK_Q5_0 ? 4 : 0;
    for (uint32_t t = 0; t < x->n_tokens; t++) {
        for (uint32_t i = 0; i < nr; i++) out[(size_t)t * out_stride + (r + i - row_begin)] = 0.0f;
    }
    /* the rows two groups ahead (contiguous in memory), a slice per block, when this call
     * reads them: a group's blocks are visited across eight rows, which the hardware
     * prefetcher follows late */
    const uint8_t* ahead =
        nb > 0 && r + 3 * BLK_ROWS <= row_end ? w->data + (size_t)(r + 2 * BLK_ROWS) * w->row_bytes : NULL;
    const size_t slice = nb > 0 ? ((size_t)BLK_ROWS * w->row_bytes + nb - 1) / nb : 0;
    for (uint32_t b = 0; b < nb; b++) {
        if (ahead) {
            for (size_t o = 0; o < slice; o += 64) _mm_prefetch((const char*)(ahead + (size_t)b * slice + o), _MM_HINT_T0);
        }
        /* each row's block decoded once for every token of the batch */
        __m256i q[BLK_ROWS][8];
        BLK_P(Params) par[BLK_ROWS];
        for (uint32_t i = 0; i < nr; i++) {
            const uint8_t* blk = w->data + (size_t)(r + i) * w->row_bytes + (size_t)b * bb;
            par[i] = BLK_P(params)(type, blk);
            BLK_P(decode)(type, blk, q[i]);
        }
        for (uint32_t t = 0; t < x->n_tokens; t++) {
            const int8_t* xq = x->q + (size_t)t * x->n + (size_t)b * 256;
            const size_t g = (size_t)t * ng + (size_t)b * 8;
            const __m256 xs = _mm256_loadu_ps(x->s + g);
            const __m256i xsum_i = _mm256_loadu_si256((const __m256i*)(x->sums + g));
            const __m256 xsum = _mm256_cvtepi32_ps(xsum_i);
            __m256i x32_lo = _mm256_setzero_si256(), x32_hi = _mm256_setzero_si256();
            if (q6) BLK_P(x_halves)(xq, &x32_lo, &x32_hi);
            __m256 prod[BLK_ROWS];
            for (uint32_t i = 0; i < nr; i++) {
                const __m256i isum = BLK_P(isums)(q[i], xq, q6, &par[i], x32_lo, x32_hi, bias_shift, xsum_i);
                __m256 tv = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), par[i].scale);
                if (off) tv = _mm256_add_ps(tv, _mm256_mul_ps(xsum, par[i].offset));
                prod[i] = _mm256_mul_ps(tv, xs);
            }
            float* dst = out + (size_t)t * out_stride + (r - row_begin);
            if (nr == BLK_ROWS) {
                BLK_P(transpose8)(prod);
                __m256 acc = _mm256_loadu_ps(dst);
                for (int c = 0; c < 8; c++) acc = _mm256_add_ps(acc, prod[c]);
                _mm256_storeu_ps(dst, acc);
            } else {
                for (uint32_t i = 0; i < nr; i++) {
                    float p[8];
                    _mm256_storeu_ps(p, prod[i]);
                    float acc = dst[i];
                    for (int c = 0; c < 8; c++) acc = acc + p[c];
                    dst[i] = acc;
                }
            }
        }
    }
    /* the 32-value blocks past the last whole unit, each row and token in chunk order */
    const uint32_t vb = qwen3_block_values(type);
    if (vb == 32 && w->cols % 256 != 0) {
        const uint32_t b0 = nb * 8, b1 = w->cols / 32, obb = qwen3_block_bytes(type);
        Qwen3UnpackedBlock u;
        for (uint32_t i = 0; i < nr; i++) {
            const uint8_t* row = w->data + (size_t)(r + i) * w->row_bytes;
            for (uint32_t b = b0; b < b1; b++) {
                qwen3_block_unpack(type, row + (size_t)b * obb, &u);
                for (uint32_t t = 0; t < x->n_tokens; t++) {
                    float* dst = out + (size_t)t * out_stride + (r + i - row_begin);
                    const size_t g = (size_t)t * ng + b;
                    *dst = qwen3_block_dot_ref(&u, 1, off, x->q + (size_t)t * x->n + (size_t)b * 32, x->s + g,
                                               x->sums + g, *dst);
                }
            }
        }
    }
}

BLK_TARGET void BLK_NAME(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                         uint32_t row_begin, uint32_t row_end) {
    const uint32_t type = w->type;
    if (type == QWEN3_BLOCK_Q8_0 || qwen3_block_values(type) == 0) { /* Q8_0 runs converted */
        qwen3_matmul_blocks_ref(out, out_stride, w, x, row_begin, row_end);
        return;
    }
    uint32_t r = row_begin;
    for (; row_end - r >= BLK_ROWS; r += BLK_ROWS) BLK_P(rows)(out, out_stride, w, x, r, row_begin, row_end, BLK_ROWS);
    for (; r < row_end; r++) BLK_P(rows)(out, out_stride, w, x, r, row_begin, row_end, 1);
}

#undef BLK_ROWS
