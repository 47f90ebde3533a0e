/*
 * kernels.h - the "how fast" side: int8 matrix-vector kernels per ISA tier, chosen at
 * run time. The transformer (the "what is computed" side) only calls through here.
 *
 * Numerics (SPEC section 4), identical in every tier, bit for bit:
 *   for each output row r:
 *     acc = 0.0f
 *     for each group g (in order 0, 1, ...):
 *       isum = sum over the group of (int32)w[r][k] * (int32)x[k]     (exact in int32)
 *       acc = acc + ((float)isum * w_scale[r][g]) * x_scale[g]        (three fp32 roundings, no FMA)
 *     out[r] = acc
 * SIMD tiers keep this order per row by putting rows (not groups) in vector lanes for
 * the float part, so every tier returns the same bits as the scalar reference.
 */
#ifndef QWEN3_KERNELS_H
#define QWEN3_KERNELS_H

#include <stdint.h>

/* A Q8 matrix in the qwen3.c layout: rows x cols int8 values row-major (HF [out, in]),
 * and rows x (cols / group_size) fp32 scales, one per group of group_size values. */
typedef struct {
    const int8_t* q;   /* (rows, cols) */
    const float* s;    /* (rows, cols / group_size) */
    uint32_t rows;
    uint32_t cols;
    uint32_t group_size;
} Qwen3Q8Matrix;

/* An activation vector quantised per group: q (n), s (n / group_size). */
typedef struct {
    int8_t* q;
    float* s;
    uint32_t n;
    uint32_t group_size;
} Qwen3Q8Vector;

/* out[r - row_begin] for r in [row_begin, row_end): out[i] = row r of w dot x (see above).
 * Requires w->cols == x->n and equal group sizes; any group_size that divides cols. */
typedef void (*Qwen3MatvecQ8Fn)(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                                uint32_t row_begin, uint32_t row_end);

typedef struct {
    const char* name;          /* "scalar", "avx2", "avx512vnni", "neon", "sve" */
    Qwen3MatvecQ8Fn matvec_q8;
} Qwen3KernelTable;

/* The tier in use (selected on first call: best supported, or $QWEN3_KERNEL). */
const Qwen3KernelTable* qwen3_kernels_active(void);

/* A tier by name, or NULL when unknown, not built for this architecture, or not
 * supported by this CPU. Tests use it to run every tier against "scalar". */
const Qwen3KernelTable* qwen3_kernels_find(const char* name);

/* Names of all tiers built into this library for this architecture (NULL-terminated),
 * whether or not this CPU supports them. */
const char* const* qwen3_kernels_all_names(void);

/* Why the active tier was chosen, e.g. "QWEN3_KERNEL=avx9 ignored: no such tier (...);
 * using avx512vnni" - so a forced tier that did not take is visible in `info` output. */
const char* qwen3_kernels_note(void);

/* Per-tier tables, defined in kernels_<tier>.c. */
extern const Qwen3KernelTable qwen3_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
extern const Qwen3KernelTable qwen3_kernels_avx2;
extern const Qwen3KernelTable qwen3_kernels_avxvnni;   /* AVX2 + AVX-VNNI (256-bit vpdpbusd) */
extern const Qwen3KernelTable qwen3_kernels_avx512vnni;
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
extern const Qwen3KernelTable qwen3_kernels_neon;    /* AdvSIMD only (smull/sadalp) */
extern const Qwen3KernelTable qwen3_kernels_neondot; /* AdvSIMD + sdot (FEAT_DotProd) */
extern const Qwen3KernelTable qwen3_kernels_sve;
#endif

/* Quantises n floats per group (SPEC section 4): scale = max|x| / 127 (a group of zeros
 * gets scale 0 and q = 0), q = round-half-away-from-zero(x / scale). Shared by all
 * tiers so activations are the same bits everywhere. */
void qwen3_quantize_q8(const float* x, Qwen3Q8Vector* out);

#endif
