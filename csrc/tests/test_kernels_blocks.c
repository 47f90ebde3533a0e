/* test_kernels_blocks.c - weights in ggml block layouts (kernels.h):
 *   - the unpacker dequantises llama.cpp's own blocks value for value
 *     (tests/fixtures/kquants/, made by tools/make_kquant_fixture.py);
 *   - every tier's matmul_blocks returns the scalar reference's bits, for one token and
 *     for a batch (each token of a batch equal to that token alone), over all rows and
 *     over sub-ranges that start and end off the SIMD tiers' row groups, in every type
 *     (rows whose width is not a multiple of 256 end in a short unit of 32-value blocks),
 *     and with fp16 scales that are zero, subnormal, infinite or NaN;
 *   - the reference follows kernels.h's formula: close to the dequantised rows times the
 *     dequantised activations, and for Q8_0 / Q4_0 equal to the Q8 path's bits.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kernels_float.h"
#include "test_util.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint32_t rnd_u32(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static float rnd_sym(void) { return (float)(rnd_u32() >> 8) / 8388608.0f - 1.0f; } /* [-1, 1) */

static const uint32_t TYPES[] = {QWEN3_BLOCK_Q4_0, QWEN3_BLOCK_Q4_1, QWEN3_BLOCK_Q5_0, QWEN3_BLOCK_Q5_1,
                                 QWEN3_BLOCK_Q8_0, QWEN3_BLOCK_Q4_K, QWEN3_BLOCK_Q5_K, QWEN3_BLOCK_Q6_K};
#define N_TYPES (sizeof TYPES / sizeof TYPES[0])

/* An fp16 code of a finite value of magnitude about 2^-12 .. 2^-5, either sign when `neg`. */
static uint16_t rnd_f16(int neg) {
    const uint16_t exp = (uint16_t)(3 + rnd_u32() % 7); /* biased exponent */
    uint16_t h = (uint16_t)((exp << 10) | (rnd_u32() & 0x3FFu));
    if (neg && (rnd_u32() & 1u)) h |= 0x8000u;
    return h;
}

