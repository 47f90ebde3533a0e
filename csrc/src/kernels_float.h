/*
 * kernels_float.h - weight matrices of any storage type, and the unquantised
 * matrix-vector kernels: fp32, fp16 or bf16 weights times an fp32 activation, summed in
 * fp32, with no quantisation of the activation (the path that lets a forward pass be
 * compared tightly with a float reference such as Hugging Face transformers).
 *
 * Numerics, identical in every tier, bit for bit (and reproduced by src/reference/ts_engine.ts):
 *   for each output row r:
 *     acc[l] = 0.0f for the 16 lanes l = 0..15
 *     for j = 0, 1, ..., cols-1:  acc[j % 16] = acc[j % 16] + (w[r][j] * x[j])
 *                                 (w widened to fp32 exactly; product and sum each
 *                                  rounded to fp32, no FMA)
 *     then a fixed tree:  a8[l] = acc[l] + acc[l + 8]   (l < 8)
 *                         a4[l] = a8[l] + a8[l + 4]     (l < 4)
 *                         a2[l] = a4[l] + a4[l + 2]     (l < 2)
 *                         out[r] = a2[0] + a2[1]
 * Sixteen lanes are one AVX-512 register, two AVX2 or four NEON registers, and the tree
 * is the order their horizontal reductions take naturally, so SIMD tiers keep the scalar
 * bits while streaming each row once.
 */
#ifndef QWEN3_KERNELS_FLOAT_H
#define QWEN3_KERNELS_FLOAT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

/* How a weight matrix is stored. */
typedef enum {
    QWEN3_WEIGHT_Q8 = 0,   /* Qwen3Q8Matrix: int8 + one fp32 scale per group (W8A8 path) */
    QWEN3_WEIGHT_F32 = 1,  /* IEEE binary32 */
    QWEN3_WEIGHT_F16 = 2,  /* IEEE binary16 */
    QWEN3_WEIGHT_BF16 = 3, /* bfloat16: the top half of a binary32 */
    QWEN3_WEIGHT_BLOCKS = 4, /* Qwen3BlockMatrix: ggml blocks in the file's layout (int8 input) */
    QWEN3_WEIGHT_TYPE_COUNT = 5
} Qwen3WeightType;

/* A weight matrix of any storage type: rows x cols, row-major (HF [out, in]). */
typedef struct {
    uint32_t type;    /* Qwen3WeightType */
    uint32_t rows;
    uint32_t cols;
    Qwen3Q8Matrix q8; /* type QWEN3_WEIGHT_Q8: the int8 values and scales */
    const void* data; /* float types: (rows, cols) values of that type */
    Qwen3BlockMatrix blocks; /* type QWEN3_WEIGHT_BLOCKS: the blocks and their type */
} Qwen3Matrix;

/* "q8", "f32", "f16", "bf16", "blocks" ("?" for anything else). */
const char* qwen3_weight_type_name(uint32_t type);

/* Bytes per value of a float type (4 or 2); 0 for Q8, blocks or an unknown type. */
uint32_t qwen3_weight_type_bytes(uint32_t type);

/* A Q8 matrix wrapped as a Qwen3Matrix. */
Qwen3Matrix qwen3_matrix_q8(Qwen3Q8Matrix q8);

/* A block matrix wrapped as a Qwen3Matrix. */
Qwen3Matrix qwen3_matrix_blocks(Qwen3BlockMatrix blocks);

/* A float matrix of `type` over `data` ((rows, cols) values). */
Qwen3Matrix qwen3_matrix_float(uint32_t type, const void* data, uint32_t rows, uint32_t cols);

/* Row `row` of w as fp32 (Q8: q * scale of its group; floats: widened exactly; blocks:
 * dequantised as ggml does). */
void qwen3_matrix_row(float* out, const Qwen3Matrix* w, uint32_t row);

/* out[r - row_begin] = row r of w (a float type) dot x, r in [row_begin, row_end), with
 * the numerics above. */
typedef void (*Qwen3MatvecFloatFn)(float* out, const Qwen3Matrix* w, const float* x,
                                   uint32_t row_begin, uint32_t row_end);

typedef struct {
    const char* name;                 /* "scalar", "avx2", "avx512", "neon" */
    Qwen3MatvecFloatFn matvec[QWEN3_WEIGHT_TYPE_COUNT]; /* by Qwen3WeightType; [Q8], [BLOCKS] NULL */
} Qwen3FloatKernels;

/* The float tier that goes with the int8 tier in use (qwen3_kernels_active): forcing
 * "scalar" there (QWEN3_KERNEL, qwen3_kernel_select) forces the scalar float kernels too. */
const Qwen3FloatKernels* qwen3_float_kernels_active(void);

/* A float tier by name, or NULL when not built for this architecture or not supported
 * by this CPU. Tests run each one against "scalar". */
const Qwen3FloatKernels* qwen3_float_kernels_find(const char* name);

/* Names of the float tiers built for this architecture (NULL-terminated). */
const char* const* qwen3_float_kernels_all_names(void);

/* out[r - row_begin] = row r dot x for the active tier, whatever w's float type. */
void qwen3_matvec_float(float* out, const Qwen3Matrix* w, const float* x, uint32_t row_begin,
                        uint32_t row_end);

/* The batched product: for each token t < n_tokens (its input at x + t * x_stride),
 * out[t * out_stride + (r - row_begin)] = row r dot token t, each with exactly the bits
 * qwen3_matvec_float gives for that token alone. Rows are the outer loop in blocks small
 * enough to stay in cache while every token reads them. */
void qwen3_matmul_float(float* out, size_t out_stride, const Qwen3Matrix* w, const float* x,
                        size_t x_stride, uint32_t n_tokens, uint32_t row_begin, uint32_t row_end);

/* The fixed reduction tree above, for every tier's last step. */
static inline float qwen3_reduce16(const float acc[16]) {
    float a8[8], a4[4], a2[2];
    for (int l = 0; l < 8; l++) a8[l] = acc[l] + acc[l + 8];
    for (int l = 0; l < 4; l++) a4[l] = a8[l] + a8[l + 4];
    for (int l = 0; l < 2; l++) a2[l] = a4[l] + a4[l + 2];
    return a2[0] + a2[1];
}

/* Exact widening conversions (shared by the tiers' tail code and the tests). */
float qwen3_f16_to_f32(uint16_t h);
float qwen3_bf16_to_f32(uint16_t b);

/* Per-tier tables, defined in kernels_float*.c; the SIMD tiers share one loop,
 * kernels_float_matvec.h, and differ only in their vector mappings and rows per block. */
extern const Qwen3FloatKernels qwen3_float_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const Qwen3FloatKernels qwen3_float_kernels_avx2;   /* AVX2 + F16C */
extern const Qwen3FloatKernels qwen3_float_kernels_avx512; /* AVX-512F */
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
extern const Qwen3FloatKernels qwen3_float_kernels_neon;
#endif

#endif
