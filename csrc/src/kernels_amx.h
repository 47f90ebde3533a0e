/*
 * kernels_amx.h - what the amx tier's two variants share (kernels_amx.c: real tiles, x86_64
 * only; kernels_amx_emu.c: emulated tiles, baseline x86_64 code): the pass sizes, the shapes
 * that run on tiles, the tile configuration, the emulated tile state and the packing of
 * activations into B tiles. The layout is described in kernels_amx.c.
 */
#ifndef QWEN3_KERNELS_AMX_H
#define QWEN3_KERNELS_AMX_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define AMX_XP_BYTES 131072u   /* packed activations per pass: 128 tokens x 1024 columns */
#define AMX_CHUNK_MAX 1024u    /* columns per pass, at most */
#define AMX_PASS_TOKENS 128u   /* tokens per pass, at most (a dense forward block) */

/* Tokens per pass: 128 (QWEN3_FORWARD_BLOCK: a block's weights stream from memory once)
 * unless one group of them would overflow the scratch. */
static inline uint32_t amx_tokens_per_pass(uint32_t gs) {
    return AMX_PASS_TOKENS * gs <= AMX_XP_BYTES ? AMX_PASS_TOKENS : AMX_PASS_TOKENS / 2;
}
/* Columns per pass: whole groups, at most AMX_CHUNK_MAX, tokens_per_pass x columns <=
 * AMX_XP_BYTES. Whole 1024-column rows ran 25% faster than 512-column chunks on the AMX
 * Xeon (bench-matvec --tier amx, 3072 x 1024, 128 tokens): fewer moves of the running
 * sums, longer weight streams. The scratch is on the stack (~170 KB in all): the tier runs
 * on Linux only, whose threads have megabytes. */
static inline uint32_t amx_chunk_cols(uint32_t gs) {
    const uint32_t c = (AMX_XP_BYTES / amx_tokens_per_pass(gs)) / gs * gs;
    return c < AMX_CHUNK_MAX ? c : AMX_CHUNK_MAX / gs * gs;
}

/* The running sums of a 32-row block over a pass's tokens, acc[row][token], from and to
 * the output rows out[token * ld + row] (tokens 0 .. ntok-1, rows 0 .. nr-1). Loading sets
 * every token lane of the pass's tiles (up to nt16, a multiple of 16), those past ntok and
 * all of them when `zero` to 0. Plain C here (the emulated variant); kernels_amx.c has the
 * same moves with AVX-512 transposes. */
typedef float AmxAcc[32][AMX_PASS_TOKENS];

static inline void amx_acc_load_plain(AmxAcc acc, const float* out, size_t ld, uint32_t nr, uint32_t ntok,
                                      uint32_t nt16, int zero) {
    for (uint32_t r = 0; r < nr; r++) {
        for (uint32_t t = 0; t < nt16; t++) acc[r][t] = zero || t >= ntok ? 0.0f : out[(size_t)t * ld + r];
    }
}

static inline void amx_acc_store_plain(const AmxAcc acc, float* out, size_t ld, uint32_t nr, uint32_t ntok) {
    for (uint32_t t = 0; t < ntok; t++) {
        for (uint32_t r = 0; r < nr; r++) out[(size_t)t * ld + r] = acc[r][t];
    }
}

/* The shapes the tile body takes; everything else goes to avx512vnni. */
static inline int amx_shape_ok(const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x) {
    const uint32_t gs = w->group_size;
    return x->n_tokens >= AMX_MIN_TOKENS && gs >= 64 && gs % 64 == 0 && gs <= AMX_CHUNK_MAX && w->cols % gs == 0 &&
           x->n == w->cols && x->group_size == gs;
}

/* The 64-byte LDTILECFG operand (palette 1): tiles 0-7 all 16 rows x 64 bytes, which serves
 * A (16 rows x K = 64 bytes), B (K / 4 = 16 rows x 16 tokens x 4 bytes) and C (16 x 16 int32). */
typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} AmxTileConfig;

_Static_assert(sizeof(AmxTileConfig) == 64, "the LDTILECFG operand is 64 bytes");

static inline void amx_config_init(AmxTileConfig* c) {
    memset(c, 0, sizeof *c);
    c->palette = 1;
    for (int t = 0; t < 8; t++) {
        c->colsb[t] = 64;
        c->rows[t] = 16;
    }
}

/* Tokens ts0 .. ts0+ntb-1, columns [c0, c0 + nc) of x as B tiles: tile (tt, s), for 16
 * tokens and the 64 columns c0 + 64s.., at xp + (tt * nc / 64 + s) * 1024 with byte
 * k * 64 + 4n + i = token 16tt + n's column c0 + 64s + 4k + i. Their scales go to
 * xs[(tt * ngc + gl) * 16 + n]. Tokens past ntb in the last tile are zero. Plain C here
 * (the emulated variant; amx_pack_scales is shared); kernels_amx.c moves the same bytes
 * with AVX-512 transposes. */
static inline void amx_pack_scales(float* xs, const Qwen3Q8Batch* x, uint32_t ts0, uint32_t ntb, uint32_t ntiles,
                                   uint32_t c0, uint32_t nc) {
    const uint32_t gs = x->group_size, ng = x->n / gs, ngc = nc / gs, g0 = c0 / gs;
    for (uint32_t tt = 0; tt < ntiles; tt++) {
        for (uint32_t n = 0; n < 16; n++) {
            const uint32_t tok = 16 * tt + n;
            float* sdst = xs + (size_t)tt * ngc * 16 + n;
            if (tok >= ntb) {
                for (uint32_t gl = 0; gl < ngc; gl++) sdst[gl * 16] = 0.0f;
                continue;
            }
            const float* ssrc = x->s + (size_t)(ts0 + tok) * ng + g0;
            for (uint32_t gl = 0; gl < ngc; gl++) sdst[gl * 16] = ssrc[gl];
        }
    }
}

static inline void amx_pack_x_plain(int8_t* xp, float* xs, const Qwen3Q8Batch* x, uint32_t ts0, uint32_t ntb,
                                    uint32_t ntiles, uint32_t c0, uint32_t nc) {
    const uint32_t steps = nc / 64;
    for (uint32_t tt = 0; tt < ntiles; tt++) {
        for (uint32_t n = 0; n < 16; n++) {
            const uint32_t tok = 16 * tt + n;
            int8_t* dst = xp + (size_t)tt * steps * 1024 + 4 * n;
            if (tok >= ntb) {
                for (uint32_t s = 0; s < steps; s++) {
                    for (uint32_t k = 0; k < 16; k++) memset(dst + (size_t)s * 1024 + k * 64, 0, 4);
                }
                continue;
            }
            const int8_t* src = x->q + (size_t)(ts0 + tok) * x->n + c0;
            for (uint32_t s = 0; s < steps; s++) {
                for (uint32_t k = 0; k < 16; k++) memcpy(dst + (size_t)s * 1024 + k * 64, src + (size_t)s * 64 + 4 * k, 4);
            }
        }
    }
    amx_pack_scales(xs, x, ts0, ntb, ntiles, c0, nc);
}

/* Eight 16 x 64-byte tiles in memory (kernels_amx_emu.c); the real variant passes NULL. */
typedef struct {
    _Alignas(64) uint8_t data[8][16][64];
    uint16_t colsb[8];
    uint8_t rows[8];
    int configured;
    uint32_t faults;
} AmxEmu;

#endif