static void put16(uint8_t* p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Random bytes for every packed field, finite fp16 scales. */
static void random_block(uint32_t type, uint8_t* b) {
    const uint32_t n = qwen3_block_bytes(type);
    for (uint32_t i = 0; i < n; i++) b[i] = (uint8_t)rnd_u32();
    switch (type) {
        case QWEN3_BLOCK_Q4_1:
        case QWEN3_BLOCK_Q5_1:
        case QWEN3_BLOCK_Q4_K:
        case QWEN3_BLOCK_Q5_K:
            put16(b, rnd_f16(type == QWEN3_BLOCK_Q4_1 || type == QWEN3_BLOCK_Q5_1));
            put16(b + 2, rnd_f16(type == QWEN3_BLOCK_Q4_1 || type == QWEN3_BLOCK_Q5_1));
            break;
        case QWEN3_BLOCK_Q6_K: put16(b + 208, rnd_f16(1)); break;
        default: put16(b, rnd_f16(1)); break;
    }
}

typedef struct {
    uint8_t* data;
    Qwen3BlockMatrix m;
    Qwen3Q8Batch x;
    float* xf;
} Case;

static int case_init(Case* c, uint32_t type, uint32_t rows, uint32_t cols, uint32_t tokens) {
    memset(c, 0, sizeof *c);
    const uint32_t bv = qwen3_block_values(type), bb = qwen3_block_bytes(type);
    const size_t row_bytes = (size_t)(cols / bv) * bb;
    c->data = (uint8_t*)malloc(row_bytes * rows);
    c->x.q = (int8_t*)malloc((size_t)cols * tokens);
    c->x.s = (float*)malloc((size_t)cols / 32 * tokens * sizeof(float));
    c->x.sums = (int32_t*)malloc((size_t)cols / 32 * tokens * sizeof(int32_t));
    c->xf = (float*)malloc((size_t)cols * tokens * sizeof(float));
    if (!c->data || !c->x.q || !c->x.s || !c->x.sums || !c->xf) return 0;
    for (size_t b = 0; b < (size_t)rows * (cols / bv); b++) random_block(type, c->data + b * bb);
    c->m = (Qwen3BlockMatrix){.data = c->data, .row_bytes = row_bytes, .type = type, .rows = rows, .cols = cols};
    c->x.n = cols;
    c->x.n_tokens = tokens;
    c->x.group_size = 32;
    for (uint32_t t = 0; t < tokens; t++) {
        float* x = c->xf + (size_t)t * cols;
        for (uint32_t i = 0; i < cols; i++) x[i] = rnd_sym() * (i % 97 == 0 ? 8.0f : 1.0f);
        if (t == 1) memset(x, 0, 32 * sizeof(float)); /* an all-zero group: scale 0 */
        qwen3_quantize_q8_token(x, &c->x, t);
        if (t == 2) {
            /* extreme int8 activations, -128 included (the quantiser can wrap to it), to
             * show the SIMD products never saturate */
            int8_t* q = c->x.q + (size_t)t * cols;
            for (uint32_t i = 0; i < cols; i++) q[i] = (int8_t)(i % 3 == 0 ? -128 : i % 3 == 1 ? 127 : -127);
            for (uint32_t g = 0; g < cols / 32; g++) {
                int32_t sum = 0;
                for (uint32_t i = 0; i < 32; i++) sum += q[32 * g + i];
                c->x.sums[(size_t)t * (cols / 32) + g] = sum;
            }
        }
    }
    return 1;
}

static void case_deinit(Case* c) {
    free(c->data);
    free(c->x.q);
    free(c->x.s);
    free(c->x.sums);
    free(c->xf);
}

/* Token t of batch x, as a batch of one. */
static Qwen3Q8Batch token_of(const Qwen3Q8Batch* x, uint32_t t) {
    Qwen3Q8Batch one = *x;
    one.q += (size_t)t * x->n;
    one.s += (size_t)t * (x->n / 32);
    one.sums += (size_t)t * (x->n / 32);
    one.n_tokens = 1;
    return one;
}

/* Every tier against the scalar reference, batch against token by token, and the
 * reference against the dequantised product in double precision. */
static void test_products(void) {
    /* rows, cols, tokens; widths that are not multiples of 256 (32-value types only) end in
     * blocks past the SIMD kernels' 256-value units */
    static const uint32_t shapes[][3] = {{1, 256, 1},   {7, 512, 3},   {33, 768, 5},   {70, 256, 13},
                                         {3, 1280, 2},  {9, 96, 3},    {17, 320, 2},   {8, 544, 4},
                                         {6, 32, 7},    {13, 224, 1},  {4, 480, 64},   {40, 1280, 8},
                                         {19, 512, 7},  {50, 2304, 23}, {24, 512, 2},  {16, 768, 3}};
    const char* const* names = qwen3_kernels_all_names();
    uint32_t compared = 0;
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const uint32_t type = TYPES[ti], rows = shapes[si][0], cols = shapes[si][1], n_tok = shapes[si][2];
            if (cols % qwen3_block_values(type) != 0) continue;
            Case c;
            if (!case_init(&c, type, rows, cols, n_tok)) {
                CHECK(0, "out of memory");
                case_deinit(&c);
                return;
            }
            float* ref = (float*)malloc((size_t)rows * n_tok * sizeof(float));
            float* got = (float*)malloc(((size_t)rows * n_tok + 1) * sizeof(float));
            float* row = (float*)malloc((size_t)cols * sizeof(float));
            if (!ref || !got || !row) {
                CHECK(0, "out of memory");
                free(ref);
                free(got);
                free(row);
                case_deinit(&c);
                return;
            }
            qwen3_matmul_blocks_ref(ref, rows, &c.m, &c.x, 0, rows);
            /* token by token, in a sub-range of rows */
            for (uint32_t t = 0; t < n_tok; t++) {
                const Qwen3Q8Batch one = token_of(&c.x, t);
                const uint32_t r0 = rows / 3;
                qwen3_matmul_blocks_ref(got, 0, &c.m, &one, r0, rows);
                CHECK(memcmp(got, ref + (size_t)t * rows + r0, (rows - r0) * sizeof(float)) == 0,
                      "%s %ux%u: token %u alone differs from the batch", qwen3_block_name(type), rows, cols, t);
            }
            /* the formula, against the dequantised values */
            for (uint32_t r = 0; r < rows; r++) {
                qwen3_block_row(row, &c.m, r);
                for (uint32_t t = 0; t < n_tok; t++) {
                    double exact = 0.0, mag = 0.0;
                    for (uint32_t i = 0; i < cols; i++) {
                        const double xv = (double)c.x.q[(size_t)t * cols + i] * c.x.s[(size_t)t * (cols / 32) + i / 32];
                        exact += (double)row[i] * xv;
                        mag += fabs((double)row[i] * xv);
                    }
                    const double err = fabs((double)ref[(size_t)t * rows + r] - exact);
                    CHECK(err <= 1e-5 * mag + 1e-30, "%s %ux%u row %u token %u: %.9g vs dequantised %.9g",
                          qwen3_block_name(type), rows, cols, r, t, (double)ref[(size_t)t * rows + r], exact);
                }
            }
            for (uint32_t k = 0; names[k]; k++) {
                const Qwen3KernelTable* tier = qwen3_kernels_find(names[k]);
                if (!tier) continue;
                got[(size_t)rows * n_tok] = 12345.0f; /* a guard past the output */
                tier->matmul_blocks(got, rows, &c.m, &c.x, 0, rows);
                CHECK(memcmp(got, ref, (size_t)rows * n_tok * sizeof(float)) == 0 && got[(size_t)rows * n_tok] == 12345.0f,
                      "tier %s, %s %ux%u x %u tokens: differs from the scalar reference", names[k],
                      qwen3_block_name(type), rows, cols, n_tok);
                compared++;
                /* each token alone: the one-token kernels a decode step runs (a batch of two
                 * or more takes a tier's GEMM), over all rows, then a range off the row groups */
                for (uint32_t t = 0; t < n_tok; t++) {
                    const Qwen3Q8Batch one = token_of(&c.x, t);
                    const uint32_t r0 = rows > 9 ? 3 : 0;
                    got[rows] = 12345.0f;
                    tier->matmul_blocks(got, 0, &c.m, &one, 0, rows);
                    int same = memcmp(got, ref + (size_t)t * rows, rows * sizeof(float)) == 0 && got[rows] == 12345.0f;
                    tier->matmul_blocks(got, 0, &c.m, &one, r0, rows);
                    same &= memcmp(got, ref + (size_t)t * rows + r0, (rows - r0) * sizeof(float)) == 0;
                    CHECK(same, "tier %s, %s %ux%u: token %u alone differs from the scalar reference", names[k],
                          qwen3_block_name(type), rows, cols, t);
                    compared++;
                }
                /* row ranges that start and end off a multiple of the SIMD tiers' row groups,
                 * into an output with a wider stride (as a thread's slice of a batch) */
                const uint32_t ranges[][2] = {{1, rows}, {rows / 2, rows - rows / 4}, {rows - 1, rows}};
                for (size_t ri = 0; ri < sizeof ranges / sizeof ranges[0]; ri++) {
                    const uint32_t r0 = ranges[ri][0], r1 = ranges[ri][1];
                    if (r0 >= r1) continue;
                    for (size_t i = 0; i < (size_t)rows * n_tok; i++) got[i] = 12345.0f;
                    tier->matmul_blocks(got, rows, &c.m, &c.x, r0, r1);
                    int same = 1;
                    for (uint32_t t = 0; t < n_tok; t++) {
                        same &= memcmp(got + (size_t)t * rows, ref + (size_t)t * rows + r0, (r1 - r0) * sizeof(float)) == 0;
                        for (uint32_t i = r1 - r0; i < rows; i++) same &= got[(size_t)t * rows + i] == 12345.0f;
                    }
                    CHECK(same, "tier %s, %s %ux%u x %u tokens, rows [%u, %u): differs from the reference or writes "
                          "past its slice", names[k], qwen3_block_name(type), rows, cols, n_tok, r0, r1);
                    compared++;
                }
            }
            free(ref);
            free(got);
            free(row);
            case_deinit(&c);
        }
    }
    printf("  block products: %u tier comparisons memcmp-equal to the reference\n", compared);
}

