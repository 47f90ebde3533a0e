/* kernels_float.c - the unquantised matrix-vector product: the scalar reference tier,
 * the exact fp16 / bf16 widenings, and the choice of float tier (kernels_float.h). */
#include "kernels_float.h"

#include <string.h>

#include "cpu.h"

/* ====================================================================================
 * Types and conversions
 * ================================================================================== */

const char* qwen3_weight_type_name(uint32_t type) {
    switch (type) {
        case QWEN3_WEIGHT_Q8: return "q8";
        case QWEN3_WEIGHT_F32: return "f32";
        case QWEN3_WEIGHT_F16: return "f16";
        case QWEN3_WEIGHT_BF16: return "bf16";
        case QWEN3_WEIGHT_BLOCKS: return "blocks";
        default: return "?";
    }
}

uint32_t qwen3_weight_type_bytes(uint32_t type) {
    switch (type) {
        case QWEN3_WEIGHT_F32: return 4;
        case QWEN3_WEIGHT_F16:
        case QWEN3_WEIGHT_BF16: return 2;
        default: return 0;
    }
}

Qwen3Matrix qwen3_matrix_q8(Qwen3Q8Matrix q8) {
    Qwen3Matrix m;
    memset(&m, 0, sizeof m);
    m.type = QWEN3_WEIGHT_Q8;
    m.rows = q8.rows;
    m.cols = q8.cols;
    m.q8 = q8;
    return m;
}

Qwen3Matrix qwen3_matrix_blocks(Qwen3BlockMatrix blocks) {
    Qwen3Matrix m;
    memset(&m, 0, sizeof m);
    m.type = QWEN3_WEIGHT_BLOCKS;
    m.rows = blocks.rows;
    m.cols = blocks.cols;
    m.blocks = blocks;
    return m;
}

Qwen3Matrix qwen3_matrix_float(uint32_t type, const void* data, uint32_t rows, uint32_t cols) {
    Qwen3Matrix m;
    memset(&m, 0, sizeof m);
    m.type = type;
    m.rows = rows;
    m.cols = cols;
    m.data = data;
    return m;
}

static float bits_to_f32(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float qwen3_bf16_to_f32(uint16_t b) { return bits_to_f32((uint32_t)b << 16); }

float qwen3_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    const uint32_t mant = h & 0x3FFu;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in fp32 (10 bits times a power of two) */
        const float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 0x1F) return bits_to_f32(sign | 0x7F800000u | (mant << 13)); /* inf, NaN */
    return bits_to_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

void qwen3_matrix_row(float* out, const Qwen3Matrix* w, uint32_t row) {
    const uint32_t n = w->cols;
    switch (w->type) {
        case QWEN3_WEIGHT_Q8: {
            const uint32_t gs = w->q8.group_size;
            const int8_t* q = w->q8.q + (size_t)row * n;
            const float* s = w->q8.s + (size_t)row * (n / gs);
            for (uint32_t i = 0; i < n; i++) out[i] = (float)q[i] * s[i / gs];
            break;
        }
        case QWEN3_WEIGHT_F32:
            memcpy(out, (const float*)w->data + (size_t)row * n, (size_t)n * sizeof(float));
            break;
        case QWEN3_WEIGHT_F16: {
            const uint16_t* p = (const uint16_t*)w->data + (size_t)row * n;
            for (uint32_t i = 0; i < n; i++) out[i] = qwen3_f16_to_f32(p[i]);
            break;
        }
        case QWEN3_WEIGHT_BF16: {
            const uint16_t* p = (const uint16_t*)w->data + (size_t)row * n;
            for (uint32_t i = 0; i < n; i++) out[i] = qwen3_bf16_to_f32(p[i]);
            break;
        }
        case QWEN3_WEIGHT_BLOCKS: qwen3_block_row(out, &w->blocks, row); break;
        default:
            for (uint32_t i = 0; i < n; i++) out[i] = 0.0f;
    }
}

/* ====================================================================================
 * Scalar reference
 * ================================================================================== */

/* One body per storage type; WIDEN turns element j of the row into fp32. The lane loop
 * is element-wise, so a compiler may vectorise it without reordering any sum. This tier
 * stays apart from the SIMD tiers' shared loop (kernels_float_matvec.h) on purpose: it is
 * the reference they are tested against, so it shares no code with them. */
#define SCALAR_MATVEC(NAME, ELEM, WIDEN)                                                  \
    static void NAME(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin, \
                     uint32_t row_end) {                                                  \
        const uint32_t n = w->cols, full = n / 16 * 16;                                   \
        for (uint32_t r = row_begin; r < row_end; r++) {                                  \
            const ELEM* p = (const ELEM*)w->data + (size_t)r * n;                         \
            float acc[16];                                                                \
            for (int l = 0; l < 16; l++) acc[l] = 0.0f;                                   \
            for (uint32_t j = 0; j < full; j += 16) {                                     \
                for (uint32_t l = 0; l < 16; l++) acc[l] = acc[l] + WIDEN(p[j + l]) * x[j + l]; \
            }                                                                             \
            for (uint32_t j = full; j < n; j++) acc[j % 16] = acc[j % 16] + WIDEN(p[j]) * x[j]; \
            out[r - row_begin] = qwen3_reduce16(acc);                                           \
        }                                                                                 \
    }

