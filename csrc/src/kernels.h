/*
 * kernels.h - the "how fast" side: int8 matrix-vector kernels per ISA tier, chosen at
 * run time. The transformer (the "what is computed" side) only calls through here.
 *
 * Numerics (docs/numerics.md#int8-dot-product-and-float-epilogue), identical in every
 * tier, bit for bit:
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

#include <stddef.h>
#include <stdint.h>

/* Unrolls the loop that follows completely, for the SIMD tiers' loops over a block's
 * rows, whose accumulators must stay in registers rather than a stack array. Clang
 * unrolls any constant trip count; GCC needs the largest one, `max`. */
#if defined(__clang__)
#define QWEN3_UNROLL_FULL(max) _Pragma("clang loop unroll(full)")
#elif defined(__GNUC__)
#define QWEN3_PRAGMA(text) _Pragma(#text)
#define QWEN3_UNROLL_FULL(max) QWEN3_PRAGMA(GCC unroll max)
#else
#define QWEN3_UNROLL_FULL(max)
#endif

/* A Q8 matrix in the qwen3.c layout: rows x cols int8 values row-major (HF [out, in]),
 * and rows x (cols / group_size) fp32 scales, one per group of group_size values. */
typedef struct {
    const int8_t* q;   /* (rows, cols) */
    const float* s;    /* (rows, cols / group_size) */
    uint32_t rows;
    uint32_t cols;
    uint32_t group_size;
} Qwen3Q8Matrix;

/* Asks for every line of rows [r0, r0 + rows) of w and of their scales at once, into L2
 * (locality 2: prefetcht1 on x86): a matvec call's first block, which no block before it
 * prefetched, would otherwise reach DRAM one group at a time. rows must exist. */
static inline void qwen3_prefetch_q8_rows(const Qwen3Q8Matrix* w, uint32_t r0, uint32_t rows) {
    const size_t n = w->cols, ng = n / w->group_size;
    const char* q = (const char*)(w->q + (size_t)r0 * n);
    const char* sc = (const char*)(w->s + (size_t)r0 * ng);
    for (size_t off = 0; off < (size_t)rows * n; off += 64) __builtin_prefetch(q + off, 0, 2);
    for (size_t off = 0; off < (size_t)rows * ng * sizeof(float); off += 64) __builtin_prefetch(sc + off, 0, 2);
}

/* An activation vector quantised per group: q (n), s (n / group_size). */
typedef struct {
    int8_t* q;
    float* s;
    uint32_t n;
    uint32_t group_size;
} Qwen3Q8Vector;

/* Several activation vectors (one per token of a prefill block), each quantised as a
 * Qwen3Q8Vector and stored one after another, plus the sum of each group's int8 values
 * (which the x86 VNNI kernels need to undo their unsigned-byte bias once per group). */
typedef struct {
    int8_t* q;      /* (n_tokens, n) */
    float* s;       /* (n_tokens, n / group_size) */
    int32_t* sums;  /* (n_tokens, n / group_size) sum of each group's q values */
    uint32_t n;
    uint32_t n_tokens;
    uint32_t group_size;
} Qwen3Q8Batch;

/* out[r - row_begin] for r in [row_begin, row_end): out[i] = row r of w dot x (see above).
 * Requires w->cols == x->n and equal group sizes; any group_size that divides cols. */
typedef void (*Qwen3MatvecQ8Fn)(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                                uint32_t row_begin, uint32_t row_end);

/* The matrix product of a batch: for every token t < x->n_tokens and row r in
 * [row_begin, row_end), out[t * out_stride + (r - row_begin)] = row r of w dot token t,
 * with EXACTLY the per-row, per-group numerics above, so each output has the bits that
 * matvec_q8 gives for that token alone: a prefill in blocks equals token-by-token
 * decoding bit for bit. Each weight is read once per call instead of once per token. */
typedef void (*Qwen3MatmulQ8Fn)(float* out, size_t out_stride, const Qwen3Q8Matrix* w,
                                const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end);

