/*
 * kernels_blocks_x86.h - one body of the block-weight product (Qwen3MatmulBlocksFn, kernels.h)
 * for every x86 tier, in units of 256 values (a K-quant block or eight 32-value blocks; 32-value
 * blocks past the last whole unit take the reference's steps); kernels_blocks_avx2.c includes it once per tier after defining
 *
 *   BLK_TARGET        the function attribute that enables the tier's ISA
 *   BLK_DOT32(w, x)   __m256i: per int32 lane the exact sum of four products of unsigned
 *                     bytes w and signed bytes x (maddubs + madd, or vpdpbusd)
 *   BLK_DOT32_U8(w,x) BLK_DOT32 for unsigned bytes up to 255 (Q8_0's flipped values)
 *   BLK_U8_SPLIT      defined where BLK_DPBUSD's pairs would saturate on such bytes (AVX2)
 *   BLK_DPBUSD(a,w,x) a plus BLK_DOT32(w, x), in the GEMM's vector width (below)
 *   BLK_DPWSSD(a,p,m) a plus the pairwise int16 products p * m summed into int32 lanes
 *   BLK_Q6_MULLO      defined where Q6_K's halves take BLK_DPBUSD and vpmulld (below)
 *   BLK_MM_ROWS       rows per GEMM tile (16; 32 with BLK_ZMM: 512-bit vectors)
 *   BLK_MM_TOK        tokens per GEMM register tile (at most 8)
 *   BLK_MM_MIN_TOKENS the fewest tokens that take the GEMM
 *   BLK_NAME          the name of the Qwen3MatmulBlocksFn it defines
 *   BLK_P(name)       a per-tier name for its helpers
 *
 * Same bits as the reference (docs/numerics.md#ggml-block-weights): the integer sums of a
 * 256-value block's eight chunks (and Q6_K's sixteen halves) are exact in any order, so they are
 * formed with BLK_DOT32 and a horizontal-add tree; the eight chunk epilogues run lane by lane
 * (the reference's single roundings), and their products are added to the row's sum one at a
 * time, in chunk order. Eight rows go together: their eight product vectors are transposed
 * so that the row is the lane, and the chunks are added with eight vector adds, in order (each
 * lane the scalar sequence of its row). With 512-bit vectors (BLK_ZMM), Q4_K, Q5_K and Q6_K keep
 * the rows in lanes from the start instead (BLK_P(rows8_q4k), BLK_P(rows8_q6k)): no horizontal
 * adds, no transpose, the same operations per lane.
 *
 * Unsigned weights: Q4_K / Q5_K / Q4_1 / Q5_1 values are 0..31 already; Q6_K's are taken as
 * 6-bit unsigned (0..63) and 32 times each half's activation sum is subtracted, Q4_0 / Q5_0's
 * kept biased (0..31) and 8 / 16 times the chunk's activation sum subtracted. A maddubs pair sum is at most
 * 2 * 63 * 128 = 16128, so it never saturates.
 */

#define BLK_ROWS 8
#define BLK_AHEAD 4 /* groups of BLK_ROWS rows between the rows read and those prefetched */

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

/* Eight fp16 codes -> fp32, lane by lane exactly as BLK_P(f16): zero and subnormals as
 * mant * 2^-24 (exact), infinities and NaNs with the payload moved up, the rest rebiased. */
BLK_TARGET static inline __attribute__((always_inline)) __m256 BLK_P(f16x8_u32)(__m256i h);
BLK_TARGET static inline __attribute__((always_inline)) __m256 BLK_P(f16x8)(__m128i h16) {
    return BLK_P(f16x8_u32)(_mm256_cvtepu16_epi32(h16));
}

/* BLK_P(f16x8) of codes already in 32-bit lanes (bits 16-31 zero). */
BLK_TARGET static inline __attribute__((always_inline)) __m256 BLK_P(f16x8_u32)(__m256i h) {
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x8000)), 16);
    const __m256i exp = _mm256_and_si256(_mm256_srli_epi32(h, 10), _mm256_set1_epi32(0x1F));
    const __m256i mant = _mm256_and_si256(h, _mm256_set1_epi32(0x3FF));
    const __m256i m13 = _mm256_slli_epi32(mant, 13);
    const __m256i normal = _mm256_or_si256(_mm256_slli_epi32(_mm256_add_epi32(exp, _mm256_set1_epi32(112)), 23), m13);
    const __m256i special = _mm256_or_si256(_mm256_set1_epi32(0x7F800000), m13);
    const __m256i is_special = _mm256_cmpeq_epi32(exp, _mm256_set1_epi32(0x1F));
    const __m256i is_small = _mm256_cmpeq_epi32(exp, _mm256_setzero_si256());
    const __m256 small = _mm256_mul_ps(_mm256_cvtepi32_ps(mant), _mm256_set1_ps(5.9604644775390625e-8f));
    __m256i bits = _mm256_blendv_epi8(normal, special, is_special);
    bits = _mm256_blendv_epi8(bits, _mm256_castps_si256(small), is_small);
    return _mm256_castsi256_ps(_mm256_or_si256(bits, sign));
}

BLK_TARGET static inline __attribute__((always_inline)) __m256i BLK_P(dot32)(__m256i w, const int8_t* x) {
    return BLK_DOT32(w, _mm256_loadu_si256((const __m256i*)x));
}

/* qwen3_block_values / qwen3_block_bytes for the block types (BLK_NAME checks the type
 * once), without a call per block. */
static inline __attribute__((always_inline)) uint32_t BLK_P(values)(uint32_t type) {
    return type == QWEN3_BLOCK_Q4_K || type == QWEN3_BLOCK_Q5_K || type == QWEN3_BLOCK_Q6_K ? 256 : 32;
}

