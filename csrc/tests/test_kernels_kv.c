/* test_kernels_kv.c - the int8 KV cache's dequantisation tiers (kernels_kv.h) against the
 * scalar one, bit for bit: random int8 (all of -128..127), scales of every kind (normal,
 * zero, subnormal, huge, infinite, NaN), group sizes from 2 to 256 including ones that
 * leave a tail of less than a vector. And one token's value pass from the int8 rows
 * (attn_values_q8: the reference and every tier that has one) against what attention does
 * without it: the rows dequantised in chunks, then the scalar f32 value kernel. And the fp16
 * cache's conversions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_float.h"
#include "kernels_kv.h"
#include "test_util.h"

#define MAX_ROWS 512u

static float any_scale(uint64_t* rng) {
    switch (tu_next(rng) % 8) {
        case 0: return 0.0f;
        case 1: return 1e-40f; /* subnormal */
        case 2: return 3e38f;  /* products overflow to infinity */
        case 3: return INFINITY;
        case 4: return NAN;
        default: return tu_uniform(rng) * 0.1f;
    }
}

/* Equal bits, or both NaN (a NaN's payload is not part of the contract). */
static int same_floats(const float* a, const float* b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (a[i] != a[i] && b[i] != b[i]) continue;
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) return 0;
    }
    return 1;
}

#define VQ_MAX_POS 300u
#define VQ_MAX_HD 256u
#define VQ_MAX_Q 6u
#define VQ_CHUNK 64u /* positions dequantised at a time, as attention's stack buffer holds */

static void test_attn_values_q8(void) {
    static int8_t q[VQ_MAX_POS * VQ_MAX_HD];
    static float s[VQ_MAX_POS * VQ_MAX_HD], rows[VQ_CHUNK * VQ_MAX_HD];
    static float att[VQ_MAX_Q * (VQ_MAX_POS + 5)];
    static float want[VQ_MAX_Q * (VQ_MAX_HD + 3)], got[VQ_MAX_Q * (VQ_MAX_HD + 3)];
    static const uint32_t shapes[][2] = {{16, 16}, {32, 16}, {64, 32}, {64, 64}, {80, 16},
                                         {128, 32}, {128, 64}, {128, 128}, {256, 32}, {48, 48}, {24, 8}};
    static const uint32_t positions[] = {1, 2, 15, 16, 17, 63, 64, 65, 130, VQ_MAX_POS};
    const Qwen3KvKernels* const* tiers = qwen3_kv_kernels_all();
    uint64_t rng = 2024;
    uint32_t compared = 0;
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        const uint32_t hd = shapes[k][0], gs = shapes[k][1], ng = hd / gs;
        for (size_t np = 0; np < sizeof positions / sizeof positions[0]; np++) {
            const uint32_t n_pos = positions[np];
            const uint32_t n_q = 1 + (uint32_t)(tu_next(&rng) % VQ_MAX_Q);
            const size_t o_stride = hd + tu_next(&rng) % 3, a_stride = n_pos + tu_next(&rng) % 5;
            for (uint32_t i = 0; i < n_pos * hd; i++) q[i] = (int8_t)(tu_next(&rng) & 0xFF);
            for (uint32_t i = 0; i < n_pos * ng; i++) {
                /* mostly the scales a cache holds; now and then ones that overflow or vanish */
                const uint32_t kind = (uint32_t)(tu_next(&rng) % 16);
                s[i] = kind == 0 ? 0.0f : kind == 1 ? 1e-40f : kind == 2 ? 3e38f : tu_uniform(&rng) * 0.05f;
            }
            for (uint32_t i = 0; i < n_q * a_stride; i++) att[i] = tu_uniform(&rng); /* softmax numerators */
            /* what attention does without attn_values_q8 */
            uint32_t lens[VQ_MAX_Q];
            for (uint32_t p0 = 0; p0 < n_pos; p0 += VQ_CHUNK) {
                const uint32_t len = n_pos - p0 < VQ_CHUNK ? n_pos - p0 : VQ_CHUNK;
                qwen3_kv_kernels_scalar.dequant_groups(rows, q + (size_t)p0 * hd, s + (size_t)p0 * ng, len * hd, gs);
                for (uint32_t j = 0; j < n_q; j++) lens[j] = len;
                qwen3_kernels_scalar.attn_values(want, (uint32_t)o_stride, att + p0, (uint32_t)a_stride, lens, n_q,
                                                 rows, hd, hd, p0 > 0);
            }
            memset(got, 0xff, sizeof got);
            qwen3_attn_values_q8_ref(got, o_stride, att, a_stride, n_q, q, s, n_pos, hd, gs);
            for (uint32_t j = 0; j < n_q; j++) {
                CHECK(same_floats(want + j * o_stride, got + j * o_stride, hd),
                      "reference: hd %u, groups of %u, %u positions, query %u of %u differs from dequant + "
                      "attn_values", hd, gs, n_pos, j, n_q);
            }
            for (uint32_t t = 0; tiers[t]; t++) {
                if (!tiers[t]->attn_values_q8) continue;
                memset(got, 0xff, sizeof got);
                tiers[t]->attn_values_q8(got, o_stride, att, a_stride, n_q, q, s, n_pos, hd, gs);
                for (uint32_t j = 0; j < n_q; j++) {
                    CHECK(same_floats(want + j * o_stride, got + j * o_stride, hd),
                          "%s: hd %u, groups of %u, %u positions, query %u of %u differs from dequant + "
                          "attn_values", tiers[t]->name, hd, gs, n_pos, j, n_q);
                }
                compared++;
            }
        }
    }
    fprintf(stderr, "test_kernels_kv: attn_values_q8 compared in %u tier runs\n", compared);
}

