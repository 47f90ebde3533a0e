/* kernels_transpose_avx512.h - a 16 x 16 transpose of 32-bit elements in AVX-512 registers,
 * shared by the avx512vnni tier (weight packing, kernels_avx512.c) and the amx tier (its
 * running sums to and from the output rows, kernels_amx.c). Data movement only: no value
 * changes, so it can never change a result's bits. Include from x86_64 files only. */
#ifndef QWEN3_KERNELS_TRANSPOSE_AVX512_H
#define QWEN3_KERNELS_TRANSPOSE_AVX512_H

#include <immintrin.h>

#include "kernels.h"

/* r[i] holds row i's 16 elements; afterwards r[k] holds element k of rows 0..15. */
__attribute__((target("avx512f,evex512"), always_inline)) static inline void qwen3_transpose16_avx512(__m512i r[16]) {
    __m512i t[16], u[16];
    QWEN3_UNROLL_FULL(8) for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* u[4i + m], 128-bit lane L: element 4L + m of rows 4i .. 4i+3. */
    QWEN3_UNROLL_FULL(4) for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    QWEN3_UNROLL_FULL(4) for (int m = 0; m < 4; m++) {
        const __m512i x0 = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i x1 = _mm512_shuffle_i32x4(u[m], u[4 + m], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512i y0 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i y1 = _mm512_shuffle_i32x4(u[8 + m], u[12 + m], _MM_SHUFFLE(3, 2, 3, 2));
        r[m] = _mm512_shuffle_i32x4(x0, y0, _MM_SHUFFLE(2, 0, 2, 0));
        r[4 + m] = _mm512_shuffle_i32x4(x0, y0, _MM_SHUFFLE(3, 1, 3, 1));
        r[8 + m] = _mm512_shuffle_i32x4(x1, y1, _MM_SHUFFLE(2, 0, 2, 0));
        r[12 + m] = _mm512_shuffle_i32x4(x1, y1, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

#endif