static inline __attribute__((always_inline)) uint32_t BLK_P(bytes)(uint32_t type) {
    switch (type) {
        case QWEN3_BLOCK_Q4_0: return 18;
        case QWEN3_BLOCK_Q4_1: return 20;
        case QWEN3_BLOCK_Q5_0: return 22;
        case QWEN3_BLOCK_Q5_1: return 24;
        case QWEN3_BLOCK_Q8_0: return 34;
        case QWEN3_BLOCK_Q4_K: return 144;
        case QWEN3_BLOCK_Q5_K: return 176;
        default: return 210; /* Q6_K */
    }
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
    if (BLK_P(values)(type) == 32) {
        /* eight consecutive 32-value blocks: d of each, and m for Q4_1 / Q5_1 */
        const uint32_t bb = BLK_P(bytes)(type);
        const int has_m = type == QWEN3_BLOCK_Q4_1 || type == QWEN3_BLOCK_Q5_1;
        const uint8_t* b = blk;
        p.scale = BLK_P(f16x8)(_mm_setr_epi16((short)qwen3_read_u16le(b), (short)qwen3_read_u16le(b + bb),
                                              (short)qwen3_read_u16le(b + 2 * bb), (short)qwen3_read_u16le(b + 3 * bb),
                                              (short)qwen3_read_u16le(b + 4 * bb), (short)qwen3_read_u16le(b + 5 * bb),
                                              (short)qwen3_read_u16le(b + 6 * bb), (short)qwen3_read_u16le(b + 7 * bb)));
        b += 2;
        p.offset = has_m ? BLK_P(f16x8)(_mm_setr_epi16(
                               (short)qwen3_read_u16le(b), (short)qwen3_read_u16le(b + bb), (short)qwen3_read_u16le(b + 2 * bb),
                               (short)qwen3_read_u16le(b + 3 * bb), (short)qwen3_read_u16le(b + 4 * bb),
                               (short)qwen3_read_u16le(b + 5 * bb), (short)qwen3_read_u16le(b + 6 * bb),
                               (short)qwen3_read_u16le(b + 7 * bb)))
                         : _mm256_setzero_ps();
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
    if (BLK_P(values)(type) == 32) {
        /* eight consecutive blocks, one chunk each: nibbles (value i low, i + 16 high) under
         * Q5_0 / Q5_1's fifth bits (qh bit i -> byte i: each byte takes qh's byte i / 8 and
         * tests bit i % 8); Q4_0 / Q5_0 stay biased by 8 / 16 (undone in isums), Q8_0's
         * int8 values by 128 */
        const uint32_t bb = BLK_P(bytes)(type);
        if (type == QWEN3_BLOCK_Q8_0) {
            /* int8 values flipped to unsigned (w + 128, exact), undone in isums */
            const __m256i flip = _mm256_set1_epi8((char)0x80);
            for (int k = 0; k < 8; k++) {
                q[k] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(blk + (size_t)k * bb + 2)), flip);
            }
            return;
        }
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
 * for Q4_0 / Q5_0 / Q8_0 (bias 8 / 16 / 128; Q8_0's bytes reach 255, so their products go
 * through BLK_DOT32_U8), or for Q6_K m16[2c] * (lo - 32 * xlo) + m16[2c+1] * (hi - 32 * xhi). */
BLK_TARGET static inline __attribute__((always_inline)) __m256i BLK_P(isums)(const __m256i q[8], const int8_t* xq,
                                                                           int q6, const BLK_P(Params) * p,
                                                                           __m256i x32_lo, __m256i x32_hi,
                                                                           int bias_shift, __m256i xsum_i) {
    __m256i v[8];
    if (bias_shift == 7) {
        for (int c = 0; c < 8; c++) v[c] = BLK_DOT32_U8(q[c], _mm256_loadu_si256((const __m256i*)(xq + 32 * c)));
    } else {
        for (int c = 0; c < 8; c++) v[c] = BLK_P(dot32)(q[c], xq + 32 * c);
    }
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

/* The rows BLK_AHEAD groups ahead (contiguous in memory) are prefetched into L2 while rows
 * [r, r + nr) are read, a slice per block and a piece of it per row, when this call reads
 * them: a group's blocks are visited across eight rows, which the hardware prefetcher
 * follows late. Spread out, the prefetches stay few in flight at a time; the whole slice at
 * once, into L1, stalled the loop on the core's fill buffers (perf: 39% of the samples on
 * the instruction after the prefetch). Q4_K_M 0.6B tg128, 1 thread, the 2-vCPU Xeon, 3 runs:
 * 19.67 / 19.90 / 19.36 tok/s with the old burst two groups ahead into L1; spread: 21.44 /
 * 21.60 / 21.39 two groups ahead into L1, 22.21 / 22.08 / 22.07 four ahead into L2
 * (22.04-22.20 into L3, 21.60-22.20 six ahead, 20.70-20.76 four ahead into L1). With the
 * rows-in-lanes kernels (faster, below): none 19.0-19.3 against 22.6-22.8; six or eight
 * groups ahead no different from four. */
typedef struct {
    const uint8_t* ahead; /* NULL: nothing to prefetch (the last groups of the call) */
    size_t slice, piece;
} BLK_P(Ahead);

static inline __attribute__((always_inline)) BLK_P(Ahead) BLK_P(ahead)(const Qwen3BlockMatrix* w, uint32_t r,
                                                                     uint32_t row_end, uint32_t nr) {
    const uint32_t nb = w->cols / 256;
    BLK_P(Ahead) a;
    a.ahead = nb > 0 && r + (BLK_AHEAD + 1) * BLK_ROWS <= row_end
                  ? w->data + (size_t)(r + BLK_AHEAD * BLK_ROWS) * w->row_bytes
                  : NULL;
    a.slice = nb > 0 ? ((size_t)BLK_ROWS * w->row_bytes + nb - 1) / nb : 0;
    a.piece = (a.slice + (size_t)nr * 64 - 1) / ((size_t)nr * 64) * 64; /* of a slice, per row */
    return a;
}

/* Row i's piece of block b's slice. */
static inline __attribute__((always_inline)) void BLK_P(prefetch_piece)(const BLK_P(Ahead) * a, uint32_t b,
                                                                      uint32_t i) {
    if (!a->ahead) return;
    const size_t end = (i + 1) * a->piece < a->slice ? (i + 1) * a->piece : a->slice;
    for (size_t o = i * a->piece; o < end; o += 64) _mm_prefetch((const char*)(a->ahead + (size_t)b * a->slice + o), _MM_HINT_T1);
}

/* Whether eight rows' header words can be gathered: the offsets, up to 7 * row_bytes, are
 * int32 (any row a model holds fits: QWEN3_MAX_DIM; a matrix passed in directly may not). */
static inline __attribute__((always_inline)) int BLK_P(gathers_ok)(const Qwen3BlockMatrix* w) {
    return w->row_bytes <= (size_t)INT32_MAX / BLK_ROWS;
}

/* The chunk epilogues of one block for eight rows, rows in lanes: dst[i] += sum over the
 * chunks c in order of ((float)isum[c] * scale[c] (+ (float)xsum[c] * offset[c])) * xs[c],
 * each lane the reference's sequence for its row. offset NULL: none (Q6_K). */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(epilogue8)(float* dst, const __m256i isum[8],
                                                                            const __m256 scale[8],
                                                                            const __m256* offset, const float* xs,
                                                                            const int32_t* xsum) {
    __m256 acc = _mm256_loadu_ps(dst);
    for (int c = 0; c < 8; c++) {
        __m256 tv = _mm256_mul_ps(_mm256_cvtepi32_ps(isum[c]), scale[c]);
        if (offset) tv = _mm256_add_ps(tv, _mm256_mul_ps(_mm256_set1_ps((float)xsum[c]), offset[c]));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(tv, _mm256_set1_ps(xs[c])));
    }
    _mm256_storeu_ps(dst, acc);
}

/* Q4_K / Q5_K: the scale d * sc and offset -(dmin * m) of each chunk of one block in each of
 * eight rows, rows in lanes (lane i: the block at blk0 + idx[i]), from gathered header words:
 * the reference's unpacking (BLK_P(params)) and its two products, lane by lane. */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(k_params8)(const uint8_t* blk0, __m256i idx,
                                                                            __m256 scale[8], __m256 offset[8]) {
    const __m256i m6 = _mm256_set1_epi32(0x3F), m4 = _mm256_set1_epi32(0x0F), m2 = _mm256_set1_epi32(0x03);
    /* header words: d | dmin << 16, then the 12 scale bytes */
    const __m256i h0 = _mm256_i32gather_epi32((const int*)blk0, idx, 1);
    const __m256i ha = _mm256_i32gather_epi32((const int*)(blk0 + 4), idx, 1);
    const __m256i hb = _mm256_i32gather_epi32((const int*)(blk0 + 8), idx, 1);
    const __m256i hc = _mm256_i32gather_epi32((const int*)(blk0 + 12), idx, 1);
    const __m256 d = BLK_P(f16x8_u32)(_mm256_and_si256(h0, _mm256_set1_epi32(0xFFFF)));
    const __m256 dmin = BLK_P(f16x8_u32)(_mm256_srli_epi32(h0, 16));
    for (int c = 0; c < 8; c++) {
        __m256i sc, m;
        if (c < 4) {
            sc = _mm256_and_si256(_mm256_srli_epi32(ha, 8 * c), m6);
            m = _mm256_and_si256(_mm256_srli_epi32(hb, 8 * c), m6);
        } else {
            const int j = c - 4;
            sc = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(hc, 8 * j), m4),
                                 _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(ha, 8 * j + 6), m2), 4));
            m = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(hc, 8 * j + 4), m4),
                                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(hb, 8 * j + 6), m2), 4));
        }
        scale[c] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sc));
        offset[c] = _mm256_xor_ps(_mm256_mul_ps(dmin, _mm256_cvtepi32_ps(m)), _mm256_set1_ps(-0.0f));
    }
}

