/* kernels_avx2.c - two 256-bit tiers of the int8 matrix-vector product:
 *   "avx2"    AVX2: vpmaddubsw + vpmaddwd (Haswell .. and every AVX2 AMD core)
 *   "avxvnni" AVX2 + AVX-VNNI: vpdpbusd on 256-bit registers (Alder Lake, Zen 5, ...)
 *
 * Both take 8 rows at a time: each row gets one int32 accumulator per group, the 8
 * accumulators are transposed and reduced into one vector whose lane i is row i's exact
 * int32 group sum, and the float part (cvt, * w_scale, * x_scale, +) runs with rows in
 * lanes, in the scalar reference's order and roundings: bit-identical (kernels.h).
 *
 * Signed x signed with instructions that want an unsigned operand:
 *   avx2:    vpmaddubsw(|w|, x * sign(w)). |w| fits an unsigned byte even for w = -128,
 *            and x * sign(w) is exact for x in [-127, 127] (a vector holding -128, which
 *            the quantiser makes only by wrapping, takes the scalar path). A pair sum is at
 *            most 2 * 128 * 127 = 32512, under the int16 saturation point, so no product
 *            is clipped; vpmaddwd with ones then widens.
 *   avxvnni: vpdpbusd(w ^ 0x80, x) = sum (w + 128) * x, exact for any int8, minus
 *            128 * sum(x), which is the same for every row and so computed once per group
 *            and used, negated, as each accumulator's start value.
 * Group sizes that are not a multiple of 32 take the scalar reference (same numerics).
 */
#include <immintrin.h>
#include <stddef.h>

#include "kernels.h"

#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_VNNI __attribute__((target("avx2,fma,avxvnni")))

#define ROWS 8 /* rows per block: one per float lane of a 256-bit register */

/* Row loops fully unrolled so the 8 accumulators stay in registers. */
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define UNROLL _Pragma("GCC unroll 8")
#else
#define UNROLL
#endif

/* The next block (8 rows on), prefetched in address order as kernels_avx512.c explains:
 * a 32-byte step over 8 rows consumes 256 bytes, so each step prefetches the next
 * block's 4 lines at (col / 32) * 256. */
#define PREFETCH_STEP(next, col, i)                                                               \
    do {                                                                                          \
        if ((i) < 4) _mm_prefetch((const char*)((next) + ((col) / 32) * 256 + (size_t)(i) * 64), _MM_HINT_T0); \
    } while (0)

/* Lane i = the total of accumulator i (8 accumulators of 8 int32). Written as a macro
 * body shared by both targets: a helper function would need one copy per target. */
#define REDUCE8(a, out)                                                                           \
    do {                                                                                          \
        __m256i t_[4], u_[2];                                                                     \
        UNROLL for (int j_ = 0; j_ < 4; j_++)                                                     \
            t_[j_] = _mm256_add_epi32(_mm256_unpacklo_epi32(a[2 * j_], a[2 * j_ + 1]),            \
                                      _mm256_unpackhi_epi32(a[2 * j_], a[2 * j_ + 1]));           \
        UNROLL for (int j_ = 0; j_ < 2; j_++)                                                     \
            u_[j_] = _mm256_add_epi32(_mm256_unpacklo_epi64(t_[2 * j_], t_[2 * j_ + 1]),          \
                                      _mm256_unpackhi_epi64(t_[2 * j_], t_[2 * j_ + 1]));         \
        /* u_[0] = rows 0-3 per 128-bit half, u_[1] = rows 4-7: add the halves. */              \
        out = _mm256_add_epi32(_mm256_permute2x128_si256(u_[0], u_[1], 0x20),                     \
                               _mm256_permute2x128_si256(u_[0], u_[1], 0x31));                    \
    } while (0)

/* acc = acc + ((float)isum * w_scale) * x_scale with rows in lanes. */
#define ACCUMULATE(acc, isum, scale_idx, ws_g, xs)                                                \
    acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum),                \
                                                         _mm256_i32gather_ps(ws_g, scale_idx, 4)), \
                                           _mm256_set1_ps(xs)))