/*
 * Attention over a key cache stored in blocks of QWEN3_KV_BLOCK positions, each block
 * transposed per kv head to (head_dim, QWEN3_KV_BLOCK), so position p of the block is a
 * lane and a score's dot product runs in index order down the lanes (the scalar order,
 * vectorised across positions rather than across the sum).
 *
 * Every multiply-add of both sums is one fused multiply-add, acc = fmaf(x, y, acc), a
 * single rounding (docs/numerics.md#grouped-query-attention).
 *
 * attn_scores: for each query j < n_q (query j at q + j * q_stride) and position
 *   p < n_pos: scores[j * s_stride + p] = (sum over i in order of q[i] * k[p][i]) * scale,
 *   where k[p][i] = keys[(p / B) * block_stride + i * B + p % B] (B = QWEN3_KV_BLOCK).
 *   Lanes of the last block past n_pos may be computed from whatever the cache holds
 *   and written up to the block's end (s_stride leaves room: round n_pos up to B).
 * attn_values: out[j * o_stride + i] = sum over p < n_pos[j], ascending, of
 *   att[j * a_stride + p] * v[p * v_stride + i], for i < head_dim, starting from 0.0f,
 *   or, when `accumulate` is nonzero, from the value out[j * o_stride + i] already holds
 *   (so a sum over positions split into consecutive ranges, each call continuing the last,
 *   has the bits of one call over all of them). Each query has its own length (causal
 *   prefill, 0 allowed); n_pos must be non-decreasing in j.
 */
#define QWEN3_KV_BLOCK 16u
typedef void (*Qwen3AttnScoresFn)(float* scores, uint32_t s_stride, const float* q, uint32_t q_stride,
                                  uint32_t n_q, const float* keys, size_t block_stride, uint32_t n_pos,
                                  uint32_t head_dim, float scale);
typedef void (*Qwen3AttnValuesFn)(float* out, uint32_t o_stride, const float* att, uint32_t a_stride,
                                  const uint32_t* n_pos, uint32_t n_q, const float* v, uint32_t v_stride,
                                  uint32_t head_dim, int accumulate);

/*
 * Weights kept in a ggml block layout, as the GGUF file stores them (docs/formats.md#ggml-block-layouts;
 * the type numbers are ggml's). Every block unpacks (qwen3_block_unpack) to integer values q,
 * one integer multiplier per 16 values (Q6_K's int8 scales, else 1) and one fp32 scale and
 * offset per 32 values: value i = scale[i/32] * (m16[i/16] * q[i]) (+ offset[i/32] for the
 * types with one), which is ggml's dequantisation bit for bit.
 *
 * Product with activations quantised per 32 values (q, scale xs, group sum xsum; the same
 * Qwen3Q8Batch as the Q8 path, group_size 32), per output row, in every tier
 * (docs/numerics.md#ggml-block-weights):
 *   acc = 0.0f
 *   for each 32-value chunk c of the row, in order:
 *     isum = m16[2c] * (sum of its first 16 q*xq) + m16[2c+1] * (sum of the last 16)  (exact)
 *     t = (float)isum * scale[c]
 *     with an offset: t = t + (float)xsum[c] * offset[c]    (product, then sum, rounded)
 *     acc = acc + t * xs[c]
 *   out = acc
 * For Q8_0 and Q4_0 (m16 = 1, no offset) this is exactly the Q8 path's group-32 numerics.
 */
typedef enum {
    QWEN3_BLOCK_Q4_0 = 2,
    QWEN3_BLOCK_Q4_1 = 3,
    QWEN3_BLOCK_Q5_0 = 6,
    QWEN3_BLOCK_Q5_1 = 7,
    QWEN3_BLOCK_Q8_0 = 8,
    QWEN3_BLOCK_Q4_K = 12,
    QWEN3_BLOCK_Q5_K = 13,
    QWEN3_BLOCK_Q6_K = 14
} Qwen3BlockType;

#define QWEN3_BLOCK_MAX_VALUES 256u

