/* kernels_amx.c - the "amx" tier: the avx512vnni tier with its batched product (prefill)
 * on AMX tiles: tdpbssd, signed x signed int8 into int32, 16 x 16 sums per instruction.
 *
 * Shape of the work (kernels_amx_body.h): C tiles hold 16 weight rows by 16 tokens. A tiles
 * are 16 weight rows x 64 bytes loaded straight from the matrix (row stride = cols), so the
 * weights are never repacked; B tiles are the activations of 16 tokens in the 4-byte
 * interleaved layout tdpbssd wants (B[k][4n + i] = token n's byte 4k + i of the 64), packed
 * once per call into a 128 KB scratch (a pass of up to 128 tokens by up to 1024 columns at a
 * time). Two A and two B tiles feed four C tiles: 32 rows x 32 tokens. A group is one or
 * more 64-byte steps (group sizes that are a multiple of 64, up to 1024), after which its
 * four C tiles are stored and the float epilogue adds each (row, token) sum in the scalar
 * order: acc = acc + ((float)isum * w_scale) * x_scale (kernels.h). The integer sums are
 * exact (at most 1024 products of magnitude <= 2^14: no int32 wrap), so they equal the
 * scalar and VNNI sums, and every output has the bits of matvec_q8 for its token.
 *
 * Other shapes (one token, group sizes that are not a multiple of 64 or exceed 1024) and
 * every other kernel are the avx512vnni tier's. Rows past the end of a row range are never
 * loaded: a partial 16-row half is copied into a zero-padded scratch first.
 *
 * Verifiability (docs/numerics.md#amx): the body is compiled twice, here on the real tile
 * instructions and in kernels_amx_emu.c on a plain-C emulation of them with the semantics of
 * Intel's SDM (TDPBSSD: C[m][n] += sum over k < K/4, i < 4 of sext(A[m][4k+i]) *
 * sext(B[k][4n+i]), int32 wrap-around; TILELOADD/TILESTORED with the configured rows and bytes
 * per row). The C tests
 * run the emulated variant bit for bit against the scalar reference on any x86_64 host; the
 * real one runs where the CPU and OS grant AMX, after a self-check at tier selection
 * (qwen3_amx_unavailable) against avx512vnni on a fixed problem.
 */
#include <immintrin.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "kernels.h"
#include "kernels_amx.h"
#include "kernels_transpose_avx512.h"

#define AMX_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,evex512,amx-tile,amx-int8")))

/* amx_pack_x_plain's bytes, a 16-token by 64-column tile at a time: the tile is the 16 x 16
 * transpose of the tokens' 4-byte column groups. */
AMX_TARGET static void pack_x_avx512(int8_t* xp, float* xs, const Qwen3Q8Batch* x, uint32_t ts0, uint32_t ntb,
                                     uint32_t ntiles, uint32_t c0, uint32_t nc) {
    const uint32_t steps = nc / 64;
    for (uint32_t tt = 0; tt < ntiles; tt++) {
        const uint32_t tn = ntb - 16 * tt < 16 ? ntb - 16 * tt : 16;
        const int8_t* src = x->q + (size_t)(ts0 + 16 * tt) * x->n + c0;
        for (uint32_t s = 0; s < steps; s++) {
            __m512i v[16];
            QWEN3_UNROLL_FULL(16) for (uint32_t n = 0; n < 16; n++) {
                v[n] = n < tn ? _mm512_loadu_si512((const void*)(src + (size_t)n * x->n + (size_t)s * 64))
                              : _mm512_setzero_si512();
            }
            qwen3_transpose16_avx512(v);
            int8_t* dst = xp + ((size_t)tt * steps + s) * 1024;
            QWEN3_UNROLL_FULL(16) for (uint32_t k = 0; k < 16; k++) _mm512_store_si512((void*)(dst + k * 64), v[k]);
        }
    }
    amx_pack_scales(xs, x, ts0, ntb, ntiles, c0, nc);
}