/* Block set-up shared by both tiers: rows past nrows repeat the last row (in bounds,
 * results dropped), so one code path serves full and tail blocks. */
#define BLOCK_SETUP                                                                               \
    const size_t n = w->cols;                                                                     \
    const uint32_t gs = w->group_size;                                                            \
    const uint32_t ng = (uint32_t)(n / gs);                                                       \
    const int8_t* base = w->q + (size_t)r0 * n;                                                   \
    const float* sbase = w->s + (size_t)r0 * ng;                                                  \
    size_t off[ROWS];                                                                             \
    int idx[ROWS];                                                                                \
    UNROLL for (uint32_t i = 0; i < ROWS; i++) {                                                  \
        const uint32_t row = i < nrows ? i : nrows - 1;                                           \
        off[i] = (size_t)row * n;                                                                 \
        idx[i] = (int)(row * ng);                                                                 \
    }                                                                                             \
    const int8_t* next = base + (size_t)ROWS * n

#define BLOCK_STORE                                                                               \
    if (nrows == ROWS) {                                                                          \
        _mm256_storeu_ps(out, acc);                                                               \
    } else {                                                                                      \
        float tmp_[ROWS];                                                                         \
        _mm256_storeu_ps(tmp_, acc);                                                              \
        for (uint32_t i = 0; i < nrows; i++) out[i] = tmp_[i];                                    \
    }

/* ------------------------------------------------------------------------------------
 * avx2
 * ---------------------------------------------------------------------------------- */

TARGET_AVX2 static inline __attribute__((always_inline)) void block8_avx2(float* out, const Qwen3Q8Matrix* w,
                                                                          const Qwen3Q8Vector* x, uint32_t r0,
                                                                          uint32_t nrows, const int prefetch) {
    BLOCK_SETUP;
    const __m256i scale_idx = _mm256_loadu_si256((const __m256i*)idx);
    const __m256i ones16 = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    __m256i a[ROWS];
    for (uint32_t g = 0; g < ng; g++) {
        const size_t col = (size_t)g * gs;
        UNROLL for (int i = 0; i < ROWS; i++) a[i] = _mm256_setzero_si256();
        for (uint32_t k = 0; k < gs; k += 32) {
            const __m256i xv = _mm256_loadu_si256((const __m256i*)(x->q + col + k));
            UNROLL for (int i = 0; i < ROWS; i++) {
                const int8_t* p = base + off[i] + col + k;
                if (prefetch) PREFETCH_STEP(next, col + k, i);
                const __m256i wv = _mm256_loadu_si256((const __m256i*)p);
                const __m256i prod = _mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(xv, wv));
                a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(prod, ones16));
            }
        }
        __m256i isum;
        REDUCE8(a, isum);
        ACCUMULATE(acc, isum, scale_idx, sbase + g, x->s[g]);
    }
    BLOCK_STORE
}

/* 1 when some activation is -128: x * sign(w) would overflow int8 there. The quantiser
 * only makes -128 by wrapping (activations so small that their scale is subnormal,
 * quant.c), so such vectors are rare and go to the scalar reference. */
TARGET_AVX2 static int has_int8_min(const int8_t* q, uint32_t n) {
    const __m256i min = _mm256_set1_epi8(-128);
    __m256i any = _mm256_setzero_si256();
    uint32_t i = 0;
    for (; i + 32 <= n; i += 32) any = _mm256_or_si256(any, _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i*)(q + i)), min));
    int found = !_mm256_testz_si256(any, any);
    for (; i < n; i++) found |= q[i] == -128;
    return found;
}