/* A (rows, cols) matrix of `type` blocks, row r at data + r * row_bytes. */
typedef struct {
    const uint8_t* data;
    size_t row_bytes;
    uint32_t type; /* Qwen3BlockType */
    uint32_t rows;
    uint32_t cols; /* a multiple of the block's values */
} Qwen3BlockMatrix;

/* One block unpacked (see above); blocks of 32 values fill the first entries only. */
typedef struct {
    int8_t q[QWEN3_BLOCK_MAX_VALUES];
    int32_t m16[QWEN3_BLOCK_MAX_VALUES / 16];
    float scale[QWEN3_BLOCK_MAX_VALUES / 32];
    float offset[QWEN3_BLOCK_MAX_VALUES / 32];
} Qwen3UnpackedBlock;

/* Values per block (32 or 256) of a block type; 0 for any other number. */
uint32_t qwen3_block_values(uint32_t type);
/* Bytes per block; 0 for any other number. */
uint32_t qwen3_block_bytes(uint32_t type);
/* ggml's name ("Q4_K"), or "?". */
const char* qwen3_block_name(uint32_t type);
/* 1 when values carry an offset (Q4_1, Q5_1, Q4_K, Q5_K). */
int qwen3_block_has_offset(uint32_t type);
/* Unpacks the block at `blk` (qwen3_block_bytes(type) bytes) of a block type. */
void qwen3_block_unpack(uint32_t type, const uint8_t* blk, Qwen3UnpackedBlock* out);
/* acc plus an unpacked block's n_chunks chunk products against activations (xq, xs, xsum
 * at the block's first value / chunk), in chunk order: the reference's steps, for SIMD tiers'
 * tails. off: the type has an offset. */
float qwen3_block_dot_ref(const Qwen3UnpackedBlock* u, uint32_t n_chunks, int off, const int8_t* xq,
                          const float* xs, const int32_t* xsum, float acc);
/* Row `row` of w dequantised to fp32, as ggml does. */
void qwen3_block_row(float* out, const Qwen3BlockMatrix* w, uint32_t row);

/* For every token t < x->n_tokens and row r in [row_begin, row_end):
 * out[t * out_stride + (r - row_begin)] = row r of w dot token t, with the numerics above
 * (the same bits for a token whatever the batch). Requires x->group_size == 32. */
typedef void (*Qwen3MatmulBlocksFn)(float* out, size_t out_stride, const Qwen3BlockMatrix* w,
                                    const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end);
/* The reference (kernels_blocks.c), for the tiers without their own. */
void qwen3_matmul_blocks_ref(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                             uint32_t row_begin, uint32_t row_end);
#if defined(__x86_64__) || defined(_M_X64)
/* Every block type with each x86 tier's integer dot product (kernels_blocks_avx2.c,
 * kernels_blocks_avx512.c). */
void qwen3_matmul_blocks_avx2(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                              uint32_t row_begin, uint32_t row_end);
void qwen3_matmul_blocks_avxvnni(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                                 uint32_t row_begin, uint32_t row_end);
void qwen3_matmul_blocks_avx512vnni(float* out, size_t out_stride, const Qwen3BlockMatrix* w,
                                    const Qwen3Q8Batch* x, uint32_t row_begin, uint32_t row_end);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
/* Every block type with AdvSIMD (neon and sve tiers) or sdot (neondot), kernels_blocks_neon.c. */
void qwen3_matmul_blocks_neon(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                              uint32_t row_begin, uint32_t row_end);
void qwen3_matmul_blocks_neondot(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                                 uint32_t row_begin, uint32_t row_end);
#endif

/* Token t of a batch: x (b->n floats) quantised as qwen3_quantize_q8 does, into row t,
 * plus each group's sum of q values into b->sums. The same bits in every tier. */
typedef void (*Qwen3QuantizeRowFn)(const float* x, Qwen3Q8Batch* b, uint32_t t);