#ifdef BLK_ZMM
/* Rows in lanes, the first two steps: R[0..7] are 8 rows' vectors of 16 int32 partial sums;
 * h[0] gets, in 128-bit lane j, the sums of lane j's four values of rows 0, 1, 2, 3, and
 * h[1] those of rows 4 .. 7. Integer adds, exact in any order. */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(lane_sums)(const __m512i R[8], __m512i h[2]) {
    for (int q = 0; q < 2; q++) {
        const __m512i* r = R + 4 * q;
        /* per 128-bit lane: [r0 e0+e2, r1 e0+e2, r0 e1+e3, r1 e1+e3], then four rows' sums */
        const __m512i t01 = _mm512_add_epi32(_mm512_unpacklo_epi32(r[0], r[1]), _mm512_unpackhi_epi32(r[0], r[1]));
        const __m512i t23 = _mm512_add_epi32(_mm512_unpacklo_epi32(r[2], r[3]), _mm512_unpackhi_epi32(r[2], r[3]));
        h[q] = _mm512_add_epi32(_mm512_unpacklo_epi64(t01, t23), _mm512_unpackhi_epi64(t01, t23));
    }
}

/* The last step: 128-bit lanes 0 and 1 of h[q] (BLK_P(lane_sums)) added are chunk A, lanes 2
 * and 3 chunk B; *a gets chunk A's sum of row i in lane i, *b chunk B's. */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(chunk_sums)(const __m512i h[2], __m256i* a,
                                                                             __m256i* b) {
    const __m512i s = _mm512_add_epi32(_mm512_shuffle_i32x4(h[0], h[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                       _mm512_shuffle_i32x4(h[0], h[1], _MM_SHUFFLE(3, 1, 3, 1)));
    /* s: [A rows 0-3, B rows 0-3, A rows 4-7, B rows 4-7] */
    const __m512i o = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 4, 5, 2, 3, 6, 7), s);
    *a = _mm512_castsi512_si256(o);
    *b = _mm512_extracti64x4_epi64(o, 1);
}

/* Both steps: R[0..7] hold two chunks each (lanes 0-7 chunk A, 8-15 chunk B). */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(rows_in_lanes)(const __m512i R[8], __m256i* a,
                                                                                __m256i* b) {
    __m512i h[2];
    BLK_P(lane_sums)(R, h);
    BLK_P(chunk_sums)(h, a, b);
}

/* Q6_K, rows [r, r + BLK_ROWS) for every token, rows in lanes as BLK_P(rows8_q4k): each
 * 64 values (two chunks: 32 bytes of low nibbles under the matching 2-bit fields of qh, taken
 * with per-half shift counts) as one 512-bit vpdpbusd; the sums of each 16-value half of the
 * eight rows side by side (BLK_P(lane_sums)), less 32 times the half's activation sum (the +32
 * of the 6-bit values), times the half's int8 scale of each row (gathered, then its bytes put
 * in place), then the two halves of a chunk added: the reference's exact int32 chunk sum. The
 * epilogue is the reference's per chunk, in order, eight rows at once. */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(rows8_q6k)(float* out, size_t out_stride,
                                                                            const Qwen3BlockMatrix* w,
                                                                            const Qwen3Q8Batch* x, uint32_t r,
                                                                            uint32_t row_begin, uint32_t row_end) {
    const uint32_t nb = w->cols / 256, ng = x->n / 32;
    const size_t bb = 210;
    for (uint32_t t = 0; t < x->n_tokens; t++) {
        _mm256_storeu_ps(out + (size_t)t * out_stride + (r - row_begin), _mm256_setzero_ps());
    }
    const BLK_P(Ahead) ahead = BLK_P(ahead)(w, r, row_end, BLK_ROWS);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)w->row_bytes));
    const __m512i n4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30), ones = _mm512_set1_epi8(1);
    /* qh's 2-bit fields to bits 4-5: chunk 4h by << 4 and 4h + 1 by << 2 (the low nibbles'
     * chunks), 4h + 2 by >> 0 and 4h + 3 by >> 2 (the high nibbles') */
    const __m512i shl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
    const __m512i shr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    /* four rows' four scale bytes (row-major) to byte 4j + r = row r's byte j */
    const __m128i tr = _mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const uint8_t* row0 = w->data + (size_t)r * w->row_bytes;
    for (uint32_t b = 0; b < nb; b++) {
        const uint8_t* blk0 = row0 + (size_t)b * bb;
        for (uint32_t i = 0; i < BLK_ROWS; i++) BLK_P(prefetch_piece)(&ahead, b, i);
        /* d: the top half of the word at 206 (the block's last four bytes: no read past it) */
        const __m256 d = BLK_P(f16x8_u32)(_mm256_srli_epi32(_mm256_i32gather_epi32((const int*)(blk0 + 206), idx, 1), 16));
        const __m256 scale[8] = {d, d, d, d, d, d, d, d}; /* Q6_K: d for every chunk */
        __m512i sc[4][2]; /* per pair of chunks k, rows 0-3 / 4-7: lane (j, r) the scale of half 4k + j */
        for (int k = 0; k < 4; k++) {
            const __m256i g = _mm256_i32gather_epi32((const int*)(blk0 + 192 + 4 * k), idx, 1);
            sc[k][0] = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(_mm256_castsi256_si128(g), tr));
            sc[k][1] = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(_mm256_extracti128_si256(g, 1), tr));
        }
        for (uint32_t t = 0; t < x->n_tokens; t++) {
            const int8_t* xq = x->q + (size_t)t * x->n + (size_t)b * 256;
            __m512i xv[4], x32[4];
            for (int k = 0; k < 4; k++) {
                xv[k] = _mm512_loadu_si512((const void*)(xq + 64 * k));
                /* 32 times each 16-value half's sum, in every lane of its 128-bit lane */
                const __m512i s4 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, xv[k]);
                const __m512i s2 = _mm512_add_epi32(s4, _mm512_shuffle_epi32(s4, _MM_PERM_BADC));
                x32[k] = _mm512_slli_epi32(_mm512_add_epi32(s2, _mm512_shuffle_epi32(s2, _MM_PERM_CDAB)), 5);
            }
            __m512i z[4][BLK_ROWS];
            for (uint32_t i = 0; i < BLK_ROWS; i++) {
                const uint8_t* blk = blk0 + (size_t)i * w->row_bytes;
                const __m512i qh = _mm512_loadu_si512((const void*)(blk + 128));
                /* qh's 32 bytes of half h in both 256-bit halves */
                const __m512i qhh[2] = {_mm512_shuffle_i64x2(qh, qh, _MM_SHUFFLE(1, 0, 1, 0)),
                                        _mm512_shuffle_i64x2(qh, qh, _MM_SHUFFLE(3, 2, 3, 2))};
                for (int h = 0; h < 2; h++) {
                    const __m512i l = _mm512_loadu_si512((const void*)(blk + 64 * h));
                    const __m512i hh = qhh[h];
                    const __m512i lo = _mm512_or_si512(_mm512_and_si512(l, n4), _mm512_and_si512(_mm512_sllv_epi16(hh, shl), m30));
                    const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), n4),
                                                       _mm512_and_si512(_mm512_srlv_epi16(hh, shr), m30));
                    z[2 * h][i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, xv[2 * h]);
                    z[2 * h + 1][i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), hi, xv[2 * h + 1]);
                }
            }
            __m256i isum[8];
            for (int k = 0; k < 4; k++) {
                __m512i hs[2];
                BLK_P(lane_sums)(z[k], hs);
                for (int q = 0; q < 2; q++) hs[q] = _mm512_mullo_epi32(_mm512_sub_epi32(hs[q], x32[k]), sc[k][q]);
                BLK_P(chunk_sums)(hs, &isum[2 * k], &isum[2 * k + 1]);
            }
            const size_t g = (size_t)t * ng + (size_t)b * 8;
            BLK_P(epilogue8)(out + (size_t)t * out_stride + (r - row_begin), isum, scale, NULL, x->s + g, x->sums + g);
        }
    }
}

