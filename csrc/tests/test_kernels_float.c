/* test_kernels_float.c - the unquantised kernels (kernels_float.h): the exact fp16 and
 * bf16 widenings against an independent ldexp-based decoding of all 65536 codes; the
 * scalar tier against a plain transcription of the documented lane order and reduction
 * tree (bit for bit) and against a double-precision dot product (close); every other tier
 * this CPU runs against scalar, bit for bit, on random and odd shapes, sub-ranges of rows,
 * extreme values, with canaries around the output; the batched product against per-token
 * calls; and the float tier following a forced int8 tier. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kernels_float.h"
#include "qwen3_inference.h"
#include "test_util.h"

/* fp16 decoded from its definition, with nothing shared with the library's bit tricks. */
static double f16_reference(uint16_t h) {
    const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double v;
    if (exp == 0) v = ldexp((double)mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = ldexp(1.0 + mant / 1024.0, exp - 15);
    return sign ? -v : v;
}

static void test_conversions(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const double want = f16_reference((uint16_t)h);
        const float got = qwen3_f16_to_f32((uint16_t)h);
        const int ok = isnan(want) ? isnan(got) : (double)got == want && signbit(got) == signbit(want);
        if (!ok && bad++ < 5) fprintf(stderr, "f16 0x%04X: got %g want %g\n", h, got, want);
    }
    CHECK(bad == 0, "%d fp16 codes decoded wrongly", bad);
    bad = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        const int sign = b >> 15, exp = (b >> 7) & 255, mant = b & 127;
        double want;
        if (exp == 0) want = ldexp((double)mant, -133);
        else if (exp == 255) want = mant ? NAN : INFINITY;
        else want = ldexp(1.0 + mant / 128.0, exp - 127);
        if (sign) want = -want;
        const float got = qwen3_bf16_to_f32((uint16_t)b);
        const int ok = isnan(want) ? isnan(got) : (double)got == want;
        if (!ok && bad++ < 5) fprintf(stderr, "bf16 0x%04X: got %g want %g\n", b, got, want);
    }
    CHECK(bad == 0, "%d bf16 codes decoded wrongly", bad);
}

/* A random matrix of `type`: values from the seed, stored in that type, plus its exact fp32
 * widening for the references. */
typedef struct {
    Qwen3Matrix m;
    void* data;
    float* wide; /* (rows, cols) */
} TestMatrix;