/* Offsets of a block's fp16 scale d and of its second fp16 field (m, dmin) or -1. */
static void f16_fields(uint32_t type, int* d_at, int* m_at) {
    *d_at = type == QWEN3_BLOCK_Q6_K ? 208 : 0;
    *m_at = qwen3_block_has_offset(type) ? 2 : -1;
}

/* Every tier against the reference with fp16 scale codes off the random tests' range: zeros,
 * subnormals, the extreme normals; infinities; NaNs. Each matrix has one kind of NaN at most
 * (the default NaN that inf * 0 makes, or one quieted payload), so the result's bits do not
 * depend on which NaN operand an instruction propagates. */
static void test_special_scales(void) {
    static const uint16_t finite[] = {0x0000, 0x8000, 0x0001, 0x83FF, 0x0200, 0x0400, 0x7BFF, 0xFBFF, 0x3C00};
    static const uint16_t infinite[] = {0x7C00, 0xFC00, 0x3C00, 0x0000, 0x0001};
    static const uint16_t nan[] = {0x7E01, 0x7C01, 0x3555, 0x8000}; /* quiet and signalling, one payload */
    const struct {
        const uint16_t* codes;
        uint32_t n;
        int m_too; /* the second field also takes the codes */
        const char* what;
    } kinds[] = {{finite, 9, 1, "zero, subnormal and extreme"}, {infinite, 5, 0, "infinite"}, {nan, 4, 0, "NaN"}};
    const char* const* names = qwen3_kernels_all_names();
    uint32_t compared = 0;
    for (size_t ki = 0; ki < sizeof kinds / sizeof kinds[0]; ki++) {
        for (size_t ti = 0; ti < N_TYPES; ti++) {
            const uint32_t type = TYPES[ti], rows = 9, cols = 512, n_tok = 3, bb = qwen3_block_bytes(type);
            Case c;
            float ref[9 * 3], got[9 * 3];
            if (!case_init(&c, type, rows, cols, n_tok)) {
                CHECK(0, "out of memory");
                case_deinit(&c);
                return;
            }
            int d_at, m_at;
            f16_fields(type, &d_at, &m_at);
            const uint32_t n_blocks = rows * (cols / qwen3_block_values(type));
            for (uint32_t b = 0; b < n_blocks; b++) {
                put16(c.data + (size_t)b * bb + d_at, kinds[ki].codes[b % kinds[ki].n]);
                if (m_at >= 0 && kinds[ki].m_too) put16(c.data + (size_t)b * bb + m_at, kinds[ki].codes[(b + 4) % kinds[ki].n]);
            }
            qwen3_matmul_blocks_ref(ref, rows, &c.m, &c.x, 0, rows);
            for (uint32_t k = 0; names[k]; k++) {
                const Qwen3KernelTable* tier = qwen3_kernels_find(names[k]);
                if (!tier) continue;
                tier->matmul_blocks(got, rows, &c.m, &c.x, 0, rows);
                CHECK(memcmp(got, ref, sizeof ref) == 0, "tier %s, %s with %s scales: differs from the reference",
                      names[k], qwen3_block_name(type), kinds[ki].what);
                compared++;
                for (uint32_t t = 0; t < n_tok; t++) { /* the one-token kernels */
                    const Qwen3Q8Batch one = token_of(&c.x, t);
                    tier->matmul_blocks(got, 0, &c.m, &one, 0, rows);
                    CHECK(memcmp(got, ref + (size_t)t * rows, rows * sizeof(float)) == 0,
                          "tier %s, %s with %s scales, token %u alone: differs from the reference", names[k],
                          qwen3_block_name(type), kinds[ki].what, t);
                    compared++;
                }
            }
            case_deinit(&c);
        }
    }
    printf("  special fp16 scales: %u tier comparisons memcmp-equal to the reference\n", compared);
}

