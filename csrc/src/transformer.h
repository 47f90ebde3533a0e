/*
 * transformer.h - the Qwen3 forward pass (docs/numerics.md#forward-pass) and the context
 * that carries one sequence's state: KV cache, position, scratch buffers, logits, sampler.
 *
 * Matmuls go through the kernel tier in use (kernels.h) with each activation quantised
 * once per matmul input; everything else (norms, RoPE, softmax, attention, residuals)
 * is the plain fp32 C below, compiled once, so every tier gives the same logits.
 */
#ifndef QWEN3_TRANSFORMER_H
#define QWEN3_TRANSFORMER_H

#include <stdint.h>

#include "kernels.h"
#include "model.h"
#include "platform.h"
#include "sampler.h"

/* Tokens a forward pass takes at once: a prefill runs in blocks of this many tokens,
 * each weight matrix read once per block (matrix-matrix products). 128 rather than 64: on
 * the 2-core AMX Xeon of bench/RESULTS.md a 64-token block left the tile product waiting
 * on weights streamed from DRAM (pp512 +10% at 128 with the amx tier's 128-token passes). */
#define QWEN3_FORWARD_BLOCK 128u
/* A call's blocks are halved, down to this many tokens, while the attention scores they
 * touch, n_heads x block x last position floats, would pass QWEN3_ATT_BUDGET bytes
 * (transformer.c call_block; docs/numerics.md#mixture-of-experts). */
#define QWEN3_MIN_FORWARD_BLOCK 64u
#define QWEN3_ATT_BUDGET (256ull << 20)

/* A Qwen3-MoE model's block: each expert sees about k / n_experts of the block's tokens
 * (8 of 128), too few to pay for unpacking its weights, so its blocks are larger. */
#define QWEN3_MOE_FORWARD_BLOCK 256u

/* The largest block of any model (stack arrays per block). */
#define QWEN3_MAX_FORWARD_BLOCK (QWEN3_MOE_FORWARD_BLOCK > QWEN3_FORWARD_BLOCK ? QWEN3_MOE_FORWARD_BLOCK : QWEN3_FORWARD_BLOCK)