/* Q4_K (and, with `five`, Q5_K), rows [r, r + BLK_ROWS) for every token, with rows in lanes
 * throughout: the scales and mins of the eight rows unpacked side by side (gathered header
 * words), each row's 256 values against the activations as four 512-bit vpdpbusd (two chunks
 * each: chunks 2j and 2j + 1 are the low and high nibbles of the same 32 bytes, under Q5_K's
 * bits 2j and 2j + 1 of qh), the partial sums reduced across rows (BLK_P(rows_in_lanes))
 * instead of row by row, and the epilogue of each chunk run on the eight rows at once, chunks
 * in order: each lane the reference's operations for its row, so the same bits, with no
 * transpose and no horizontal adds. */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(rows8_q4k)(float* out, size_t out_stride,
                                                                            const Qwen3BlockMatrix* w,
                                                                            const Qwen3Q8Batch* x, uint32_t r,
                                                                            uint32_t row_begin, uint32_t row_end,
                                                                            const int five) {
    const uint32_t nb = w->cols / 256, ng = x->n / 32;
    const size_t bb = five ? 176 : 144, qs_at = five ? 48 : 16;
    /* Q5_K: per 256-bit half, the qh bit of its chunk: (0, 2), (1, 3), (4, 6), (5, 7) */
    const __m512i one8 = _mm512_set1_epi8(1);
    const __m512i fifth[4] = {_mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1),
                              _mm512_inserti64x4(_mm512_set1_epi16(1), _mm256_set1_epi16(3), 1),
                              _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1),
                              _mm512_inserti64x4(_mm512_set1_epi16(5), _mm256_set1_epi16(7), 1)};
    for (uint32_t t = 0; t < x->n_tokens; t++) {
        _mm256_storeu_ps(out + (size_t)t * out_stride + (r - row_begin), _mm256_setzero_ps());
    }
    const BLK_P(Ahead) ahead = BLK_P(ahead)(w, r, row_end, BLK_ROWS);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)w->row_bytes));
    const __m512i n4 = _mm512_set1_epi8(0x0F);
    const uint8_t* row0 = w->data + (size_t)r * w->row_bytes;
    for (uint32_t b = 0; b < nb; b++) {
        const uint8_t* blk0 = row0 + (size_t)b * bb;
        for (uint32_t i = 0; i < BLK_ROWS; i++) BLK_P(prefetch_piece)(&ahead, b, i);
        __m256 scale[8], offset[8];
        BLK_P(k_params8)(blk0, idx, scale, offset);
        for (uint32_t t = 0; t < x->n_tokens; t++) {
            const int8_t* xq = x->q + (size_t)t * x->n + (size_t)b * 256;
            /* chunk pairs (0, 2), (1, 3), (4, 6), (5, 7) of the activations */
            __m512i xv[4];
            for (int k = 0; k < 2; k++) {
                const int8_t* xk = xq + 128 * k;
                xv[2 * k] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)xk)),
                                               _mm256_loadu_si256((const __m256i*)(xk + 64)), 1);
                xv[2 * k + 1] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(xk + 32))),
                                                   _mm256_loadu_si256((const __m256i*)(xk + 96)), 1);
            }
            __m512i z[4][BLK_ROWS];
            for (uint32_t i = 0; i < BLK_ROWS; i++) {
                const uint8_t* blk = blk0 + (size_t)i * w->row_bytes;
                const __m512i l0 = _mm512_loadu_si512((const void*)(blk + qs_at));
                const __m512i l1 = _mm512_loadu_si512((const void*)(blk + qs_at + 64));
                __m512i q[4] = {_mm512_and_si512(l0, n4), _mm512_and_si512(_mm512_srli_epi16(l0, 4), n4),
                                _mm512_and_si512(l1, n4), _mm512_and_si512(_mm512_srli_epi16(l1, 4), n4)};
                if (five) {
                    /* qh (32 bytes) in both halves; bit n of each byte to bit 4 (16-bit shifts:
                     * after the shift, bit 0 of each byte is that byte's own bit n) */
                    const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)(blk + 16)));
                    for (int k = 0; k < 4; k++) {
                        const __m512i bit = _mm512_and_si512(_mm512_srlv_epi16(qh, fifth[k]), one8);
                        q[k] = _mm512_or_si512(q[k], _mm512_slli_epi16(bit, 4));
                    }
                }
                for (int k = 0; k < 4; k++) z[k][i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[k], xv[k]);
            }
            __m256i isum[8];
            BLK_P(rows_in_lanes)(z[0], &isum[0], &isum[2]);
            BLK_P(rows_in_lanes)(z[1], &isum[1], &isum[3]);
            BLK_P(rows_in_lanes)(z[2], &isum[4], &isum[6]);
            BLK_P(rows_in_lanes)(z[3], &isum[5], &isum[7]);
            const size_t g = (size_t)t * ng + (size_t)b * 8;
            BLK_P(epilogue8)(out + (size_t)t * out_stride + (r - row_begin), isum, scale, offset, x->s + g, x->sums + g);
        }
    }
}
#endif