static uint32_t f32_bits(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static float bits_f32(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

/* The fp16 cache's conversions (docs/numerics.md#fp16-kv-cache). The scalar rounding
 * against its definition: every binary16 value comes back unchanged, both neighbours of
 * each one a float ulp away round to it, and the point half way between two neighbours
 * goes to the one with the even mantissa (from 65520 up: infinity). Then every tier
 * against the scalar one: widening all 65536 values, and rounding those points, random
 * bit patterns, and the edges (zeros, subnormals, the overflow threshold, infinities,
 * NaNs), at lengths that leave tails of less than a vector. */
static void test_f16_conversions(void) {
    enum { N = 4099 };
    static float x[N], wide_want[65536], wide_got[65536];
    static uint16_t h[65536], want[N], got[N];
    uint32_t bad = 0;
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    qwen3_kv_kernels_scalar.from_f16(wide_want, h, 65536);
    for (uint32_t i = 0; i < 65536 && bad < 5; i++) {
        const uint32_t e = (i >> 10) & 0x1Fu;
        if (e == 0x1F && (i & 0x3FFu)) continue; /* NaN: checked below */
        const float v = wide_want[i];
        if (qwen3_f32_to_f16(v) != i) {
            bad++;
            CHECK(0, "binary16 0x%04x (%g) rounds to 0x%04x", i, (double)v, qwen3_f32_to_f16(v));
        }
        if (v != 0.0f && e != 0x1F) {
            /* a float ulp either side (towards zero stays in the same binade or the one below) */
            const float up = bits_f32(f32_bits(v) + 1), down = bits_f32(f32_bits(v) - 1);
            if (qwen3_f32_to_f16(up) != i || qwen3_f32_to_f16(down) != i) {
                bad++;
                CHECK(0, "binary16 0x%04x: a float ulp away rounds elsewhere", i);
            }
        }
        if ((i & 0x7FFFu) < 0x7BFFu) {
            /* half way to the next magnitude: the even one of the two */
            const float next = wide_want[i + 1];
            const float mid = (float)(((double)v + (double)next) / 2.0); /* exact: 11 bits + 1 */
            const uint16_t even = (i & 1u) ? (uint16_t)(i + 1) : (uint16_t)i;
            if (qwen3_f32_to_f16(mid) != even) {
                bad++;
                CHECK(0, "half way between 0x%04x and 0x%04x: 0x%04x", i, i + 1, qwen3_f32_to_f16(mid));
            }
        }
    }
    CHECK(qwen3_f32_to_f16(65519.996f) == 0x7BFF && qwen3_f32_to_f16(65520.0f) == 0x7C00 &&
              qwen3_f32_to_f16(-1e30f) == 0xFC00 && qwen3_f32_to_f16(1e-30f) == 0 &&
              qwen3_f32_to_f16(-1e-30f) == 0x8000 && qwen3_f32_to_f16(bits_f32(0x33000001u)) == 1 &&
              qwen3_f32_to_f16(bits_f32(0x33000000u)) == 0,
          "edges of the binary16 range");
    const uint16_t nan = qwen3_f32_to_f16(NAN);
    CHECK((nan & 0x7C00u) == 0x7C00u && (nan & 0x3FFu) != 0, "NaN gives 0x%04x", nan);
    CHECK(qwen3_f16_to_f32(0x3C00) == 1.0f && qwen3_f16_to_f32(0x0001) == 5.9604644775390625e-8f &&
              qwen3_f16_to_f32(0xFBFF) == -65504.0f,
          "binary16 widening");

    uint64_t rng = 2024;
    const Qwen3KvKernels* const* tiers = qwen3_kv_kernels_all();
    for (uint32_t t = 0; tiers[t]; t++) {
        tiers[t]->from_f16(wide_got, h, 65536);
        CHECK(same_floats(wide_want, wide_got, 65536), "%s: from_f16 of all 65536 values differs from scalar",
              tiers[t]->name);
        for (uint32_t trial = 0; trial < 40; trial++) {
            for (uint32_t i = 0; i < N; i++) {
                const uint32_t pick = (uint32_t)(tu_next(&rng) % 6);
                const uint16_t near = (uint16_t)(tu_next(&rng) & 0xFFFFu);
                const float v = wide_want[near & 0x7FFFu ? near : 1];
                const float next = wide_want[(near & 0x7FFFu) < 0x7BFFu ? near + 1 : near];
                const uint32_t r = (uint32_t)tu_next(&rng);
                const uint32_t sign = f32_bits(v) & 0x80000000u;
                x[i] = pick == 0   ? bits_f32(r)                                          /* any float */
                       : pick == 1 ? (float)(((double)v + (double)next) / 2.0)            /* a tie */
                       : pick == 2 ? bits_f32(f32_bits(v) + r % 5u - 2u)                  /* near one */
                       : pick == 3 ? bits_f32(sign | (0x33000000u + r % 0x5800000u))      /* subnormals */
                       : pick == 4 ? bits_f32(0x477FF000u + r % 5u - 2u)                  /* overflow edge */
                                   : (tu_uniform(&rng) - 0.5f) * 8.0f;                    /* typical */
            }
            x[0] = INFINITY;
            x[1] = -INFINITY;
            x[2] = -0.0f;
            x[3] = NAN;
            const uint32_t n = 1 + (uint32_t)(tu_next(&rng) % N);
            qwen3_kv_kernels_scalar.to_f16(want, x, n);
            memset(got, 0, sizeof got);
            tiers[t]->to_f16(got, x, n);
            for (uint32_t i = 0; i < n; i++) {
                if (want[i] != got[i]) {
                    CHECK(0, "%s: to_f16(%a) = 0x%04x, scalar 0x%04x (value %u of %u)", tiers[t]->name, (double)x[i],
                          got[i], want[i], i, n);
                    break;
                }
            }
        }
        fprintf(stderr, "test_kernels_kv: tier %s fp16 conversions checked\n", tiers[t]->name);
    }
}

int main(void) {
    static int8_t q[MAX_ROWS * QWEN3_KV_BLOCK];
    static float s[MAX_ROWS * QWEN3_KV_BLOCK], want[MAX_ROWS * QWEN3_KV_BLOCK], got[MAX_ROWS * QWEN3_KV_BLOCK];
    static const uint32_t group_sizes[] = {2, 6, 16, 24, 32, 48, 128, 256};
    const Qwen3KvKernels* const* tiers = qwen3_kv_kernels_all();
    uint64_t rng = 99;
    uint32_t tested = 0;
    for (uint32_t t = 0; tiers[t]; t++) {
        for (size_t k = 0; k < sizeof group_sizes / sizeof group_sizes[0]; k++) {
            const uint32_t gs = group_sizes[k];
            for (uint32_t trial = 0; trial < 20; trial++) {
                const uint32_t rows = gs * (1 + (uint32_t)(tu_next(&rng) % (MAX_ROWS / gs)));
                for (uint32_t i = 0; i < rows * QWEN3_KV_BLOCK; i++) {
                    q[i] = (int8_t)(tu_next(&rng) & 0xFF);
                    s[i] = any_scale(&rng);
                }
                /* values: one row of `rows` values, one scale per group */
                qwen3_kv_kernels_scalar.dequant_groups(want, q, s, rows, gs);
                memset(got, 0, rows * sizeof(float));
                tiers[t]->dequant_groups(got, q, s, rows, gs);
                CHECK(memcmp(want, got, rows * sizeof(float)) == 0,
                      "%s: dequant_groups, %u values, groups of %u differ from scalar", tiers[t]->name, rows, gs);
            }
        }
        fprintf(stderr, "test_kernels_kv: tier %s checked\n", tiers[t]->name);
        tested++;
    }
    /* the scalar tier itself: (float)q * scale */
    q[0] = -128;
    s[0] = 0.5f;
    qwen3_kv_kernels_scalar.dequant_groups(want, q, s, 1, 1);
    CHECK(want[0] == -64.0f, "scalar: -128 * 0.5 = %g", (double)want[0]);
    CHECK(tested >= 1, "no tier tested");
    test_attn_values_q8();
    test_f16_conversions();
    return tu_finish("test_kernels_kv");
}