struct Qwen3Context {
    Qwen3Model* model;
    uint32_t ctx_len;      /* positions this context holds */
    uint32_t pos;          /* tokens in the KV cache = position of the next token */
    uint32_t committed;    /* positions whose cache pages are committed (Windows) */
    int has_logits;        /* logits belong to the token at pos - 1 */
    uint32_t block;        /* tokens per forward block: min(QWEN3_FORWARD_BLOCK, ctx_len), or
                            * the MoE block (QWEN3_MOE_FORWARD_BLOCK) */
    uint32_t ctx_blocks;   /* ctx_len / QWEN3_KV_BLOCK, rounded up */
    uint32_t att_stride;   /* floats per score row: ctx_blocks * QWEN3_KV_BLOCK */
    uint32_t att_chunk;    /* positions per key/value chunk of the tiled attention, a
                            * multiple of QWEN3_KV_BLOCK (set by qwen3_context_init; tests
                            * lower it and att_tile_bytes: the bits must not change) */
    uint32_t att_tile_bytes; /* largest scores tile of one attention task (see transformer.c) */
    Qwen3Region lazy;      /* key_cache, value_cache and att, committed as positions fill */
    float* key_cache;      /* (n_layers, n_kv_heads, ctx_blocks, head_dim, QWEN3_KV_BLOCK):
                            * blocks of positions, transposed so positions are lanes, a
                            * slab per (layer, kv head) (f32 cache only) */
    float* value_cache;    /* (n_layers, n_kv_heads, ctx_len, head_dim) (f32 cache only) */
    uint16_t* key_f16;     /* f16: key_cache's layout, binary16 (docs/numerics.md#fp16-kv-cache) */
    uint16_t* value_f16;   /* f16: value_cache's layout, binary16 */
    uint32_t kv_type;      /* a Qwen3KvType (docs/numerics.md#int8-kv-cache, #fp16-kv-cache) */
    uint32_t kv_group;     /* q8: values per scale, 32 or head_dim */
    uint64_t kv_bytes;     /* bytes of the whole KV cache (reserved, committed as used) */
    int8_t* key_q8;        /* q8: (n_layers, n_kv_heads, ctx_len, head_dim): one kv head's
                            * keys are the rows of an int8 matrix, as the scores read them */
    float* key_scale;      /* q8: (n_layers, n_kv_heads, ctx_len, head_dim / kv_group) */
    int8_t* value_q8;      /* q8: (n_layers, n_kv_heads, ctx_len, head_dim): one kv head's
                            * values are consecutive, as attention reads them */
    float* value_scale;    /* q8: (n_layers, n_kv_heads, ctx_len, head_dim / kv_group) */
    Qwen3Q8Batch q_q8;     /* q8: (n_heads * block, head_dim) the queries quantised per
                            * kv_group for the scores, query head h's token t at row
                            * h * block + t (docs/numerics.md#int8-kv-cache) */
    float* v_new;          /* (block, n_kv_heads * head_dim) new values, before the cache */
    float* att;            /* (n_heads, block, att_stride) attention scores, then weights */
    float* att_sum;        /* (n_heads, block) the weights' sums (kernels.h: softmax_exp) */
    float* x;              /* (block, dim) residual streams */
    float* xb;             /* (block, max(dim, n_heads * head_dim)) normed input, attention output */
    float* xb2;            /* (block, dim) matmul output before the residual add */
    float* q;              /* (block, n_heads * head_dim) */
    float* k;              /* (block, n_kv_heads * head_dim) new keys, before the cache */
    float* hb;             /* (block, hidden_dim) gate, then silu(gate) * up */
    float* hb2;            /* (block, hidden_dim) up */
    float* rope_freq;      /* (head_dim / 2) theta^(-i / (head_dim / 2)) */
    float* rope_cos;       /* (block, head_dim / 2) for each token's position */
    float* rope_sin;       /* (block, head_dim / 2) */
    Qwen3Q8Batch xq;       /* (block, max(dim, n_heads * head_dim)) quantised matmul input */
    Qwen3Q8Batch hq;       /* (block, hidden_dim) quantised input of the down projection */
    float* logits;         /* (vocab_size) */
    Qwen3Sampler sampler;
    Qwen3MoeScratch* moe;  /* the sparse blocks' scratch (moe.c); NULL for a dense model */
};

/* Allocates a context of ctx_len positions (1 .. model max_seq_len, checked by the
 * caller). Returns QWEN3_OK or QWEN3_ERR_OUT_OF_MEMORY naming the size. On failure the
 * context is deinitialised. */
int32_t qwen3_context_init(Qwen3Context* ctx, Qwen3Model* model, uint32_t ctx_len);

/* As qwen3_context_init with a KV cache of kv_type (a Qwen3KvType); also
 * QWEN3_ERR_INVALID_ARGUMENT for a q8 or f16 cache on a head_dim over
 * QWEN3_KV_Q8_MAX_HEAD_DIM. */
int32_t qwen3_context_init_kv(Qwen3Context* ctx, Qwen3Model* model, uint32_t ctx_len, uint32_t kv_type);

/* The largest head_dim of a q8 or f16 cache: one attention chunk of dequantised or
 * widened keys or values (transformer.c) is a stack buffer of
 * QWEN3_KV_Q8_MAX_HEAD_DIM * QWEN3_KV_BLOCK floats. */
#define QWEN3_KV_Q8_MAX_HEAD_DIM 512u

/* Frees what qwen3_context_init allocated; a zeroed context is ignored. */
void qwen3_context_deinit(Qwen3Context* ctx);

/*
 * Runs n tokens at positions pos .. pos+n-1, leaving the last one's logits. Checks first
 * and changes nothing on error: QWEN3_ERR_CONTEXT_FULL when they do not fit,
 * QWEN3_ERR_INVALID_ARGUMENT for an id outside [0, vocab_size), QWEN3_ERR_IO when the
 * model file was truncated or modified since it was loaded (qwen3_file_map_check).
 * Tokens go through in blocks of ctx->block (matrix-matrix products); the logits and KV
 * cache are bit-identical to running them one call per token.
 */
int32_t qwen3_forward_tokens(Qwen3Context* ctx, const int32_t* tokens, uint32_t n);

