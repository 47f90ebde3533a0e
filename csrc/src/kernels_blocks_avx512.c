/*
 * kernels_blocks_avx512.c - the block-weight product of the avx512vnni tier: the body of
 * kernels_blocks_x86.h with vpdpbusd (EVEX) on 256-bit registers (see kernels_blocks_avx2.c).
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

/* avx512vnni: vpdpbusd (EVEX) on 256-bit registers */
#define BLK_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,evex512")))
#define BLK_DOT32(w, x) _mm256_dpbusd_epi32(_mm256_setzero_si256(), (w), (x))
#define BLK_ZMM 1
#define BLK_Q6_MULLO 1
#define BLK_DOT32_U8(w, x) BLK_DOT32(w, x)
#define BLK_DPBUSD(a, w, x) _mm512_dpbusd_epi32((a), (w), (x))
#define BLK_DPWSSD(a, p, m) _mm512_dpwssd_epi32((a), (p), (m))
#define BLK_MM_ROWS 32
#define BLK_MM_TOK 4
#define BLK_MM_MIN_TOKENS 2
#define BLK_NAME qwen3_matmul_blocks_avx512vnni
#define BLK_P(name) BLK_CAT(avx512vnni_, name)
#include "kernels_blocks_x86.h"
#undef BLK_TARGET
#undef BLK_DOT32
#undef BLK_NAME
#undef BLK_DPBUSD
#undef BLK_DOT32_U8
#undef BLK_DPWSSD
#undef BLK_MM_TOK
#undef BLK_MM_MIN_TOKENS
#undef BLK_MM_ROWS
#undef BLK_ZMM
#undef BLK_Q6_MULLO
#undef BLK_P