/* The running sums to and from the output rows (amx_acc_load_plain, amx_acc_store_plain in
 * kernels_amx.h), a 16 x 16 block at a time through registers: masked loads and stores touch
 * only rows < nr and tokens < ntok of the output. */
AMX_TARGET static void acc_load_avx512(AmxAcc acc, const float* out, size_t ld, uint32_t nr, uint32_t ntok,
                                       uint32_t nt16, int zero) {
    if (zero) {
        for (uint32_t r = 0; r < nr; r++) memset(acc[r], 0, nt16 * sizeof(float));
        return;
    }
    for (uint32_t h = 0; 16 * h < nr; h++) {
        const uint32_t hr = nr - 16 * h < 16 ? nr - 16 * h : 16;
        const __mmask16 rows = (__mmask16)((1u << hr) - 1);
        for (uint32_t t0 = 0; t0 < nt16; t0 += 16) {
            const uint32_t tn = ntok > t0 ? (ntok - t0 < 16 ? ntok - t0 : 16) : 0;
            const float* src = out + (size_t)t0 * ld + 16 * h;
            __m512i v[16];
            QWEN3_UNROLL_FULL(16) for (uint32_t n = 0; n < 16; n++) {
                /* tokens past ntok: no lanes loaded (nothing read past the output), zeros */
                const __mmask16 m = n < tn ? rows : 0;
                v[n] = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, src + (size_t)n * ld));
            }
            qwen3_transpose16_avx512(v);
            QWEN3_UNROLL_FULL(16) for (uint32_t r = 0; r < 16; r++) {
                if (r < hr) _mm512_store_si512((void*)(acc[16 * h + r] + t0), v[r]);
            }
        }
    }
}

AMX_TARGET static void acc_store_avx512(const AmxAcc acc, float* out, size_t ld, uint32_t nr, uint32_t ntok) {
    for (uint32_t h = 0; 16 * h < nr; h++) {
        const uint32_t hr = nr - 16 * h < 16 ? nr - 16 * h : 16;
        const __mmask16 rows = (__mmask16)((1u << hr) - 1);
        for (uint32_t t0 = 0; t0 < ntok; t0 += 16) {
            const uint32_t tn = ntok - t0 < 16 ? ntok - t0 : 16;
            float* dst = out + (size_t)t0 * ld + 16 * h;
            __m512i v[16];
            QWEN3_UNROLL_FULL(16) for (uint32_t r = 0; r < 16; r++) {
                /* rows past hr hold stale sums: loaded but never stored (masked out) */
                v[r] = _mm512_load_si512((const void*)(acc[16 * h + (r < hr ? r : 0)] + t0));
            }
            qwen3_transpose16_avx512(v);
            QWEN3_UNROLL_FULL(16) for (uint32_t n = 0; n < 16; n++) {
                _mm512_mask_storeu_ps(dst + (size_t)n * ld, n < tn ? rows : 0, _mm512_castsi512_ps(v[n]));
            }
        }
    }
}

/* The real instructions; kernels_amx_emu.c compiles the same body on emulated tiles. */
#define AMX_CAT2(a, b) a##b
#define AMX_CAT(a, b) AMX_CAT2(a, b)
#define AMX_ATTR AMX_TARGET
#define AMX_P(name) AMX_CAT(real_, name)
#define T_CONFIG(e, cfg) _tile_loadconfig(cfg)
#define T_ZERO(e, t) _tile_zero(t)
#define T_LOAD(e, t, p, s) _tile_loadd(t, p, s)
#define T_STORE(e, t, p, s) _tile_stored(t, p, s)
#define T_DPBSSD(e, c, a, b) _tile_dpbssd(c, a, b)
#define T_RELEASE(e) _tile_release()
#define PACK_X(xp, xs, x, ts0, ntb, ntiles, c0, nc) pack_x_avx512(xp, xs, x, ts0, ntb, ntiles, c0, nc)
#define ACC_LOAD(acc, o, ld, nr, ntok, nt16, zero) acc_load_avx512(acc, o, ld, nr, ntok, nt16, zero)
#define ACC_STORE(acc, o, ld, nr, ntok) acc_store_avx512(acc, o, ld, nr, ntok)
#include "kernels_amx_body.h"

