/* kernels_amx_emu.c - the amx tier's batched product (kernels_amx_body.h) on tiles emulated
 * in plain C, for the tests: qwen3_matmul_q8_amx_emulated. It is baseline x86_64 code (no ISA
 * in its name, so no -m flags anywhere), so the tests run the tier's tiling on any x86_64 CPU;
 * the real variant is kernels_amx.c (docs/numerics.md#amx).
 *
 * The semantics are Intel's SDM's: LDTILECFG zeroes every tile; TILELOADD / TILESTORED move
 * the configured rows and bytes per row (a load zeroes the rest); TDPBSSD:
 * C[m][n] += sum over k < K/4, i < 4 of sext(A[m][4k+i]) * sext(B[k][4n+i]) in wrapping int32.
 */
#if defined(__x86_64__) || defined(_M_X64)
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kernels_amx.h"

/* An operation the hardware would refuse (#UD: no configuration, a shape mismatch, a tile
 * used twice in one tdpbssd) counts a fault instead, which the tests require to stay 0. */

static void amx_emu_config(AmxEmu* e, const AmxTileConfig* c) {
    memset(e->data, 0, sizeof e->data); /* LDTILECFG zeroes every tile */
    e->configured = 0;
    if (c->palette != 1 || c->start_row != 0) {
        e->faults++;
        return;
    }
    for (int t = 0; t < 8; t++) {
        if (c->rows[t] > 16 || c->colsb[t] > 64) {
            e->faults++;
            return;
        }
        e->rows[t] = c->rows[t];
        e->colsb[t] = c->colsb[t];
    }
    e->configured = 1;
}

static int amx_emu_valid(AmxEmu* e, int t) {
    if (!e->configured || t < 0 || t > 7 || e->rows[t] == 0) {
        e->faults++;
        return 0;
    }
    return 1;
}

static void amx_emu_zero(AmxEmu* e, int t) {
    if (amx_emu_valid(e, t)) memset(e->data[t], 0, sizeof e->data[t]);
}

/* Rows past the configured ones and bytes past colsb in a row are zeroed. */
static void amx_emu_load(AmxEmu* e, int t, const void* p, size_t stride) {
    if (!amx_emu_valid(e, t)) return;
    memset(e->data[t], 0, sizeof e->data[t]);
    for (uint32_t r = 0; r < e->rows[t]; r++) memcpy(e->data[t][r], (const uint8_t*)p + r * stride, e->colsb[t]);
}

static void amx_emu_store(AmxEmu* e, int t, void* p, size_t stride) {
    if (!amx_emu_valid(e, t)) return;
    for (uint32_t r = 0; r < e->rows[t]; r++) memcpy((uint8_t*)p + r * stride, e->data[t][r], e->colsb[t]);
}

/* TDPBSSD tc, ta, tb (Intel SDM, "TDPBSSD/TDPBSUD/TDPBUSD/TDPBUUD"): K = colsb(A) / 4 must
 * equal rows(B), colsb(C) = colsb(B), rows(C) = rows(A), and the three tiles differ. */
static void amx_emu_dpbssd(AmxEmu* e, int tc, int ta, int tb) {
    if (!amx_emu_valid(e, tc) || !amx_emu_valid(e, ta) || !amx_emu_valid(e, tb)) return;
    if (tc == ta || tc == tb || ta == tb || e->colsb[ta] % 4 != 0 || e->colsb[ta] / 4 != e->rows[tb] ||
        e->colsb[tc] != e->colsb[tb] || e->rows[tc] != e->rows[ta] || e->colsb[tc] % 4 != 0) {
        e->faults++;
        return;
    }
    const uint32_t m_n = e->rows[tc], k_n = e->colsb[ta] / 4u, n_n = e->colsb[tc] / 4u;
    for (uint32_t m = 0; m < m_n; m++) {
        for (uint32_t k = 0; k < k_n; k++) {
            const int8_t* a = (const int8_t*)&e->data[ta][m][4 * k];
            for (uint32_t n = 0; n < n_n; n++) {
                const int8_t* b = (const int8_t*)&e->data[tb][k][4 * n];
                uint32_t c;
                memcpy(&c, &e->data[tc][m][4 * n], 4);
                for (int i = 0; i < 4; i++) c += (uint32_t)((int32_t)a[i] * (int32_t)b[i]); /* wraps */
                memcpy(&e->data[tc][m][4 * n], &c, 4);
            }
        }
    }
}

#define AMX_CAT2(a, b) a##b
#define AMX_CAT(a, b) AMX_CAT2(a, b)
#define AMX_ATTR
#define AMX_P(name) AMX_CAT(emu_, name)
#define T_CONFIG(e, cfg) amx_emu_config(e, cfg)
#define T_ZERO(e, t) amx_emu_zero(e, t)
#define T_LOAD(e, t, p, s) amx_emu_load(e, t, p, s)
#define T_STORE(e, t, p, s) amx_emu_store(e, t, p, s)
#define T_DPBSSD(e, c, a, b) amx_emu_dpbssd(e, c, a, b)
#define T_RELEASE(e) ((void)0)
#define PACK_X(xp, xs, x, ts0, ntb, ntiles, c0, nc) amx_pack_x_plain(xp, xs, x, ts0, ntb, ntiles, c0, nc)
#define ACC_LOAD(acc, o, ld, nr, ntok, nt16, zero) amx_acc_load_plain(acc, o, ld, nr, ntok, nt16, zero)
#define ACC_STORE(acc, o, ld, nr, ntok) amx_acc_store_plain(acc, o, ld, nr, ntok)
#include "kernels_amx_body.h"

int qwen3_matmul_q8_amx_emulated(float* out, size_t out_stride, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                                 uint32_t row_begin, uint32_t row_end) {
    if (!amx_shape_ok(w, x)) return 0;
    if (row_begin >= row_end) return 1;
    AmxEmu* e = malloc(sizeof *e);
    if (e == NULL) return -1;
    memset(e, 0, sizeof *e);
    emu_matmul(e, out, out_stride, w, x, row_begin, row_end);
    const int rc = e->faults == 0 ? 1 : -1;
    free(e);
    return rc;
}
#endif