static uint16_t f32_to_bf16_trunc(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

/* fp16 values are drawn as random finite codes (no encoder needed); without `extreme`
 * their exponents stay at or below 2^1 so sums stay in a moderate range. */
static void matrix_init(TestMatrix* t, uint32_t type, uint32_t rows, uint32_t cols, uint64_t* seed, int extreme) {
    const size_t n = (size_t)rows * cols;
    t->wide = (float*)malloc(n * sizeof(float));
    const uint32_t bytes = qwen3_weight_type_bytes(type);
    t->data = malloc(n * bytes + 64);
    for (size_t i = 0; i < n; i++) {
        float v = tu_uniform(seed);
        if (extreme && i % 7 == 3) v *= 60000.0f;
        if (extreme && i % 11 == 5) v *= 1e-6f;
        if (type == QWEN3_WEIGHT_F32) {
            ((float*)t->data)[i] = v;
            t->wide[i] = v;
        } else if (type == QWEN3_WEIGHT_BF16) {
            const uint16_t b = f32_to_bf16_trunc(v);
            ((uint16_t*)t->data)[i] = b;
            t->wide[i] = qwen3_bf16_to_f32(b);
        } else {
            /* a random finite fp16 code: sign, exponent 0..30, mantissa */
            uint16_t h = (uint16_t)(tu_next(seed) & 0xFFFF);
            if (((h >> 10) & 31) == 31) h &= (uint16_t)~0x4000;
            if (!extreme && ((h >> 10) & 31) > 16) h = (uint16_t)((h & 0x83FF) | (14u << 10));
            ((uint16_t*)t->data)[i] = h;
            t->wide[i] = (float)f16_reference(h);
        }
    }
    t->m = qwen3_matrix_float(type, t->data, rows, cols);
}

static void matrix_deinit(TestMatrix* t) {
    free(t->data);
    free(t->wide);
}

/* kernels_float.h's numerics written out once more, as plainly as possible. */
static float spec_dot(const float* w, const float* x, uint32_t n) {
    float acc[16] = {0};
    for (uint32_t j = 0; j < n; j++) {
        const float p = w[j] * x[j];
        acc[j % 16] = acc[j % 16] + p;
    }
    float a8[8], a4[4];
    for (int l = 0; l < 8; l++) a8[l] = acc[l] + acc[l + 8];
    for (int l = 0; l < 4; l++) a4[l] = a8[l] + a8[l + 4];
    const float b0 = a4[0] + a4[2], b1 = a4[1] + a4[3];
    return b0 + b1;
}

#define CANARY 12345.678f

static void run_tier(const Qwen3FloatKernels* k, uint32_t type, const TestMatrix* t, const float* x,
                     uint32_t r0, uint32_t r1, float* out) {
    const uint32_t n = r1 - r0;
    out[0] = CANARY;
    out[n + 1] = CANARY;
    k->matvec[type](out + 1, &t->m, x, r0, r1);
}

static void test_tiers(void) {
    static const uint32_t types[3] = {QWEN3_WEIGHT_F32, QWEN3_WEIGHT_F16, QWEN3_WEIGHT_BF16};
    static const uint32_t cols_list[] = {1, 3, 15, 16, 17, 31, 32, 33, 64, 100, 128, 255, 1024, 1031};
    const char* const* names = qwen3_float_kernels_all_names();
    uint64_t seed = 42;
    int compared = 0;
    for (uint32_t ti = 0; ti < 3; ti++) {
        const uint32_t type = types[ti];
        for (size_t ci = 0; ci < sizeof cols_list / sizeof cols_list[0]; ci++) {
            for (int extreme = 0; extreme < 2; extreme++) {
                const uint32_t cols = cols_list[ci], rows = 1 + (uint32_t)(tu_next(&seed) % 37);
                TestMatrix t;
                matrix_init(&t, type, rows, cols, &seed, extreme);
                float* x = (float*)malloc(cols * sizeof(float));
                for (uint32_t j = 0; j < cols; j++) x[j] = tu_uniform(&seed) * (extreme && j % 5 == 0 ? 1000.0f : 1.0f);
                const uint32_t r0 = rows > 3 ? (uint32_t)(tu_next(&seed) % 3) : 0;
                const uint32_t r1 = rows - (rows > 5 ? (uint32_t)(tu_next(&seed) % 2) : 0);
                float* ref = (float*)malloc((rows + 2) * sizeof(float));
                float* got = (float*)malloc((rows + 2) * sizeof(float));
                run_tier(&qwen3_float_kernels_scalar, type, &t, x, r0, r1, ref);
                CHECK(ref[0] == CANARY && ref[r1 - r0 + 1] == CANARY, "scalar wrote outside its rows");
                for (uint32_t r = r0; r < r1; r++) {
                    const float spec = spec_dot(t.wide + (size_t)r * cols, x, cols);
                    CHECK(memcmp(&spec, &ref[1 + r - r0], 4) == 0,
                          "%s cols %u row %u: scalar %.9g, documented order %.9g", qwen3_weight_type_name(type),
                          cols, r, ref[1 + r - r0], spec);
                    double exact = 0.0, mag = 0.0;
                    for (uint32_t j = 0; j < cols; j++) {
                        exact += (double)t.wide[(size_t)r * cols + j] * x[j];
                        mag += fabs((double)t.wide[(size_t)r * cols + j] * x[j]);
                    }
                    /* fp32 summation of n terms: error below n * 2^-24 of the magnitudes */
                    CHECK(fabs(ref[1 + r - r0] - exact) <= (cols + 2) * 6e-8 * mag + 1e-30,
                          "%s cols %u row %u: %.9g vs exact %.9g", qwen3_weight_type_name(type), cols, r,
                          ref[1 + r - r0], exact);
                }
                for (const char* const* nm = names; *nm; nm++) {
                    const Qwen3FloatKernels* k = qwen3_float_kernels_find(*nm);
                    if (!k) continue;
                    run_tier(k, type, &t, x, r0, r1, got);
                    CHECK(got[0] == CANARY && got[r1 - r0 + 1] == CANARY, "tier %s wrote outside its rows",
                          *nm);
                    CHECK(memcmp(got + 1, ref + 1, (r1 - r0) * sizeof(float)) == 0,
                          "tier %s, %s, %u x %u rows [%u, %u): differs from scalar", *nm,
                          qwen3_weight_type_name(type), rows, cols, r0, r1);
                    compared++;
                }
                free(ref);
                free(got);
                free(x);
                matrix_deinit(&t);
            }
        }
    }
    for (const char* const* nm = names; *nm; nm++) {
        fprintf(stderr, "  float tier %-7s %s\n", *nm, qwen3_float_kernels_find(*nm) ? "tested" : "SKIPPED (CPU lacks it)");
    }
    CHECK(compared > 0, "no tier compared");
}

static void test_matmul_and_rows(void) {
    uint64_t seed = 7;
    const uint32_t rows = 45, cols = 70, n_tokens = 5;
    TestMatrix t;
    matrix_init(&t, QWEN3_WEIGHT_BF16, rows, cols, &seed, 0);
    float x[5 * 72], out[5 * 50], one[50];
    for (uint32_t i = 0; i < n_tokens * 72; i++) x[i] = tu_uniform(&seed);
    for (uint32_t i = 0; i < 5 * 50; i++) out[i] = CANARY;
    qwen3_matmul_float(out, 50, &t.m, x, 72, n_tokens, 3, 44);
    for (uint32_t tk = 0; tk < n_tokens; tk++) {
        qwen3_matvec_float(one, &t.m, x + tk * 72, 3, 44);
        CHECK(memcmp(one, out + tk * 50, 41 * sizeof(float)) == 0, "token %u: matmul differs from matvec", tk);
        CHECK(out[tk * 50 + 41] == CANARY, "matmul wrote past row_end for token %u", tk);
    }
    float row[70];
    qwen3_matrix_row(row, &t.m, 9);
    CHECK(memcmp(row, t.wide + 9 * 70, sizeof row) == 0, "qwen3_matrix_row of bf16 differs");
    /* a Q8 row: q * scale of its group */
    int8_t q[64];
    float s[2] = {0.5f, -2.0f};
    for (int i = 0; i < 64; i++) q[i] = (int8_t)(i - 32);
    Qwen3Q8Matrix q8 = {.q = q, .s = s, .rows = 1, .cols = 64, .group_size = 32};
    Qwen3Matrix qm = qwen3_matrix_q8(q8);
    float qrow[64];
    qwen3_matrix_row(qrow, &qm, 0);
    CHECK(qrow[0] == -16.0f && qrow[40] == -16.0f, "q8 row: %g %g", qrow[0], qrow[40]);
    CHECK(qm.rows == 1 && qm.cols == 64 && qm.type == QWEN3_WEIGHT_Q8, "qwen3_matrix_q8 fields");
    matrix_deinit(&t);
}

static void test_follows_int8_tier(void) {
    CHECK(qwen3_kernel_select("scalar") == QWEN3_OK, "select scalar: %s", qwen3_get_last_error());
    CHECK(strcmp(qwen3_float_kernels_active()->name, "scalar") == 0, "forced int8 scalar gave float %s",
          qwen3_float_kernels_active()->name);
    const char* const* names = qwen3_kernels_all_names();
    for (const char* const* nm = names; *nm; nm++) {
        if (qwen3_kernel_select(*nm) != QWEN3_OK) continue;
        const char* f = qwen3_float_kernels_active()->name;
        CHECK(qwen3_float_kernels_find(f) != NULL, "int8 %s picked unsupported float %s", *nm, f);
        if (strcmp(*nm, "scalar") != 0) {
            CHECK(strcmp(f, "scalar") != 0 || qwen3_float_kernels_find("avx2") == NULL,
                  "int8 %s stayed on scalar floats", *nm);
        }
    }
    CHECK(qwen3_float_kernels_find("nope") == NULL, "unknown tier found");
    CHECK(strcmp(qwen3_weight_type_name(QWEN3_WEIGHT_BF16), "bf16") == 0, "type name");
}

int main(void) {
    test_conversions();
    test_tiers();
    test_matmul_and_rows();
    test_follows_int8_tier();
    return tu_finish("test_kernels_float");
}
