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

/* Index of the largest value, the lowest index on ties; NaN never wins (0 if all NaN). */
int32_t qwen3_argmax(const float* x, uint32_t n);

/* xorshift64*: the next 32 random bits, and a float in [0, 1) made from their top 24. */
uint32_t qwen3_rng_u32(uint64_t* state);
float qwen3_rng_f32(uint64_t* state);

#endif
