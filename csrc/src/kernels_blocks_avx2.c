/*
 * kernels_blocks_avx2.c - the block-weight product (kernels.h, Qwen3MatmulBlocksFn) for every
 * block type on the x86 tiers: one body (kernels_blocks_x86.h) built once per tier with its
 * integer dot product: here AVX2 (maddubs + madd) and AVX-VNNI (vpdpbusd); AVX-512 VNNI in
 * kernels_blocks_avx512.c (its own file, so older compilers can build it with file-wide
 * flags, tools/clang.ts).
 */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bytes.h"
#include "kernels.h"
#include "kernels_float.h"

#define BLK_CAT2(a, b) a##b
#define BLK_CAT(a, b) BLK_CAT2(a, b)

/* avx2: maddubs pairs (never saturating here), then madd by ones into int32 */
#define BLK_TARGET __attribute__((target("avx2,fma")))
#define BLK_DOT32(w, x) _mm256_madd_epi16(_mm256_maddubs_epi16((w), (x)), _mm256_set1_epi16(1))
/* Q8_0's bytes (up to 255) would saturate a maddubs pair: their low 7 bits and their top
 * bit go through it separately (at most 2 * 127 * 128 per pair), the top bit's times 128 */
#define BLK_DOT32_U8(w, x)                                                                                     \
    _mm256_add_epi32(BLK_DOT32(_mm256_and_si256((w), _mm256_set1_epi8(0x7F)), (x)),                          \
                     _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16((w), 7),      \
                                                                             _mm256_set1_epi8(1)),            \
                                                            (x)),                                            \
                                       _mm256_set1_epi16(128)))
#define BLK_U8_SPLIT 1
#define BLK_DPBUSD(a, w, x) _mm256_add_epi32((a), BLK_DOT32(w, x))
#define BLK_DPWSSD(a, p, m) _mm256_add_epi32((a), _mm256_madd_epi16((p), (m)))
#define BLK_MM_ROWS 16
#define BLK_MM_TOK 4
#define BLK_MM_MIN_TOKENS 2
#define BLK_NAME qwen3_matmul_blocks_avx2
#define BLK_P(name) BLK_CAT(avx2_, name)
#include "kernels_blocks_x86.h"
#undef BLK_TARGET
#undef BLK_DOT32
#undef BLK_NAME
#undef BLK_DPBUSD
#undef BLK_DOT32_U8
#undef BLK_U8_SPLIT
#undef BLK_Q6_MULLO
#undef BLK_DPWSSD
#undef BLK_MM_TOK
#undef BLK_MM_MIN_TOKENS
#undef BLK_MM_ROWS
#undef BLK_P

/* avxvnni: vpdpbusd (VEX), exact int32 sums of four products */
#define BLK_TARGET __attribute__((target("avx2,fma,avxvnni")))
#define BLK_DOT32(w, x) _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), (w), (x))
#define BLK_Q6_MULLO 1
#define BLK_DOT32_U8(w, x) BLK_DOT32(w, x)
#define BLK_DPBUSD(a, w, x) _mm256_dpbusd_avx_epi32((a), (w), (x))
#define BLK_DPWSSD(a, p, m) _mm256_dpwssd_avx_epi32((a), (p), (m))
#define BLK_MM_ROWS 16
#define BLK_MM_TOK 4
#define BLK_MM_MIN_TOKENS 2
#define BLK_NAME qwen3_matmul_blocks_avxvnni
#define BLK_P(name) BLK_CAT(avxvnni_, name)
#include "kernels_blocks_x86.h"
#undef BLK_TARGET
#undef BLK_DOT32
#undef BLK_NAME
#undef BLK_DPBUSD
#undef BLK_DOT32_U8
#undef BLK_U8_SPLIT
#undef BLK_Q6_MULLO
#undef BLK_DPWSSD
#undef BLK_MM_TOK
#undef BLK_MM_MIN_TOKENS
#undef BLK_MM_ROWS
#undef BLK_P
