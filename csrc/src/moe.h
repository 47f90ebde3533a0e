/*
 * moe.h - the mixture-of-experts feed-forward of Qwen3-MoE (GGUF arch `qwen3moe`;
 * docs/numerics.md#mixture-of-experts): a router picks k of n experts per token, each a
 * SwiGLU of its own width, and the block's output is their weighted sum.
 */
#ifndef QWEN3_MOE_H
#define QWEN3_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "kernels_float.h"

/* Largest expert_count accepted (Qwen3-235B-A22B has 128). */
#define QWEN3_MAX_EXPERTS 1024u

/* The mixture's shape; n_experts is 0 in a dense model. */
typedef struct {
    uint32_t n_experts;
    uint32_t n_used;     /* experts per token (top-k), 1..n_experts */
    uint32_t hidden_dim; /* one expert's feed-forward width */
    uint32_t norm_weights; /* 1: the k weights renormalised to sum 1 (HF norm_topk_prob) */
} Qwen3MoeShape;

/* One sparse block's weights: views of the file's 3-D tensors, expert e's matrix being
 * the e-th slice (Q8_0 converted to Q8 per expert). */
typedef struct {
    const float* router; /* (n_experts, dim) fp32 */
    Qwen3Matrix* gate;   /* (n_experts) each (hidden_dim, dim) */
    Qwen3Matrix* up;     /* (n_experts) each (hidden_dim, dim) */
    Qwen3Matrix* down;   /* (n_experts) each (dim, hidden_dim) */
} Qwen3MoeLayer;

/* Routes one token: logits[e] = router row e . h (fp32, summed in index order), softmax
 * over the experts into probs, then the k most probable experts, most probable first,
 * the lower index first on ties, into chosen, and their weights into weights: with norm,
 * probs[chosen[j]] / (the k probabilities summed in that order); without, probs[chosen[j]]. */
void qwen3_moe_route(const float* router, const float* h, uint32_t dim, uint32_t n_experts, uint32_t k, int norm,
                     float* probs, uint32_t* chosen, float* weights);

/* qwen3_moe_route for each of n tokens (token t's input at x + t * x_stride, its results
 * at probs + t * n_experts, chosen + t * k, weights + t * k), the same bits: the logits of
 * 16 tokens at a time with the tokens in vector lanes, each lane summing in index order
 * (fewer than 4 tokens go one by one). xt: scratch of 16 * dim floats. simd: 1 takes the
 * AVX2 build of the loops (x86 only; the caller checks the CPU has AVX2), 0 the generic one. */
void qwen3_moe_route_lanes(const float* router, const float* x, size_t x_stride, uint32_t n, uint32_t dim,
                           uint32_t n_experts, uint32_t k, int norm, int simd, float* xt, float* probs,
                           uint32_t* chosen, float* weights);

/* Per-context scratch of the sparse blocks (NULL for a dense model). */
typedef struct Qwen3MoeScratch Qwen3MoeScratch;

struct Qwen3Context;
struct Qwen3Model;

/* Allocates the scratch for blocks of up to `block` tokens; QWEN3_OK or an error. */
int32_t qwen3_moe_scratch_new(const struct Qwen3Model* m, uint32_t block, Qwen3MoeScratch** out);

void qwen3_moe_scratch_free(Qwen3MoeScratch* s);

/* The sparse feed-forward of the context's n tokens: reads the normed inputs c->xb (row
 * t at t * dim), writes each token's weighted sum of its experts' outputs to c->xb2 (row
 * t at t * dim). The block's tokens are grouped by expert, so each expert's weights run
 * once for all its tokens (a decode step reads only the chosen experts), and every chosen
 * expert's products share one thread-pool run (tasks: expert x row range). */
void qwen3_moe_forward(struct Qwen3Context* c, const Qwen3KernelTable* k, const Qwen3MoeLayer* layer,
                       uint32_t n);

#endif
