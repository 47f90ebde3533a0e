/*
 * sampler.h - picking the next token from logits: greedy argmax, or presence and frequency
 * penalties, temperature, top-k, min-p and top-p with qwen3.c's xorshift64* RNG
 * (docs/sampling.md#algorithm).
 * The exact order of operations is written at the top of sampler.c; the TypeScript
 * sampler (src/text/sampler.ts) reproduces it token for token.
 */
#ifndef QWEN3_SAMPLER_H
#define QWEN3_SAMPLER_H

#include <stdint.h>

#include "qwen3_inference.h"

typedef struct {
    Qwen3SamplerConfig config; /* validated; seed as given (0 = clock) */
    uint64_t rng;              /* xorshift64* state, never 0 */
    uint32_t vocab_size;
    float* probs;              /* (vocab_size) working copy of the logits, then probabilities */
    uint32_t* candidates;      /* (vocab_size) token ids that survive the filters */
    uint32_t* scratch;         /* (vocab_size) the radix sort's second buffer of ids */
    uint32_t* counts;          /* (vocab_size) times each token was sampled since configure */
} Qwen3Sampler;

/* Allocates the buffers; starts greedy. QWEN3_OK or QWEN3_ERR_OUT_OF_MEMORY (error set). */
int32_t qwen3_sampler_init(Qwen3Sampler* s, uint32_t vocab_size);

/* Frees the buffers; a zeroed sampler is ignored. */
void qwen3_sampler_deinit(Qwen3Sampler* s);

/* Validates and applies settings, reseeds the RNG and clears the token counts of the penalties.
 * QWEN3_OK or QWEN3_ERR_INVALID_ARGUMENT naming the field. */
int32_t qwen3_sampler_configure(Qwen3Sampler* s, const Qwen3SamplerConfig* config);

/* Picks a token from vocab_size logits and counts it for the penalties. */
int32_t qwen3_sampler_sample(Qwen3Sampler* s, const float* logits);

/* sample's two halves: the pick (it draws from the RNG) and the count, for a caller that
 * may refuse a pick (constrained decoding), as the TypeScript sampler's pick and record. */
int32_t qwen3_sampler_pick(Qwen3Sampler* s, const float* logits);
void qwen3_sampler_record(Qwen3Sampler* s, int32_t token);

/* Step 3's exp, e^x rounded to float by the project's own double-precision steps (the
 * TypeScript sampler's samplerExp gives the same bits; docs/sampling.md#the-samplers-exp). */
float qwen3_sampler_exp(float x);

/* qwen3_sampler_exp's table and constants, shared with the SIMD tiers that evaluate it lane
 * by lane (kernels_sampler_*.c): 2^(j/32) for j = 0 .. 31; 32 / ln2; ln2 / 32 as a 24-bit
 * high part and the rest; 1.5 * 2^52 (adding and subtracting it rounds a double to an
 * integer). */
extern const double qwen3_sampler_exp2_j32[32];
#define QWEN3_SAMPLER_EXP_SCALE (32.0 / 0.69314718055994530942)
#define QWEN3_SAMPLER_EXP_LN2_32_HI ((double)(float)(0.69314718055994530942 / 32.0))
#define QWEN3_SAMPLER_EXP_LN2_32_LO (0.69314718055994530942 / 32.0 - QWEN3_SAMPLER_EXP_LN2_32_HI)
#define QWEN3_SAMPLER_EXP_MAGIC 6755399441055744.0

/* Index of the largest value, the lowest index on ties; NaN never wins (0 if all NaN). */
int32_t qwen3_argmax(const float* x, uint32_t n);

/* xorshift64*: the next 32 random bits, and a float in [0, 1) made from their top 24. */
uint32_t qwen3_rng_u32(uint64_t* state);
float qwen3_rng_f32(uint64_t* state);

#endif