static void matmul_q8_amx(float* out, size_t out_stride, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                          uint32_t row_begin, uint32_t row_end) {
    if (!amx_shape_ok(w, x) || row_begin >= row_end) {
        qwen3_kernels_avx512vnni.matmul_q8(out, out_stride, w, x, row_begin, row_end);
        return;
    }
    real_matmul(NULL, out, out_stride, w, x, row_begin, row_end);
}

/* ====================================================================================
 * Availability: CPU, OS permission, self-check - once per process
 * ================================================================================== */

/* A fixed problem covering both row halves, a partial half, a token tail past one pair
 * of tiles and two passes of columns (1024 + 128): rows [3, 40) of 40 x 1152 (group 64),
 * 21 tokens. */
#define SC_ROWS 40u
#define SC_COLS 1152u
#define SC_GS 64u
#define SC_TOK 21u
#define SC_R0 3u

/* NULL when the real tiles agree with avx512vnni bit for bit; else what differed. */
static const char* self_check(char* why, size_t size) {
    const uint32_t ng = SC_COLS / SC_GS, n_out = SC_ROWS - SC_R0;
    int8_t* wq = malloc((size_t)SC_ROWS * SC_COLS);
    float* ws = malloc((size_t)SC_ROWS * ng * sizeof(float));
    int8_t* xq = malloc((size_t)SC_TOK * SC_COLS);
    float* xs = malloc((size_t)SC_TOK * ng * sizeof(float));
    int32_t* sums = malloc((size_t)SC_TOK * ng * sizeof(int32_t));
    float* want = malloc((size_t)SC_TOK * n_out * sizeof(float));
    float* got = malloc((size_t)SC_TOK * n_out * sizeof(float));
    const char* result = NULL;
    if (!wq || !ws || !xq || !xs || !sums || !want || !got) {
        result = "the amx self-check could not allocate its 100 KB problem";
    } else {
        uint64_t s = 0x2545F4914F6CDD1Dull;
#define SC_NEXT() (s = s * 6364136223846793005ull + 1442695040888963407ull, (uint32_t)(s >> 33))
        for (size_t i = 0; i < (size_t)SC_ROWS * SC_COLS; i++) wq[i] = (int8_t)(SC_NEXT() & 0xff);
        for (size_t i = 0; i < (size_t)SC_TOK * SC_COLS; i++) xq[i] = (int8_t)(SC_NEXT() & 0xff);
        for (size_t i = 0; i < (size_t)SC_ROWS * ng; i++) ws[i] = (float)(SC_NEXT() % 1000 + 1) * 1e-4f;
        for (size_t i = 0; i < (size_t)SC_TOK * ng; i++) xs[i] = (float)(SC_NEXT() % 1000 + 1) * 1e-3f;
#undef SC_NEXT
        for (size_t i = 0; i < (size_t)SC_TOK * ng; i++) {
            int32_t sum = 0;
            for (uint32_t k = 0; k < SC_GS; k++) sum += xq[i * SC_GS + k];
            sums[i] = sum;
        }
        const Qwen3Q8Matrix w = {wq, ws, SC_ROWS, SC_COLS, SC_GS};
        const Qwen3Q8Batch x = {xq, xs, sums, SC_COLS, SC_TOK, SC_GS};
        memset(want, 0, (size_t)SC_TOK * n_out * sizeof(float));
        memset(got, 0xff, (size_t)SC_TOK * n_out * sizeof(float));
        qwen3_kernels_avx512vnni.matmul_q8(want, n_out, &w, &x, SC_R0, SC_ROWS);
        real_matmul(NULL, got, n_out, &w, &x, SC_R0, SC_ROWS);
        for (size_t i = 0; i < (size_t)SC_TOK * n_out; i++) {
            if (memcmp(&want[i], &got[i], sizeof(float)) != 0) {
                snprintf(why, size,
                         "the amx self-check failed (token %u, row %u: tiles gave %.9g, avx512vnni %.9g); "
                         "amx disabled",
                         (unsigned)(i / n_out), (unsigned)(SC_R0 + i % n_out), (double)got[i], (double)want[i]);
                result = why;
                break;
            }
        }
    }
    free(wq);
    free(ws);
    free(xq);
    free(xs);
    free(sums);
    free(want);
    free(got);
    return result;
}