/*
 * The fp32 elementwise parts of attention and the feed-forward, with one exp for all
 * tiers: qwen3_exp_ref (kernels_exp_loops.h) evaluates e^x in fp32 mul/add steps (Cody-Waite
 * reduction by ln 2, a degree-7 Taylor polynomial, 2^k from exponent bits, no FMA), within
 * about 1 ulp of e^x (docs/numerics.md#exp-softmax-and-silu); SIMD tiers reproduce it lane
 * by lane with the constants below.
 *   softmax_exp: attention's softmax without its division, per row (row r: lens[r] values
 *             at x + r * stride): m = max x (NaN skipped unless x[0] is NaN);
 *             x[i] = exp(x[i] - m); sums[r] = their sum in 16 lanes (lane l adds the x[i]
 *             with i % 16 == l, i ascending, from 0.0f), the lanes then folded as
 *             lane[l] + lane[l + w] for w = 8, 4, 2, 1 (lane 0 is the sum). The caller
 *             divides the weighted sum of values by sums[r] (docs/numerics.md#exp-softmax-and-silu).
 *   silu_mul: g[i] = (g[i] * (1.0f / (1.0f + exp(-g[i])))) * u[i]
 * The plain softmax (qwen3_softmax_ref: the sum in index order, then x[i] / sum) is the
 * MoE router's.
 */
typedef void (*Qwen3SoftmaxExpFn)(float* x, size_t stride, uint32_t rows, const uint32_t* lens, float* sums);
typedef void (*Qwen3SiluMulFn)(float* g, const float* u, uint32_t n);
#define QWEN3_EXP_MAGIC 0x1.8p23f       /* 1.5 * 2^23: adding it rounds to an integer */
#define QWEN3_EXP_LOG2E 0x1.715476p+0f  /* 1 / ln 2 */
#define QWEN3_EXP_LN2_HI 0x1.62e4p-1f   /* ln 2 to 16 significant bits */
#define QWEN3_EXP_LN2_LO 0x1.7f7d1cp-20f /* ln 2 - LN2_HI */
#define QWEN3_EXP_C3 0x1.555556p-3f     /* 1/3!, ..., 1/7!, rounded to fp32 */
#define QWEN3_EXP_C4 0x1.555556p-5f
#define QWEN3_EXP_C5 0x1.111112p-7f
#define QWEN3_EXP_C6 0x1.6c16c2p-10f
#define QWEN3_EXP_C7 0x1.a01a02p-13f
float qwen3_exp_ref(float x);
void qwen3_softmax_ref(float* x, uint32_t n);
void qwen3_softmax_exp_rows_ref(float* x, size_t stride, uint32_t rows, const uint32_t* lens, float* sums);
void qwen3_silu_mul_ref(float* g, const float* u, uint32_t n);

/* The sampler's softmax (sampler.c, steps 2 and 3 after the penalties; docs/sampling.md):
 *   p[i] = z[i] / t (t > 0, finite); m = the largest p[i] (qwen3_argmax's: NaN skipped);
 *   p[i] = qwen3_sampler_exp(p[i] - m); sum = p[0] + p[1] + ... in index order, one fp32
 *   accumulator; p[i] = p[i] / sum. Returns the largest p[i] (0 when none is above 0).
 * n >= 1; z may be p. SIMD tiers evaluate qwen3_sampler_exp's double-precision steps lane
 * by lane (kernels_sampler_*.c) and keep the one running sum, so every tier gives the
 * reference's bits, which the TypeScript sampler also gives. */
typedef float (*Qwen3SamplerSoftmaxFn)(float* p, const float* z, uint32_t n, float t);
float qwen3_sampler_softmax_ref(float* p, const float* z, uint32_t n, float t);
#if defined(__x86_64__) || defined(_M_X64)
float qwen3_sampler_softmax_avx2(float* p, const float* z, uint32_t n, float t);
float qwen3_sampler_softmax_avx512(float* p, const float* z, uint32_t n, float t);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
float qwen3_sampler_softmax_neon(float* p, const float* z, uint32_t n, float t);
#endif