/* Rows [r, r + nr) (nr <= BLK_ROWS, a constant where inlined) for every token; `type` is
 * w->type (a constant where inlined: see BLK_NAME). */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(rows)(float* out, size_t out_stride,
                                                                       const Qwen3BlockMatrix* w,
                                                                       const Qwen3Q8Batch* x, uint32_t r,
                                                                       uint32_t row_begin, uint32_t row_end,
                                                                       const uint32_t nr, const uint32_t type) {
    /* units of 256 values: one K-quant block, or eight 32-value blocks; the 32-value blocks
     * past the last whole unit are the tail, done with the reference's steps */
    const uint32_t nb = w->cols / 256, ng = x->n / 32;
    const size_t bb = (size_t)(256 / qwen3_block_values(type)) * qwen3_block_bytes(type);
    const int q6 = type == QWEN3_BLOCK_Q6_K, off = qwen3_block_has_offset(type);
    const int bias_shift = type == QWEN3_BLOCK_Q4_0 ? 3 : type == QWEN3_BLOCK_Q5_0 ? 4 : type == QWEN3_BLOCK_Q8_0 ? 7 : 0;
    for (uint32_t t = 0; t < x->n_tokens; t++) {
        for (uint32_t i = 0; i < nr; i++) out[(size_t)t * out_stride + (r + i - row_begin)] = 0.0f;
    }
    const BLK_P(Ahead) ahead = BLK_P(ahead)(w, r, row_end, nr); /* see BLK_P(Ahead) */
    for (uint32_t b = 0; b < nb; b++) {
        /* each row's block decoded once for every token of the batch */
        __m256i q[BLK_ROWS][8];
        BLK_P(Params) par[BLK_ROWS];
        for (uint32_t i = 0; i < nr; i++) {
            BLK_P(prefetch_piece)(&ahead, b, i);
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

/* ------------------------------------------------------------------------------------
 * The batched product as a GEMM (prefill): each weight block is unpacked ONCE per call, for
 * a tile of BLK_MM_ROWS rows by up to BLK_MM_UNITS 256-value units, into an L1-sized pack
 * in the layout of the Q8 GEMMs (kernels_avx2.c): per step of 4 columns, one 32-byte
 * vector holds those 4 unsigned bytes of each of 8 rows. Each token's 4 activation bytes
 * are broadcast, so one BLK_DPBUSD adds 4 products to each of 8 (16) rows' sums and a
 * chunk's exact int32 sum builds up with rows in lanes and no horizontal reduction; register
 * tiles of BLK_MM_TOK tokens by BLK_MM_ROWS rows reuse every weight vector loaded. After each
 * 32-value chunk the float epilogue runs per token with rows in lanes, in the reference's
 * order and roundings, into float accumulators held in registers (kernels.h): the same bits
 * as qwen3_matmul_blocks_ref.
 *
 * The integer sum of a chunk, per type (u: the unsigned value the pack holds):
 *   Q4_K, Q5_K, Q4_1, Q5_1: u is the value; sum of u * x.
 *   Q4_0, Q5_0: u = q + 8 (16); the accumulator starts at -(8 (16) * xsum).
 *   Q6_K: u = q + 32, one int8 multiplier m per 16 values, xlo / xhi the sums of the
 *         chunk's two halves of activations (|x half| <= 2048). With BLK_Q6_MULLO (the VNNI
 *         tiers) each half is summed with BLK_DPBUSD from -32 * xlo (xhi) and multiplied by
 *         its m with vpmulld (|m * half| <= 128 * 16 * 63 * 128); else (AVX2) vpmaddubsw pairs
 *         (u <= 63, so a pair sum is at most 2 * 63 * 128 = 16128: never saturates) are
 *         multiplied by m and widened with vpmaddwd, and the accumulator starts at
 *         -32 * (m_lo * xlo + m_hi * xhi) (one vpmaddwd of the pairs (m_lo, m_hi), (xlo, xhi)).
 * Every one of these sums is the reference's isum exactly (int32, no overflow).
 * ---------------------------------------------------------------------------------- */

/* BLK_MM_ROWS (16 or 32, set per tier) rows per tile; the tile's vectors are BLK_VL rows
 * wide: 256-bit (8 rows) by default, 512-bit (16 rows) where the tier defines BLK_ZMM. */
#define BLK_MM_UNITS 4
#define BLK_MM_G (BLK_MM_ROWS / 8) /* 8-row groups per tile */
#ifdef BLK_ZMM
#define BLK_VL 16
#define BLK_VI __m512i
#define BLK_VF __m512
#define BLK_LOADI(p) _mm512_load_si512((const void*)(p))
#define BLK_LOADF(p) _mm512_load_ps(p)
#define BLK_STOREF(p, v) _mm512_store_ps((p), (v))
#define BLK_SET1I(v) _mm512_set1_epi32(v)
#define BLK_SET1F(v) _mm512_set1_ps(v)
#define BLK_ZEROI() _mm512_setzero_si512()
#define BLK_SUBI(a, b) _mm512_sub_epi32((a), (b))
#define BLK_ADDI(a, b) _mm512_add_epi32((a), (b))
#define BLK_MULLO(a, b) _mm512_mullo_epi32((a), (b))
#define BLK_SLLI(a, n) _mm512_slli_epi32((a), (n))
#define BLK_MADD(a, b) _mm512_madd_epi16((a), (b))
#define BLK_MADDUBS(a, b) _mm512_maddubs_epi16((a), (b))
#define BLK_CVT(a) _mm512_cvtepi32_ps(a)
#define BLK_MULF(a, b) _mm512_mul_ps((a), (b))
#define BLK_ADDF(a, b) _mm512_add_ps((a), (b))
#else
#define BLK_VL 8
#define BLK_VI __m256i
#define BLK_VF __m256
#define BLK_LOADI(p) _mm256_load_si256((const __m256i*)(p))
#define BLK_LOADF(p) _mm256_load_ps(p)
#define BLK_STOREF(p, v) _mm256_store_ps((p), (v))
#define BLK_SET1I(v) _mm256_set1_epi32(v)
#define BLK_SET1F(v) _mm256_set1_ps(v)
#define BLK_ZEROI() _mm256_setzero_si256()
#define BLK_SUBI(a, b) _mm256_sub_epi32((a), (b))
#define BLK_ADDI(a, b) _mm256_add_epi32((a), (b))
#define BLK_MULLO(a, b) _mm256_mullo_epi32((a), (b))
#define BLK_SLLI(a, n) _mm256_slli_epi32((a), (n))
#define BLK_MADD(a, b) _mm256_madd_epi16((a), (b))
#define BLK_MADDUBS(a, b) _mm256_maddubs_epi16((a), (b))
#define BLK_CVT(a) _mm256_cvtepi32_ps(a)
#define BLK_MULF(a, b) _mm256_mul_ps((a), (b))
#define BLK_ADDF(a, b) _mm256_add_ps((a), (b))
#endif
#define BLK_NV (BLK_MM_ROWS / BLK_VL) /* vectors per step */

typedef struct {
    _Alignas(64) uint8_t q[BLK_MM_UNITS * 64 * BLK_MM_ROWS * 4]; /* step j, group h: (j * G + h) * 32 */
    _Alignas(64) float scale[BLK_MM_UNITS * 8 * BLK_MM_ROWS];    /* chunk c: c * ROWS + row */
    _Alignas(64) float offset[BLK_MM_UNITS * 8 * BLK_MM_ROWS];
    _Alignas(64) int32_t m_lo[BLK_MM_UNITS * 8 * BLK_MM_ROWS];  /* Q6_K: (m_lo, m_lo) int16 pairs */
    _Alignas(64) int32_t m_hi[BLK_MM_UNITS * 8 * BLK_MM_ROWS];  /* (m_hi, m_hi) */
    _Alignas(64) int32_t m_lh[BLK_MM_UNITS * 8 * BLK_MM_ROWS];  /* (m_lo, m_hi) */
    _Alignas(64) int32_t s_lo[BLK_MM_UNITS * 8 * BLK_MM_ROWS];  /* m_lo as int32 */
    _Alignas(64) int32_t s_hi[BLK_MM_UNITS * 8 * BLK_MM_ROWS];  /* m_hi as int32 */
} BLK_P(Pack);

BLK_TARGET static inline __attribute__((always_inline)) __m256i BLK_P(ti)(__m256 v) { return _mm256_castps_si256(v); }

/* Packs rows r0 .. r0 + BLK_MM_ROWS - 1 (rows past nrows repeat the last one: in bounds,
 * results dropped) of units [u0, u0 + nu). */
BLK_TARGET static void BLK_P(mm_pack)(BLK_P(Pack) * pk, const Qwen3BlockMatrix* w, uint32_t r0, uint32_t nrows,
                                      uint32_t u0, uint32_t nu) {
    const uint32_t type = w->type;
    const size_t ub = (size_t)(256 / qwen3_block_values(type)) * qwen3_block_bytes(type);
    const int q6 = type == QWEN3_BLOCK_Q6_K;
    /* Q4_K / Q5_K: scales and offsets unpacked with rows in lanes (no transposes below) */
    const int k_gathered = (type == QWEN3_BLOCK_Q4_K || type == QWEN3_BLOCK_Q5_K) && BLK_P(gathers_ok)(w);
    for (uint32_t h = 0; h < BLK_MM_G; h++) {
        const uint8_t* rows[8];
        for (uint32_t i = 0; i < 8; i++) {
            const uint32_t row = 8 * h + i < nrows ? 8 * h + i : nrows - 1;
            rows[i] = w->data + (size_t)(r0 + row) * w->row_bytes;
        }
        /* the rows' offsets from rows[0], for gathers (at most 7 rows apart) */
        const __m256i k_idx = _mm256_setr_epi32(0, (int)(rows[1] - rows[0]), (int)(rows[2] - rows[0]), (int)(rows[3] - rows[0]),
                                                (int)(rows[4] - rows[0]), (int)(rows[5] - rows[0]), (int)(rows[6] - rows[0]),
                                                (int)(rows[7] - rows[0]));
        for (uint32_t u = 0; u < nu; u++) {
            BLK_P(Params) par[8];
            if (type == QWEN3_BLOCK_Q4_K || type == QWEN3_BLOCK_Q5_K) {
                /* Chunks 2j and 2j + 1 are the low and high nibbles of the same 32 bytes (under
                 * Q5_K's qh bits 2j and 2j + 1), and splitting nibbles works byte by byte: so
                 * the eight rows' raw bytes are transposed once per pair of chunks (and qh once
                 * per block), then split, where decoding first took a transpose per chunk. */
                const int five = type == QWEN3_BLOCK_Q5_K;
                const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
                __m256 qh[8];
                if (five) {
                    for (uint32_t i = 0; i < 8; i++) qh[i] = _mm256_loadu_ps((const float*)(rows[i] + (size_t)(u0 + u) * ub + 16));
                    BLK_P(transpose8)(qh);
                }
                if (k_gathered) {
                    __m256 sc[8], of[8];
                    BLK_P(k_params8)(rows[0] + (size_t)(u0 + u) * ub, k_idx, sc, of);
                    for (int c = 0; c < 8; c++) {
                        const size_t at = (size_t)(u * 8 + c) * BLK_MM_ROWS + 8 * h;
                        _mm256_store_ps(pk->scale + at, sc[c]);
                        _mm256_store_ps(pk->offset + at, of[c]);
                    }
                } else {
                    for (uint32_t i = 0; i < 8; i++) par[i] = BLK_P(params)(type, rows[i] + (size_t)(u0 + u) * ub);
                }
                for (int j = 0; j < 4; j++) {
                    __m256 r[8];
                    for (int i = 0; i < 8; i++) {
                        r[i] = _mm256_loadu_ps((const float*)(rows[i] + (size_t)(u0 + u) * ub + (five ? 48 : 16) + 32 * j));
                    }
                    BLK_P(transpose8)(r);
                    uint8_t* lo_dst = pk->q + ((size_t)(u * 64 + 8 * (2 * j)) * BLK_MM_G + h) * 32;
                    uint8_t* hi_dst = pk->q + ((size_t)(u * 64 + 8 * (2 * j + 1)) * BLK_MM_G + h) * 32;
                    for (int k = 0; k < 8; k++) {
                        const __m256i raw = BLK_P(ti)(r[k]);
                        __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                        if (five) {
                            /* bits 2j and 2j + 1 of each qh byte (16-bit shifts: after the shift,
                             * bit 0 of each byte is that byte's own bit) */
                            const __m256i hb = BLK_P(ti)(qh[k]);
                            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j), one), 4));
                            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * j + 1), one), 4));
                        }
                        _mm256_store_si256((__m256i*)(lo_dst + (size_t)k * BLK_MM_G * 32), lo);
                        _mm256_store_si256((__m256i*)(hi_dst + (size_t)k * BLK_MM_G * 32), hi);
                    }
                }
            } else {
                __m256i q[8][8];
                for (uint32_t i = 0; i < 8; i++) {
                    const uint8_t* blk = rows[i] + (size_t)(u0 + u) * ub;
                    par[i] = BLK_P(params)(type, blk);
                    BLK_P(decode)(type, blk, q[i]);
                }
                for (int c = 0; c < 8; c++) {
                    __m256 r[8];
                    for (int i = 0; i < 8; i++) r[i] = _mm256_castsi256_ps(q[i][c]);
                    BLK_P(transpose8)(r);
                    uint8_t* dst = pk->q + ((size_t)(u * 64 + 8 * c) * BLK_MM_G + h) * 32;
                    for (int k = 0; k < 8; k++) {
                        _mm256_store_si256((__m256i*)(dst + (size_t)k * BLK_MM_G * 32), BLK_P(ti)(r[k]));
                    }
                }
            }
            if (k_gathered) continue; /* scales and offsets stored above */
            /* per chunk, rows in lanes: transposes of the per-row vectors (lane = chunk) */
            __m256 s[8], o[8];
            for (int i = 0; i < 8; i++) {
                s[i] = par[i].scale;
                o[i] = par[i].offset;
            }
            BLK_P(transpose8)(s);
            BLK_P(transpose8)(o);
            for (int c = 0; c < 8; c++) {
                const size_t at = (size_t)(u * 8 + c) * BLK_MM_ROWS + 8 * h;
                _mm256_store_ps(pk->scale + at, s[c]);
                _mm256_store_ps(pk->offset + at, o[c]);
            }
            if (q6) {
                __m256 lo[8], hi[8];
                for (int i = 0; i < 8; i++) {
                    lo[i] = _mm256_castsi256_ps(par[i].sc_lo);
                    hi[i] = _mm256_castsi256_ps(par[i].sc_hi);
                }
                BLK_P(transpose8)(lo);
                BLK_P(transpose8)(hi);
                const __m256i low16 = _mm256_set1_epi32(0xFFFF);
                for (int c = 0; c < 8; c++) {
                    const size_t at = (size_t)(u * 8 + c) * BLK_MM_ROWS + 8 * h;
                    const __m256i l = _mm256_and_si256(BLK_P(ti)(lo[c]), low16);
                    const __m256i hh = _mm256_and_si256(BLK_P(ti)(hi[c]), low16);
                    _mm256_store_si256((__m256i*)(pk->m_lo + at), _mm256_or_si256(l, _mm256_slli_epi32(l, 16)));
                    _mm256_store_si256((__m256i*)(pk->m_hi + at), _mm256_or_si256(hh, _mm256_slli_epi32(hh, 16)));
                    _mm256_store_si256((__m256i*)(pk->m_lh + at), _mm256_or_si256(l, _mm256_slli_epi32(hh, 16)));
                    _mm256_store_si256((__m256i*)(pk->s_lo + at), BLK_P(ti)(lo[c]));
                    _mm256_store_si256((__m256i*)(pk->s_hi + at), BLK_P(ti)(hi[c]));
                }
            }
        }
    }
}