/* Q8_0 and Q4_0 in blocks give the Q8 path's bits (the same group-32 numerics). */
static void test_q8_path_agrees(void) {
    const uint32_t types[2] = {QWEN3_BLOCK_Q8_0, QWEN3_BLOCK_Q4_0};
    for (int k = 0; k < 2; k++) {
        const uint32_t rows = 9, cols = 320;
        Case c;
        if (!case_init(&c, types[k], rows, cols, 1)) {
            CHECK(0, "out of memory");
            case_deinit(&c);
            return;
        }
        int8_t q[9 * 320];
        float s[9 * 10], a[9], b[9];
        Qwen3UnpackedBlock u;
        for (uint32_t blk = 0; blk < rows * cols / 32; blk++) {
            qwen3_block_unpack(types[k], c.data + (size_t)blk * qwen3_block_bytes(types[k]), &u);
            memcpy(q + blk * 32, u.q, 32);
            s[blk] = u.scale[0];
        }
        const Qwen3Q8Matrix m8 = {q, s, rows, cols, 32};
        const Qwen3Q8Vector v = {c.x.q, c.x.s, cols, 32};
        qwen3_kernels_scalar.matvec_q8(a, &m8, &v, 0, rows);
        qwen3_matmul_blocks_ref(b, 0, &c.m, &c.x, 0, rows);
        CHECK(memcmp(a, b, sizeof a) == 0, "%s blocks differ from the Q8 path", qwen3_block_name(types[k]));
        case_deinit(&c);
    }
}