/* Rows [r0, r1) of out = w x for the x->n_tokens tokens of x, token t's row at out + t *
 * stride: a block matrix or a Q8 one (one token: the matvec) reads the quantised x, a
 * float one (F32/F16/BF16) the fp32 xf, token t at xf + t * xf_stride (kernels_float.h).
 * One call per row range of a matmul task, here and in moe.c, so dense and expert
 * products take the same kernels and give the same bits. */
void qwen3_matmul_rows(const Qwen3KernelTable* k, float* out, size_t stride, const Qwen3Matrix* w,
                       const Qwen3Q8Batch* x, const float* xf, size_t xf_stride, uint32_t r0, uint32_t r1);

/*
 * As qwen3_forward_tokens, but instead of the logits writes the last token's final hidden
 * state (rmsnorm(x) * final_norm: the classifier's input) to hidden (dim floats), and the
 * classifier is not run; the context has no logits afterwards. n must be >= 1.
 */
int32_t qwen3_forward_embed(Qwen3Context* ctx, const int32_t* tokens, uint32_t n, float* hidden);

/*
 * As qwen3_forward_tokens, and writes every token's logits: row i (vocab_size floats at
 * logits + i * vocab_size) is bit for bit what running tokens[0..i] one call per token
 * leaves, so a batch of drafted tokens is verified in one pass. Same checks and errors;
 * the context's own logits are the last row's afterwards.
 */
int32_t qwen3_forward_tokens_logits(Qwen3Context* ctx, const int32_t* tokens, uint32_t n, float* logits);

/*
 * One decode step for each of n distinct contexts of one model, batched
 * (docs/numerics.md#batched-decode): contexts[i] runs tokens[i] at its own position and
 * gets its logits, as qwen3_forward_tokens(contexts[i], &tokens[i], 1) would leave them, bit
 * for bit. The linear layers and the classifier read each weight once per pass of up to
 * model->batch_rows contexts (more are split in equal passes); attention runs per
 * (context, kv head) over each context's own cache. Checks everything first and changes
 * nothing on error: QWEN3_ERR_INVALID_ARGUMENT for NULL arrays or contexts, a context
 * given twice, contexts of different models or an id outside the vocabulary;
 * QWEN3_ERR_CONTEXT_FULL for a full context; QWEN3_ERR_IO as qwen3_forward_tokens;
 * QWEN3_ERR_OUT_OF_MEMORY when the model's batch scratch cannot grow. n = 0 does nothing.
 */
int32_t qwen3_forward_batch(Qwen3Context* const* contexts, const int32_t* tokens, uint32_t n);

/* Frees a model's batch scratch; NULL is ignored (qwen3_model_free). */
void qwen3_batch_scratch_free(Qwen3BatchScratch* s);

/* ---- the fp32 building blocks, exposed for tests ---- */

/* out = x / sqrt(mean(x^2) + eps) * w; out may equal x. */
void qwen3_rmsnorm(float* out, const float* x, const float* w, uint32_t n, float eps);

/* cos/sin of pos * theta^(-i/(head_dim/2)) for i < head_dim/2, in fp32. */
void qwen3_rope_angles(float* cos_out, float* sin_out, uint32_t head_dim, uint32_t pos,
                       float theta);

/* Rotate-half RoPE on one head: (v[i], v[i+half]) -> (a cos - b sin, a sin + b cos). */
void qwen3_rope_rotate(float* v, const float* cos_t, const float* sin_t, uint32_t head_dim);

/* In-place softmax, max-subtracted. */
void qwen3_softmax(float* x, uint32_t n);

/* One head's causal attention over n_pos cached positions: scores q.k * (1/sqrt(head_dim))
 * into att (n_pos), then att[t] = exp(score - max) with their sum s (qwen3_softmax_exp_rows_ref),
 * then out = (sum_t att[t] * v_t) / s. Keys and values of position t
 * start at k + t * stride and v + t * stride. Every multiply-add of both sums is fused
 * (QWEN3_FMAF, docs/numerics.md#grouped-query-attention). */
void qwen3_attention_head(float* out, const float* q, const float* k, const float* v,
                          uint32_t stride, uint32_t n_pos, uint32_t head_dim, float* att);

#endif