/* Sum of 16 int8 values (the first half of a chunk). */
BLK_TARGET static inline __attribute__((always_inline)) int32_t BLK_P(sum16)(const int8_t* x) {
    const __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i*)x), _mm_set1_epi8((char)0x80));
    const __m128i s = _mm_sad_epu8(v, _mm_setzero_si128()); /* two sums of x + 128 */
    return _mm_cvtsi128_si32(s) + _mm_extract_epi16(s, 4) - 16 * 128;
}

/* One register tile: tokens t0 .. t0 + nt - 1 by the pack's rows, over the pack's ngc
 * chunks (chunk g0 + gl of the row). kind: 1 offset (Q4_K, Q5_K, Q4_1, Q5_1), 2 biased (Q4_0 /
 * Q5_0 / Q8_0 by 1 << bias_shift: 8, 16, 128), 3 Q6_K. Accumulators start at 0 for the first pack, else from
 * out (a stored float reloads exactly, so each row's order is unbroken across packs). */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(mm_tile)(
    float* out, size_t ld, const BLK_P(Pack) * pk, const Qwen3Q8Batch* x, uint32_t t0, const int nt, uint32_t g0,
    uint32_t ngc, int first, uint32_t nrows, const int kind, const int bias_shift) {
    const uint32_t ng = x->n / 32;
    /* float accumulators in registers: loaded through a small L1 tile (rows past nrows are
     * never read from out), stored back the same way */
    _Alignas(64) float facc[8][BLK_MM_ROWS];
    BLK_VF acc[8][BLK_NV];
    QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
        for (uint32_t i = 0; i < BLK_MM_ROWS; i++) facc[t][i] = 0.0f;
        if (!first) {
            for (uint32_t i = 0; i < nrows; i++) facc[t][i] = out[(size_t)(t0 + t) * ld + i];
        }
        QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) acc[t][v] = BLK_LOADF(facc[t] + v * BLK_VL);
    }
    const int8_t* xq[8];
    const float* xs[8];
    const int32_t* xsum[8];
    QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
        xq[t] = x->q + (size_t)(t0 + t) * x->n + (size_t)g0 * 32;
        xs[t] = x->s + (size_t)(t0 + t) * ng + g0;
        xsum[t] = x->sums + (size_t)(t0 + t) * ng + g0;
    }
    for (uint32_t gl = 0; gl < ngc; gl++) {
        BLK_VI a[8][BLK_NV];
        const uint8_t* pg = pk->q + (size_t)gl * 8 * BLK_MM_ROWS * 4;
        if (kind == 3) {
#ifdef BLK_Q6_MULLO
            /* vpdpbusd on each half's 6-bit unsigned values, the accumulator starting at -32
             * times the half's activation sum, then times the half's m16 with vpmulld */
            BLK_VI sl[BLK_NV], sh[BLK_NV], part[8][BLK_NV];
            QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) {
                sl[v] = BLK_LOADI(pk->s_lo + gl * BLK_MM_ROWS + v * BLK_VL);
                sh[v] = BLK_LOADI(pk->s_hi + gl * BLK_MM_ROWS + v * BLK_VL);
            }
            int32_t xlo[8];
            QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) xlo[t] = BLK_P(sum16)(xq[t] + gl * 32);
            for (int half = 0; half < 2; half++) {
                QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                    const int32_t xh = half ? xsum[t][gl] - xlo[t] : xlo[t];
                    const BLK_VI init = BLK_SET1I(-32 * xh);
                    QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) a[t][v] = init;
                }
                QWEN3_UNROLL_FULL(4) for (int j = 4 * half; j < 4 * half + 4; j++) {
                    BLK_VI wv[BLK_NV];
                    QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) wv[v] = BLK_LOADI(pg + (size_t)j * BLK_MM_ROWS * 4 + v * BLK_VL * 4);
                    QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                        int32_t xv;
                        memcpy(&xv, xq[t] + gl * 32 + 4 * j, 4);
                        const BLK_VI b = BLK_SET1I(xv);
                        QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) a[t][v] = BLK_DPBUSD(a[t][v], wv[v], b);
                    }
                }
                QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                    QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) {
                        part[t][v] = half ? BLK_ADDI(part[t][v], BLK_MULLO(sh[v], a[t][v])) : BLK_MULLO(sl[v], a[t][v]);
                    }
                }
            }
            QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) a[t][v] = part[t][v];
            }