#define AMX_NEEDS \
    (QWEN3_CPU_AVX512F | QWEN3_CPU_AVX512BW | QWEN3_CPU_AVX512VL | QWEN3_CPU_AVX512VNNI | QWEN3_CPU_AMX_INT8)

/* 0 = not decided, 1 = a thread is deciding, 2 = decided. */
static _Atomic int amx_state;
static const char* amx_reason;
static char amx_reason_text[256];

const char* qwen3_amx_unavailable(void) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&amx_state, &expected, 1)) {
        const char* reason = NULL;
        if ((qwen3_cpu_flags() & AMX_NEEDS) != AMX_NEEDS) {
            reason = "this CPU lacks AMX-INT8 with AVX-512 VNNI";
        } else {
            reason = qwen3_cpu_amx_permit();
            /* Only now may a tile instruction run. */
            if (reason == NULL) reason = self_check(amx_reason_text, sizeof amx_reason_text);
        }
        amx_reason = reason;
        atomic_store_explicit(&amx_state, 2, memory_order_release);
    } else {
        while (atomic_load_explicit(&amx_state, memory_order_acquire) != 2) {
        }
    }
    return amx_reason;
}

/* The avx512vnni tier's kernels, called through its table (they are static there). */
static void matvec_q8_amx(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x, uint32_t row_begin,
                          uint32_t row_end) {
    qwen3_kernels_avx512vnni.matvec_q8(out, w, x, row_begin, row_end);
}
static void quantize_row_amx(const float* x, Qwen3Q8Batch* b, uint32_t t) { qwen3_kernels_avx512vnni.quantize_row(x, b, t); }
static void attn_scores_amx(float* scores, uint32_t s_stride, const float* q, uint32_t q_stride, uint32_t n_q,
                            const float* keys, size_t block_stride, uint32_t n_pos, uint32_t head_dim, float scale) {
    qwen3_kernels_avx512vnni.attn_scores(scores, s_stride, q, q_stride, n_q, keys, block_stride, n_pos, head_dim, scale);
}
static void attn_values_amx(float* out, uint32_t o_stride, const float* att, uint32_t a_stride, const uint32_t* n_pos,
                            uint32_t n_q, const float* v, uint32_t v_stride, uint32_t head_dim, int accumulate) {
    qwen3_kernels_avx512vnni.attn_values(out, o_stride, att, a_stride, n_pos, n_q, v, v_stride, head_dim, accumulate);
}
static void softmax_exp_amx(float* x, size_t stride, uint32_t rows, const uint32_t* lens, float* sums) {
    qwen3_kernels_avx512vnni.softmax_exp(x, stride, rows, lens, sums);
}
static void silu_mul_amx(float* g, const float* u, uint32_t n) { qwen3_kernels_avx512vnni.silu_mul(g, u, n); }

const Qwen3KernelTable qwen3_kernels_amx = {
    .name = "amx",
    .matvec_q8 = matvec_q8_amx,
    .matmul_q8 = matmul_q8_amx,
    .matmul_blocks = qwen3_matmul_blocks_avx512vnni,
    .quantize_row = quantize_row_amx,
    .attn_scores = attn_scores_amx,
    .attn_values = attn_values_amx,
    .softmax_exp = softmax_exp_amx,
    .silu_mul = silu_mul_amx,
    .sampler_softmax = qwen3_sampler_softmax_avx512,
};