#define WIDEN_F32(v) (v)
SCALAR_MATVEC(matvec_f32_scalar, float, WIDEN_F32)
SCALAR_MATVEC(matvec_f16_scalar, uint16_t, qwen3_f16_to_f32)
SCALAR_MATVEC(matvec_bf16_scalar, uint16_t, qwen3_bf16_to_f32)

const Qwen3FloatKernels qwen3_float_kernels_scalar = {
    .name = "scalar",
    .matvec = {NULL, matvec_f32_scalar, matvec_f16_scalar, matvec_bf16_scalar},
};

/* ====================================================================================
 * Tier choice
 * ================================================================================== */

typedef struct {
    const Qwen3FloatKernels* table;
    uint32_t needs; /* QWEN3_CPU_* bits */
} FloatTier;

static const FloatTier float_tiers[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {&qwen3_float_kernels_avx512, QWEN3_CPU_AVX512F | QWEN3_CPU_F16C},
    {&qwen3_float_kernels_avx2, QWEN3_CPU_AVX2 | QWEN3_CPU_F16C},
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    {&qwen3_float_kernels_neon, QWEN3_CPU_NEON},
#endif
    {&qwen3_float_kernels_scalar, 0},
};
#define N_FLOAT_TIERS (sizeof float_tiers / sizeof float_tiers[0])

static int float_supported(const FloatTier* t) { return (qwen3_cpu_flags() & t->needs) == t->needs; }

const Qwen3FloatKernels* qwen3_float_kernels_find(const char* name) {
    if (!name) return NULL;
    for (size_t i = 0; i < N_FLOAT_TIERS; i++) {
        if (strcmp(float_tiers[i].table->name, name) == 0) {
            return float_supported(&float_tiers[i]) ? float_tiers[i].table : NULL;
        }
    }
    return NULL;
}

const char* const* qwen3_float_kernels_all_names(void) {
    static const char* const names[] = {
#if defined(__x86_64__) || defined(_M_X64)
        "avx512", "avx2",
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
        "neon",
#endif
        "scalar", NULL};
    return names;
}

/* The int8 tier in use says how far the CPU may be pushed: each int8 tier maps to the
 * best float tier at or below its level, so forcing int8 "scalar" (or "avx2" on an
 * AVX-512 machine) forces the float kernels down with it. */
const Qwen3FloatKernels* qwen3_float_kernels_active(void) {
    const Qwen3KernelTable* k = qwen3_kernels_active();
    const Qwen3FloatKernels* f = NULL;
#if defined(__x86_64__) || defined(_M_X64)
    if (k == &qwen3_kernels_amx || k == &qwen3_kernels_avx512vnni) f = qwen3_float_kernels_find("avx512");
    if (!f && (k == &qwen3_kernels_amx || k == &qwen3_kernels_avx512vnni || k == &qwen3_kernels_avxvnni ||
               k == &qwen3_kernels_avx2)) {
        f = qwen3_float_kernels_find("avx2");
    }
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    if (k != &qwen3_kernels_scalar) f = qwen3_float_kernels_find("neon");
#endif
    (void)k;
    return f ? f : &qwen3_float_kernels_scalar;
}

void qwen3_matvec_float(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,
                        uint32_t row_end) {
    if (qwen3_weight_type_bytes(w->type) == 0) return; /* Q8 and blocks take int8 input */
    qwen3_float_kernels_active()->matvec[w->type](out, w, x, row_begin, row_end);
}

/* Rows per block of the batched product: 16 rows of a 4096-wide fp32 matrix are 256 KiB,
 * which stays in L2 while every token of the block reads them. */
#define MATMUL_ROW_BLOCK 16u

void qwen3_matmul_float(float* out, size_t out_stride, const Qwen3Matrix* w, const float* x,
                        size_t x_stride, uint32_t n_tokens, uint32_t row_begin, uint32_t row_end) {
    if (qwen3_weight_type_bytes(w->type) == 0) return; /* Q8 and blocks take int8 input */
    const Qwen3MatvecFloatFn fn = qwen3_float_kernels_active()->matvec[w->type];
    for (uint32_t r0 = row_begin; r0 < row_end; r0 += MATMUL_ROW_BLOCK) {
        const uint32_t r1 = row_end - r0 < MATMUL_ROW_BLOCK ? row_end : r0 + MATMUL_ROW_BLOCK;
        for (uint32_t t = 0; t < n_tokens; t++) {
            fn(out + (size_t)t * out_stride + (r0 - row_begin), w, x + (size_t)t * x_stride, r0, r1);
        }
    }
}