#else
            BLK_VI lh[BLK_NV];
            QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) lh[v] = BLK_LOADI(pk->m_lh + gl * BLK_MM_ROWS + v * BLK_VL);
            QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                const int32_t lo = BLK_P(sum16)(xq[t] + gl * 32), hi = xsum[t][gl] - lo;
                const BLK_VI xp = BLK_SET1I((int)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16)));
                QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) a[t][v] = BLK_SUBI(BLK_ZEROI(), BLK_SLLI(BLK_MADD(lh[v], xp), 5));
            }
            for (int half = 0; half < 2; half++) {
                const int32_t* m = half ? pk->m_hi : pk->m_lo;
                BLK_VI mv[BLK_NV];
                QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) mv[v] = BLK_LOADI(m + gl * BLK_MM_ROWS + v * BLK_VL);
                for (int j = 4 * half; j < 4 * half + 4; j++) {
                    BLK_VI wv[BLK_NV];
                    QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) wv[v] = BLK_LOADI(pg + (size_t)j * BLK_MM_ROWS * 4 + v * BLK_VL * 4);
                    QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                        int32_t xv;
                        memcpy(&xv, xq[t] + gl * 32 + 4 * j, 4);
                        const BLK_VI b = BLK_SET1I(xv);
                        QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) a[t][v] = BLK_DPWSSD(a[t][v], BLK_MADDUBS(wv[v], b), mv[v]);
                    }
                }
            }
#endif
        } else {
            QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                const BLK_VI init = kind == 2 ? BLK_SET1I(-(int32_t)((uint32_t)xsum[t][gl] << bias_shift)) : BLK_ZEROI();
                QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) a[t][v] = init;
            }
            QWEN3_UNROLL_FULL(8) for (int j = 0; j < 8; j++) {
                BLK_VI wv[BLK_NV];
                QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) wv[v] = BLK_LOADI(pg + (size_t)j * BLK_MM_ROWS * 4 + v * BLK_VL * 4);
#ifdef BLK_U8_SPLIT
                if (bias_shift == 7) {
                    /* Q8_0's bytes reach 255, past what one vpmaddubsw pair sum holds: u is
                     * split into its low 7 bits and its top bit, 128 * (b7 * x) via vpmaddwd */
                    BLK_VI wl[BLK_NV], wh[BLK_NV];
                    QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) {
                        wl[v] = _mm256_and_si256(wv[v], _mm256_set1_epi8(0x7F));
                        wh[v] = _mm256_and_si256(_mm256_srli_epi16(wv[v], 7), _mm256_set1_epi8(1));
                    }
                    QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                        int32_t xv;
                        memcpy(&xv, xq[t] + gl * 32 + 4 * j, 4);
                        const BLK_VI b = BLK_SET1I(xv);
                        QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) {
                            a[t][v] = BLK_DPBUSD(a[t][v], wl[v], b);
                            a[t][v] = BLK_DPWSSD(a[t][v], BLK_MADDUBS(wh[v], b), _mm256_set1_epi16(128));
                        }
                    }
                    continue;
                }
#endif
                QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
                    int32_t xv;
                    memcpy(&xv, xq[t] + gl * 32 + 4 * j, 4);
                    const BLK_VI b = BLK_SET1I(xv);
                    QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) a[t][v] = BLK_DPBUSD(a[t][v], wv[v], b);
                }
            }
        }
        /* the epilogue, rows in lanes: t = (float)isum * scale (+ (float)xsum * offset),
         * acc = acc + t * xs */
        BLK_VF sv[BLK_NV], ov[BLK_NV];
        QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) {
            sv[v] = BLK_LOADF(pk->scale + gl * BLK_MM_ROWS + v * BLK_VL);
            ov[v] = BLK_LOADF(pk->offset + gl * BLK_MM_ROWS + v * BLK_VL);
        }
        QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
            const BLK_VF xsv = BLK_SET1F(xs[t][gl]);
            const BLK_VF xsf = BLK_SET1F((float)xsum[t][gl]);
            QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) {
                BLK_VF f = BLK_MULF(BLK_CVT(a[t][v]), sv[v]);
                if (kind == 1) f = BLK_ADDF(f, BLK_MULF(xsf, ov[v]));
                acc[t][v] = BLK_ADDF(acc[t][v], BLK_MULF(f, xsv));
            }
        }
    }
    QWEN3_UNROLL_FULL(8) for (int t = 0; t < nt; t++) {
        QWEN3_UNROLL_FULL(2) for (int v = 0; v < BLK_NV; v++) BLK_STOREF(facc[t] + v * BLK_VL, acc[t][v]);
        for (uint32_t i = 0; i < nrows; i++) out[(size_t)(t0 + t) * ld + i] = facc[t][i];
    }
}

/* The weight lines of the pack made next, fetched into L2 a slice per token tile while
 * the current pack is multiplied: packing then reads from cache instead of waiting on DRAM
 * for 16 or 32 rows at once (a pattern the hardware prefetchers follow late).
 * Lines go row by row, each row's in address order. */
typedef struct {
    const uint8_t* base; /* the next pack's first byte of its first row */
    size_t stride;       /* bytes from one row to the next */
    uint32_t lines, next, end, per_tile;
    uint32_t row, line; /* next = row * lines + line */
} BLK_P(Prefetch);

static inline __attribute__((always_inline)) void BLK_P(prefetch)(BLK_P(Prefetch) * pf) {
    for (uint32_t i = 0; i < pf->per_tile && pf->next < pf->end; i++, pf->next++) {
        _mm_prefetch((const char*)(pf->base + (size_t)pf->row * pf->stride + (size_t)pf->line * 64), _MM_HINT_T1);
        if (++pf->line == pf->lines) {
            pf->line = 0;
            pf->row++;
        }
    }
}

/* Every token of the batch against one pack, in tiles of BLK_MM_TOK (the tail by size). */
BLK_TARGET static inline __attribute__((always_inline)) void BLK_P(mm_tiles)(
    float* out, size_t ld, const BLK_P(Pack) * pk, const Qwen3Q8Batch* x, uint32_t g0, uint32_t ngc, int first,
    uint32_t nrows, const int kind, const int bias_shift, BLK_P(Prefetch) * pf) {
    uint32_t t0 = 0;
    for (; t0 + BLK_MM_TOK <= x->n_tokens; t0 += BLK_MM_TOK) {
        BLK_P(prefetch)(pf);
        BLK_P(mm_tile)(out, ld, pk, x, t0, BLK_MM_TOK, g0, ngc, first, nrows, kind, bias_shift);
    }
    BLK_P(prefetch)(pf);
    switch (x->n_tokens - t0) {
        case 7: BLK_P(mm_tile)(out, ld, pk, x, t0, 7, g0, ngc, first, nrows, kind, bias_shift); break;
        case 6: BLK_P(mm_tile)(out, ld, pk, x, t0, 6, g0, ngc, first, nrows, kind, bias_shift); break;
        case 5: BLK_P(mm_tile)(out, ld, pk, x, t0, 5, g0, ngc, first, nrows, kind, bias_shift); break;
        case 4: BLK_P(mm_tile)(out, ld, pk, x, t0, 4, g0, ngc, first, nrows, kind, bias_shift); break;
        case 3: BLK_P(mm_tile)(out, ld, pk, x, t0, 3, g0, ngc, first, nrows, kind, bias_shift); break;
        case 2: BLK_P(mm_tile)(out, ld, pk, x, t0, 2, g0, ngc, first, nrows, kind, bias_shift); break;
        case 1: BLK_P(mm_tile)(out, ld, pk, x, t0, 1, g0, ngc, first, nrows, kind, bias_shift); break;
        default: break;
    }
}