TARGET_AVX2 static void matvec_q8_avx2(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                                       uint32_t row_begin, uint32_t row_end) {
    if (w->group_size % 32 != 0 || has_int8_min(x->q, x->n)) {
        qwen3_kernels_scalar.matvec_q8(out, w, x, row_begin, row_end);
        return;
    }
    uint32_t r = row_begin;
    /* Prefetch only rows this call reads (the next ones belong to another thread). */
    for (; row_end - r >= 2 * ROWS; r += ROWS) block8_avx2(out + (r - row_begin), w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) block8_avx2(out + (r - row_begin), w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
}

static void matmul_q8_avx2(float* out, size_t out_stride, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                         uint32_t row_begin, uint32_t row_end) {
    qwen3_matmul_q8_by_matvec(matvec_q8_avx2, out, out_stride, w, x, row_begin, row_end);
}

const Qwen3KernelTable qwen3_kernels_avx2 = {
    .name = "avx2",
    .matvec_q8 = matvec_q8_avx2,
    .matmul_q8 = matmul_q8_avx2,
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = qwen3_attn_scores_ref,
    .attn_values = qwen3_attn_values_ref,
    .softmax = qwen3_softmax_rows_ref,
    .silu_mul = qwen3_silu_mul_ref,
};

/* ------------------------------------------------------------------------------------
 * avxvnni
 * ---------------------------------------------------------------------------------- */

TARGET_VNNI static inline __attribute__((always_inline)) void block8_vnni(float* out, const Qwen3Q8Matrix* w,
                                                                          const Qwen3Q8Vector* x, uint32_t r0,
                                                                          uint32_t nrows, const int prefetch) {
    BLOCK_SETUP;
    const __m256i scale_idx = _mm256_loadu_si256((const __m256i*)idx);
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    __m256 acc = _mm256_setzero_ps();
    __m256i a[ROWS];
    for (uint32_t g = 0; g < ng; g++) {
        const size_t col = (size_t)g * gs;
        __m256i corr = _mm256_setzero_si256();
        for (uint32_t k = 0; k < gs; k += 32)
            corr = _mm256_dpbusd_avx_epi32(corr, bias, _mm256_loadu_si256((const __m256i*)(x->q + col + k)));
        corr = _mm256_sub_epi32(_mm256_setzero_si256(), corr);
        UNROLL for (int i = 0; i < ROWS; i++) a[i] = corr;
        for (uint32_t k = 0; k < gs; k += 32) {
            const __m256i xv = _mm256_loadu_si256((const __m256i*)(x->q + col + k));
            UNROLL for (int i = 0; i < ROWS; i++) {
                const int8_t* p = base + off[i] + col + k;
                if (prefetch) PREFETCH_STEP(next, col + k, i);
                const __m256i wv = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)p), bias);
                a[i] = _mm256_dpbusd_avx_epi32(a[i], wv, xv);
            }
        }
        __m256i isum;
        REDUCE8(a, isum);
        ACCUMULATE(acc, isum, scale_idx, sbase + g, x->s[g]);
    }
    BLOCK_STORE
}

TARGET_VNNI static void matvec_q8_avxvnni(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                                          uint32_t row_begin, uint32_t row_end) {
    if (w->group_size % 32 != 0) {
        qwen3_kernels_scalar.matvec_q8(out, w, x, row_begin, row_end);
        return;
    }
    uint32_t r = row_begin;
    /* Prefetch only rows this call reads (the next ones belong to another thread). */
    for (; row_end - r >= 2 * ROWS; r += ROWS) block8_vnni(out + (r - row_begin), w, x, r, ROWS, 1);
    for (; r < row_end; r += ROWS) block8_vnni(out + (r - row_begin), w, x, r, row_end - r < ROWS ? row_end - r : ROWS, 0);
}

static void matmul_q8_avxvnni(float* out, size_t out_stride, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                         uint32_t row_begin, uint32_t row_end) {
    qwen3_matmul_q8_by_matvec(matvec_q8_avxvnni, out, out_stride, w, x, row_begin, row_end);
}

const Qwen3KernelTable qwen3_kernels_avxvnni = {
    .name = "avxvnni",
    .matvec_q8 = matvec_q8_avxvnni,
    .matmul_q8 = matmul_q8_avxvnni,
    .quantize_row = qwen3_quantize_q8_token,
    .attn_scores = qwen3_attn_scores_ref,
    .attn_values = qwen3_attn_values_ref,
    .softmax = qwen3_softmax_rows_ref,
    .silu_mul = qwen3_silu_mul_ref,
};