/* A whole file into memory; NULL (and a failed check) when it cannot be read. */
static uint8_t* read_all(const char* path, size_t* size) {
    FILE* f = fopen(path, "rb");
    CHECK(f != NULL, "cannot open %s (regenerate with tools/make_kquant_fixture.py)", path);
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t* p = (uint8_t*)malloc(n > 0 ? (size_t)n : 1);
    if (p && n > 0 && fread(p, 1, (size_t)n, f) != (size_t)n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *size = n > 0 ? (size_t)n : 0;
    return p;
}

/* Blocks llama.cpp wrote, dequantised by the unpacker, equal gguf-py's values bit for bit. */
static void test_llama_cpp_blocks(void) {
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        const uint32_t type = TYPES[ti], bv = qwen3_block_values(type), bb = qwen3_block_bytes(type);
        char bpath[256], vpath[256];
        snprintf(bpath, sizeof bpath, "tests/fixtures/kquants/%s.blocks", qwen3_block_name(type));
        snprintf(vpath, sizeof vpath, "tests/fixtures/kquants/%s.f32", qwen3_block_name(type));
        size_t nb = 0, nv = 0;
        uint8_t* blocks = read_all(bpath, &nb);
        uint8_t* values = read_all(vpath, &nv);
        if (blocks && values) {
            const size_t n_blocks = nb / bb;
            CHECK(nb % bb == 0 && n_blocks > 0 && nv == n_blocks * bv * 4, "%s: %zu block bytes, %zu value bytes",
                  qwen3_block_name(type), nb, nv);
            float row[QWEN3_BLOCK_MAX_VALUES];
            size_t mismatches = 0;
            for (size_t b = 0; b < n_blocks && nv == n_blocks * bv * 4; b++) {
                const Qwen3BlockMatrix m = {blocks + b * bb, bb, type, 1, bv};
                qwen3_block_row(row, &m, 0);
                for (uint32_t i = 0; i < bv; i++) {
                    float want;
                    memcpy(&want, values + (b * bv + i) * 4, 4); /* little-endian hosts only */
                    if (!(row[i] == want) && !(isnan(row[i]) && isnan(want))) {
                        if (mismatches++ < 3) {
                            CHECK(0, "%s block %zu value %u: %.9g, llama.cpp gives %.9g", qwen3_block_name(type), b, i,
                                  (double)row[i], (double)want);
                        }
                    }
                }
            }
            CHECK(mismatches == 0, "%s: %zu values differ from llama.cpp's", qwen3_block_name(type), mismatches);
            printf("  %s: %zu llama.cpp blocks dequantised exactly\n", qwen3_block_name(type), n_blocks);
        }
        free(blocks);
        free(values);
    }
}

int main(void) {
    test_llama_cpp_blocks();
    test_q8_path_agrees();
    test_products();
    test_special_scales();
    return tu_finish("test_kernels_blocks");
}