/* Rows [row_begin, row_end) for a whole batch; cols a multiple of 256. */
BLK_TARGET static void BLK_P(mm)(float* out, size_t ld, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                                 uint32_t row_begin, uint32_t row_end) {
    BLK_P(Pack) pk;
    const uint32_t type = w->type, units = w->cols / 256;
    const size_t ub = (size_t)(256 / qwen3_block_values(type)) * qwen3_block_bytes(type);
    const uint32_t tiles = (x->n_tokens + BLK_MM_TOK - 1) / BLK_MM_TOK + 1;
    for (uint32_t r0 = row_begin; r0 < row_end; r0 += BLK_MM_ROWS) {
        const uint32_t nrows = row_end - r0 < BLK_MM_ROWS ? row_end - r0 : BLK_MM_ROWS;
        float* o = out + (r0 - row_begin);
        for (uint32_t u0 = 0; u0 < units; u0 += BLK_MM_UNITS) {
            const uint32_t nu = units - u0 < BLK_MM_UNITS ? units - u0 : BLK_MM_UNITS;
            BLK_P(mm_pack)(&pk, w, r0, nrows, u0, nu);
            /* the pack after this one: the next units, or the next rows' first ones */
            BLK_P(Prefetch) pf = {0};
            uint32_t pf_rows = 0, pf_units = 0;
            if (u0 + nu < units) {
                pf.base = w->data + (size_t)r0 * w->row_bytes + (size_t)(u0 + nu) * ub;
                pf_rows = nrows;
                pf_units = units - (u0 + nu) < BLK_MM_UNITS ? units - (u0 + nu) : BLK_MM_UNITS;
            } else if (r0 + BLK_MM_ROWS < row_end) {
                pf.base = w->data + (size_t)(r0 + BLK_MM_ROWS) * w->row_bytes;
                pf_rows = row_end - (r0 + BLK_MM_ROWS) < BLK_MM_ROWS ? row_end - (r0 + BLK_MM_ROWS) : BLK_MM_ROWS;
                pf_units = units < BLK_MM_UNITS ? units : BLK_MM_UNITS;
            }
            pf.stride = w->row_bytes;
            pf.lines = (uint32_t)((pf_units * ub + 63) / 64);
            pf.end = pf_rows * pf.lines;
            pf.per_tile = (pf.end + tiles - 1) / tiles;
            const uint32_t g0 = u0 * 8, ngc = nu * 8;
            const int first = u0 == 0;
            switch (type) {
                case QWEN3_BLOCK_Q6_K: BLK_P(mm_tiles)(o, ld, &pk, x, g0, ngc, first, nrows, 3, 0, &pf); break;
                case QWEN3_BLOCK_Q4_0: BLK_P(mm_tiles)(o, ld, &pk, x, g0, ngc, first, nrows, 2, 3, &pf); break;
                case QWEN3_BLOCK_Q5_0: BLK_P(mm_tiles)(o, ld, &pk, x, g0, ngc, first, nrows, 2, 4, &pf); break;
                case QWEN3_BLOCK_Q8_0: BLK_P(mm_tiles)(o, ld, &pk, x, g0, ngc, first, nrows, 2, 7, &pf); break;
                default: BLK_P(mm_tiles)(o, ld, &pk, x, g0, ngc, first, nrows, 1, 0, &pf); break;
            }
        }
    }
}

BLK_TARGET void BLK_NAME(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                         uint32_t row_begin, uint32_t row_end) {
    const uint32_t type = w->type;
    if (qwen3_block_values(type) == 0) { /* not a block type: the reference reports nothing either */
        qwen3_matmul_blocks_ref(out, out_stride, w, x, row_begin, row_end);
        return;
    }
#ifdef BLK_ZMM
    /* A few tokens (a speculative draft's verify, a batched step of 2-3 sessions): the
     * rows-in-lanes kernels read each weight once for all of them and unpack nothing to
     * memory, where the GEMM packs every block first. bench-blocks 4096 x 1024, cache-resident
     * (ms, GEMM / rows): Q4_K 2 tokens 0.255 / 0.239, 3: 0.307 / 0.321, 4: 0.324 / 0.400; Q5_K
     * 2: 0.313 / 0.287, 3: 0.332 / 0.395; Q6_K 2: 0.653 / 0.300, 4: 0.748 / 0.536, 5: 0.772 /
     * 0.656, 6: 0.811 / 0.778. From memory (bench-batch on a Q4_K_M file, 1 thread) 3 tokens
     * still go faster through the rows: 45.1 against 39.6 tok/s. */
    const uint32_t rows_upto = type == QWEN3_BLOCK_Q6_K ? 5 : type == QWEN3_BLOCK_Q4_K || type == QWEN3_BLOCK_Q5_K ? 3 : 0;
#else
    const uint32_t rows_upto = 0;
#endif
    if (x->n_tokens >= BLK_MM_MIN_TOKENS && x->n_tokens > rows_upto && w->cols % 256 == 0) {
        BLK_P(mm)(out, out_stride, w, x, row_begin, row_end);
        return;
    }
    /* The K-quants of the files people use (Q4_K_M: Q4_K and Q6_K; Q5_K_M: Q5_K and Q6_K)
     * each get a copy of the row loop with their type a constant, so its tests on the type
     * fold away; the other types share one. With 512-bit vectors, the three take their
     * rows-in-lanes kernels for each group of 8 rows (BLK_P(gathers_ok)). */
#define BLK_ROWS_OF(T, EIGHT)                                                                                        \
    do {                                                                                                             \
        uint32_t r = row_begin;                                                                                      \
        for (; row_end - r >= BLK_ROWS; r += BLK_ROWS) EIGHT;                                                        \
        for (; r < row_end; r++) BLK_P(rows)(out, out_stride, w, x, r, row_begin, row_end, 1, (T));                 \
    } while (0)
#define BLK_EIGHT(T) BLK_P(rows)(out, out_stride, w, x, r, row_begin, row_end, BLK_ROWS, (T))
#ifdef BLK_ZMM
    const int gathers = BLK_P(gathers_ok)(w);
#define BLK_EIGHT_K(T, CALL) (gathers ? CALL : BLK_EIGHT(T))
#else
#define BLK_EIGHT_K(T, CALL) BLK_EIGHT(T)
#endif
    switch (type) {
        case QWEN3_BLOCK_Q4_K:
            BLK_ROWS_OF(QWEN3_BLOCK_Q4_K,
                        BLK_EIGHT_K(QWEN3_BLOCK_Q4_K, BLK_P(rows8_q4k)(out, out_stride, w, x, r, row_begin, row_end, 0)));
            break;
        case QWEN3_BLOCK_Q5_K:
            BLK_ROWS_OF(QWEN3_BLOCK_Q5_K,
                        BLK_EIGHT_K(QWEN3_BLOCK_Q5_K, BLK_P(rows8_q4k)(out, out_stride, w, x, r, row_begin, row_end, 1)));
            break;
        case QWEN3_BLOCK_Q6_K:
            BLK_ROWS_OF(QWEN3_BLOCK_Q6_K,
                        BLK_EIGHT_K(QWEN3_BLOCK_Q6_K, BLK_P(rows8_q6k)(out, out_stride, w, x, r, row_begin, row_end)));
            break;
        default: BLK_ROWS_OF(type, BLK_EIGHT(type)); break;
    }
#undef BLK_EIGHT_K
#undef BLK_EIGHT
#undef BLK_ROWS_OF
}

#undef BLK_ROWS
#undef BLK_MM_UNITS
#undef BLK_MM_G
#undef BLK_VL
#undef BLK_VI
#undef BLK_VF
#undef BLK_LOADI
#undef BLK_LOADF
#undef BLK_STOREF
#undef BLK_SET1I
#undef BLK_SET1F
#undef BLK_ZEROI
#undef BLK_SUBI
#undef BLK_ADDI
#undef BLK_MULLO
#undef BLK_SLLI
#undef BLK_MADD
#undef BLK_MADDUBS
#undef BLK_CVT
#undef BLK_MULF
#undef BLK_ADDF
#undef BLK_NV