typedef struct {
    const char* name;          /* "scalar", "avx2", "avx512vnni", "amx", "neon", "sve" */
    Qwen3MatvecQ8Fn matvec_q8;
    Qwen3MatmulQ8Fn matmul_q8;
    Qwen3MatmulBlocksFn matmul_blocks;
    Qwen3QuantizeRowFn quantize_row;
    Qwen3AttnScoresFn attn_scores;
    Qwen3AttnValuesFn attn_values;
    Qwen3SoftmaxExpFn softmax_exp;
    Qwen3SiluMulFn silu_mul;
    Qwen3SamplerSoftmaxFn sampler_softmax;
} Qwen3KernelTable;

/* The reference batched product and attention, for tiers without their own: matmul_q8
 * as matvec_q8 of the given tier per token (bit-identical by construction). */
void qwen3_matmul_q8_by_matvec(Qwen3MatvecQ8Fn matvec, float* out, size_t out_stride,
                               const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x, uint32_t row_begin,
                               uint32_t row_end);
void qwen3_attn_scores_ref(float* scores, uint32_t s_stride, const float* q, uint32_t q_stride, uint32_t n_q,
                           const float* keys, size_t block_stride, uint32_t n_pos, uint32_t head_dim,
                           float scale);
void qwen3_attn_values_ref(float* out, uint32_t o_stride, const float* att, uint32_t a_stride,
                           const uint32_t* n_pos, uint32_t n_q, const float* v, uint32_t v_stride,
                           uint32_t head_dim, int accumulate);

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
/* amx (kernels_amx.c): avx512vnni with the batched product (matmul_q8) on AMX-INT8 tiles. */
/* Batches of fewer tokens go to avx512vnni, whose small-batch product streams each weight once
 * at the matvec's rate (batched decode, verify passes, short prompts); tiles pay for their
 * packing only on larger blocks. Measured on the AMX Xeon (bench-matvec --tier amx|avx512vnni,
 * 1024x1024, 2048x1024, 3072x1024 and 1024x3072, 1 and 2 threads, weights from DRAM): vnni
 * ahead by 6-13% at 20 tokens, within 5% either way at 24, amx ahead by 1-9% from 28. */
#define AMX_MIN_TOKENS 25u
extern const Qwen3KernelTable qwen3_kernels_amx;
/* NULL when the amx tier may run in this process, else why not (the CPU lacks AMX, the OS
 * refused the tile state, or the self-check against avx512vnni failed). Decided once; the
 * first call asks the OS for the tile state and runs the self-check. */
const char* qwen3_amx_unavailable(void);
/* The amx tier's batched product on software-emulated tiles (any x86_64 CPU), for the
 * tests: 1 when it ran, 0 when the shape is one the tier hands to avx512vnni (nothing
 * written), -1 when the emulated tiles met an operation the hardware would fault on. */
int qwen3_matmul_q8_amx_emulated(float* out, size_t out_stride, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x,
                                 uint32_t row_begin, uint32_t row_end);
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
extern const Qwen3KernelTable qwen3_kernels_neon;    /* AdvSIMD only (smull/sadalp) */
extern const Qwen3KernelTable qwen3_kernels_neondot; /* AdvSIMD + sdot (FEAT_DotProd) */
extern const Qwen3KernelTable qwen3_kernels_sve;
#endif

/* Quantises n floats per group (docs/numerics.md#activations): scale = max|x| / 127 (a
 * group of zeros gets scale 0 and q = 0), q = round-half-away-from-zero(x / scale).
 * Shared by all tiers so activations are the same bits everywhere. */
void qwen3_quantize_q8(const float* x, Qwen3Q8Vector* out);

/* The reference Qwen3QuantizeRowFn: qwen3_quantize_q8, then the group sums. */
void qwen3_quantize_q8_token(const float* x, Qwen3Q8Batch* out, uint32_t t);

/* Token t of a batch as a vector view. */
static inline Qwen3Q8Vector qwen3_q8_batch_row(const Qwen3Q8Batch* b, uint32_t t) {
    const uint32_t ng = b->n / b->group_size;
    Qwen3Q8Vector v = {b->q + (size_t)t * b->n, b->s + (size_t)t * ng, b->n, b->group_size};
    return v;
}

#endif
