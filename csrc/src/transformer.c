/*
 * transformer.c - the Qwen3 forward pass over one context (docs/numerics.md#forward-pass).
 *
 * Per token, with x the fp32 residual stream:
 *   x = dequantised embedding row
 *   per layer: h = rmsnorm(x) * attn_norm
 *              q, k, v = Wq h, Wk h, Wv h          (one quantised h for all three)
 *              per head: q, k = rmsnorm(head) * q_norm / k_norm, then rotate-half RoPE
 *              att = causal GQA attention, written to the KV cache at pos
 *              x += Wo att
 *              h = rmsnorm(x) * ffn_norm
 *              x += W2 (silu(W1 h) * W3 h)         (one quantised h for W1 and W3)
 *   logits = Wcls (rmsnorm(x) * final_norm)         (the last token of a prefill; every
 *                                                    token's in qwen3_forward_tokens_logits)
 *
 * The fp32 operations below fix their summation order (index order, one fp32
 * accumulator) so the TypeScript engine can reproduce them:
 *   rmsnorm: ss = sum x[i]*x[i]; s = 1 / sqrtf(ss / n + eps); out[i] = w[i] * (s * x[i])
 *   rope:    half = head_dim / 2; freq = theta^(-(float)i / (float)half);
 *            angle = (float)pos * freq; c = cos(angle), s = sin(angle)
 *            (power, cos and sin: rope.h, the same bits as the TypeScript engine's);
 *            (a, b) -> (a*c - b*s, a*s + b*c)
 *            (fp32 throughout, as qwen3.c and Hugging Face's float32 rotary embedding do)
 *   scores:  dot = sum q[i]*k[i]; score = dot * (1.0f / sqrtf((float)head_dim))
 *   softmax: m = max; e[t] = exp(x[t] - m); sum = the e[t] in 16 lanes (t % 16), folded
 *            8, 4, 2, 1 (kernels.h: softmax_exp)
 *   values:  out[i] = (sum over t of e[t] * v[t][i] (t ascending)) / sum
 *   silu:    hb[i] = (g * (1 / (1 + exp(-g)))) * u
 *   (exp: qwen3_exp_ref, e^x in fp32 steps within ~1 ulp, see kernels.h)
 *   residual: x[i] = x[i] + y[i]
 */
#include "transformer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "fmaf.h"
#include "kernels_kv.h"
#include "rope.h"
#include "threadpool.h"

/* ====================================================================================
 * fp32 building blocks
 * ================================================================================== */

void qwen3_rmsnorm(float* out, const float* x, const float* w, uint32_t n, float eps) {
    float ss = 0.0f;
    for (uint32_t i = 0; i < n; i++) ss += x[i] * x[i];
    ss = 1.0f / sqrtf(ss / (float)n + eps);
    for (uint32_t i = 0; i < n; i++) out[i] = w[i] * (ss * x[i]);
}

void qwen3_rope_angles(float* cos_out, float* sin_out, uint32_t head_dim, uint32_t pos,
                       float theta) {
    const uint32_t half = head_dim / 2;
    for (uint32_t i = 0; i < half; i++) {
        float freq = qwen3_rope_pow(theta, -(float)i / (float)half);
        float angle = (float)pos * freq;
        qwen3_rope_sincos(angle, &cos_out[i], &sin_out[i]);
    }
}

void qwen3_rope_rotate(float* v, const float* cos_t, const float* sin_t, uint32_t head_dim) {
    const uint32_t half = head_dim / 2;
    for (uint32_t i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = a * sin_t[i] + b * cos_t[i];
    }
}

void qwen3_softmax(float* x, uint32_t n) { qwen3_softmax_ref(x, n); }

void qwen3_attention_head(float* out, const float* q, const float* k, const float* v,
                          uint32_t stride, uint32_t n_pos, uint32_t head_dim, float* att) {
    float sum;
    const float inv_scale = 1.0f / sqrtf((float)head_dim);
    for (uint32_t t = 0; t < n_pos; t++) {
        const float* kt = k + (size_t)t * stride;
        float dot = 0.0f;
        for (uint32_t i = 0; i < head_dim; i++) dot = QWEN3_FMAF(q[i], kt[i], dot);
        att[t] = dot * inv_scale;
    }
    qwen3_softmax_exp_rows_ref(att, n_pos, 1, &n_pos, &sum);
    for (uint32_t i = 0; i < head_dim; i++) out[i] = 0.0f;
    for (uint32_t t = 0; t < n_pos; t++) {
        const float* vt = v + (size_t)t * stride;
        const float a = att[t];
        for (uint32_t i = 0; i < head_dim; i++) out[i] = QWEN3_FMAF(a, vt[i], out[i]);
    }
    for (uint32_t i = 0; i < head_dim; i++) out[i] = out[i] / sum;
}

/* ====================================================================================
 * Context memory
 * ================================================================================== */

/* Tiled attention (docs/numerics.md#tiled-attention). Positions are taken in chunks of
 * ATT_CHUNK_BYTES of one kv head's keys (then values), so each chunk is read from memory
 * once per task and reused from L1/L2 by every query of the task, of every query head that
 * shares the kv head, instead of being streamed again for every few queries. The softmax
 * still runs over whole rows between the two passes, and the value sums continue from
 * chunk to chunk (attn_values' accumulate), so every output has the operations of the
 * untiled loops in the same order: the bits do not depend on the chunking. */
#define ATT_CHUNK_BYTES (32u * 1024u)
/* The largest scores tile (query heads x tokens x positions, fp32) a task keeps: the
 * tile is halved (down to 16 tokens) until it fits, so it stays in L2 between passes. */
#define ATT_TILE_BYTES (1024u * 1024u)

/* Positions committed at a time on Windows: few commit calls, little waste. A multiple
 * of QWEN3_KV_BLOCK, so a key block is never split. */
#define COMMIT_CHUNK 256u

static int32_t alloc_floats(float** out, uint64_t n, const char* what) {
    uint64_t bytes = n * sizeof(float);
    *out = (float*)qwen3_aligned_alloc((size_t)bytes);
    if (!*out) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY,
                          "out of memory allocating %llu bytes for the context's %s",
                          (unsigned long long)bytes, what);
    }
    return QWEN3_OK;
}

static int32_t batch_init(Qwen3Q8Batch* b, uint32_t n, uint32_t tokens, uint32_t group_size,
                           const char* what) {
    b->n = n;
    b->n_tokens = tokens;
    b->group_size = group_size;
    if (group_size == 0) return QWEN3_OK; /* unquantised weights only: no int8 input */
    const size_t values = (size_t)n * tokens, groups = values / group_size;
    b->q = (int8_t*)qwen3_aligned_alloc(values);
    b->s = (float*)qwen3_aligned_alloc(groups * sizeof(float));
    b->sums = (int32_t*)qwen3_aligned_alloc(groups * sizeof(int32_t));
    if (!b->q || !b->s || !b->sums) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY,
                          "out of memory allocating %zu quantised values for the context's %s",
                          values, what);
    }
    return QWEN3_OK;
}

static void batch_deinit(Qwen3Q8Batch* b) {
    qwen3_aligned_free(b->q);
    qwen3_aligned_free(b->s);
    qwen3_aligned_free(b->sums);
}

/* The cache region's arrays, in order (each slabs * positions * bytes long, 64-byte
 * aligned), then the scores: fp32 (or for an f16 cache binary16) keys and values, or for
 * a q8 cache int8 keys, their scales, int8 values and theirs, each with a slab per layer
 * and kv head, so attention
 * streams one head's keys and values from consecutive memory
 * (docs/numerics.md#summation-order-of-the-fp32-operations). */
typedef struct {
    uint64_t offset;    /* of slab 0 in the region */
    uint64_t slabs;     /* n_layers, or n_layers * n_kv_heads */
    uint64_t positions; /* per slab */
    uint64_t bytes;     /* per position */
} CacheArray;

#define CACHE_ALIGN(n) (((n) + 63u) / 64u * 64u)

/* Fills arrays (returns how many) and *att_offset, the scores' offset; *total is the
 * region's size. */
static uint32_t cache_arrays(const Qwen3Context* c, CacheArray arrays[4], uint64_t* att_offset, uint64_t* total) {
    const Qwen3Header* h = &c->model->header;
    const uint64_t L = h->n_layers, hd = h->head_dim;
    uint32_t n = 0;
    if (c->kv_type == QWEN3_KV_Q8) {
        const uint64_t head_groups = hd / c->kv_group;
        arrays[n++] = (CacheArray){0, L * h->n_kv_heads, c->ctx_len, hd};
        arrays[n++] = (CacheArray){0, L * h->n_kv_heads, c->ctx_len, head_groups * sizeof(float)};
        arrays[n++] = (CacheArray){0, L * h->n_kv_heads, c->ctx_len, hd};
        arrays[n++] = (CacheArray){0, L * h->n_kv_heads, c->ctx_len, head_groups * sizeof(float)};
    } else {
        const uint64_t bytes = c->kv_type == QWEN3_KV_F16 ? sizeof(uint16_t) : sizeof(float);
        arrays[n++] = (CacheArray){0, L * h->n_kv_heads, c->att_stride, hd * bytes};
        arrays[n++] = (CacheArray){0, L * h->n_kv_heads, c->ctx_len, hd * bytes};
    }
    uint64_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        arrays[i].offset = off;
        off += CACHE_ALIGN(arrays[i].slabs * arrays[i].positions * arrays[i].bytes);
    }
    *att_offset = off;
    *total = off + (uint64_t)h->n_heads * c->block * c->att_stride * sizeof(float);
    return n;
}

int32_t qwen3_context_init(Qwen3Context* c, Qwen3Model* model, uint32_t ctx_len) {
    return qwen3_context_init_kv(c, model, ctx_len, QWEN3_KV_F32);
}

int32_t qwen3_context_init_kv(Qwen3Context* c, Qwen3Model* model, uint32_t ctx_len, uint32_t kv_type) {
    memset(c, 0, sizeof *c);
    const Qwen3Header* h = &model->header;
    if (kv_type != QWEN3_KV_F32 && kv_type != QWEN3_KV_Q8 && kv_type != QWEN3_KV_F16) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "unknown KV cache type %u (0 = f32, 1 = q8, 2 = f16)",
                          kv_type);
    }
    if (kv_type != QWEN3_KV_F32 && h->head_dim > QWEN3_KV_Q8_MAX_HEAD_DIM) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "a %s KV cache takes head_dim up to %u, this model's is %u: use the f32 cache",
                          kv_type == QWEN3_KV_Q8 ? "q8" : "f16", QWEN3_KV_Q8_MAX_HEAD_DIM, h->head_dim);
    }
    c->model = model;
    c->ctx_len = ctx_len;
    c->kv_type = kv_type;
    c->kv_group = h->head_dim % 32 == 0 ? 32 : h->head_dim;
    const uint64_t kv_dim = (uint64_t)h->n_kv_heads * h->head_dim;
    const uint64_t q_dim = (uint64_t)h->n_heads * h->head_dim;
    const uint64_t wide = q_dim > h->dim ? q_dim : h->dim;
    c->ctx_blocks = (ctx_len + QWEN3_KV_BLOCK - 1) / QWEN3_KV_BLOCK;
    c->att_stride = c->ctx_blocks * QWEN3_KV_BLOCK;
    const uint32_t block = model->moe.n_experts > 0 ? QWEN3_MOE_FORWARD_BLOCK : QWEN3_FORWARD_BLOCK;
    const uint32_t B = ctx_len < block ? ctx_len : block;
    c->block = B;
    c->att_chunk = ATT_CHUNK_BYTES / (h->head_dim * (uint32_t)sizeof(float)) / QWEN3_KV_BLOCK * QWEN3_KV_BLOCK;
    if (c->att_chunk == 0) c->att_chunk = QWEN3_KV_BLOCK;
    c->att_tile_bytes = ATT_TILE_BYTES;

    /* Header limits keep every factor below 2^24, so these products fit in 64 bits. */
    CacheArray arrays[4];
    uint64_t att_offset, lazy_bytes;
    cache_arrays(c, arrays, &att_offset, &lazy_bytes);
    uint64_t att_floats = (uint64_t)h->n_heads * B * c->att_stride;
    if (att_offset > UINT64_MAX / 64 || att_floats > UINT64_MAX / 64 || lazy_bytes > (uint64_t)SIZE_MAX) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY,
                          "a KV cache of %u positions (%llu floats per layer per position) does "
                          "not fit in this address space",
                          ctx_len, (unsigned long long)(2 * kv_dim));
    }
    c->kv_bytes = att_offset;
    int32_t rc = qwen3_region_init(&c->lazy, (size_t)lazy_bytes);
    if (rc != QWEN3_OK) {
        qwen3_error_set("out of memory reserving %llu bytes for a KV cache of %u positions",
                        (unsigned long long)lazy_bytes, ctx_len);
        return rc;
    }
    char* const base = (char*)c->lazy.base;
    if (kv_type == QWEN3_KV_Q8) {
        c->key_q8 = (int8_t*)(void*)(base + arrays[0].offset);
        c->key_scale = (float*)(void*)(base + arrays[1].offset);
        c->value_q8 = (int8_t*)(void*)(base + arrays[2].offset);
        c->value_scale = (float*)(void*)(base + arrays[3].offset);
    } else if (kv_type == QWEN3_KV_F16) {
        c->key_f16 = (uint16_t*)(void*)(base + arrays[0].offset);
        c->value_f16 = (uint16_t*)(void*)(base + arrays[1].offset);
    } else {
        c->key_cache = (float*)(void*)(base + arrays[0].offset);
        c->value_cache = (float*)(void*)(base + arrays[1].offset);
    }
    rc = alloc_floats(&c->v_new, (uint64_t)B * kv_dim, "new values");
    c->att = (float*)(void*)(base + att_offset);

    const uint32_t half = h->head_dim / 2;
    if (rc == QWEN3_OK) rc = alloc_floats(&c->x, (uint64_t)B * h->dim, "residual stream");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->xb, B * wide, "activation buffer");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->xb2, (uint64_t)B * h->dim, "matmul output");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->q, B * q_dim, "queries");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->k, B * kv_dim, "new keys");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->hb, (uint64_t)B * h->hidden_dim, "feed-forward gate");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->hb2, (uint64_t)B * h->hidden_dim, "feed-forward up");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->rope_freq, half > 0 ? half : 1, "RoPE table");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->rope_cos, (uint64_t)B * (half > 0 ? half : 1), "RoPE table");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->rope_sin, (uint64_t)B * (half > 0 ? half : 1), "RoPE table");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->logits, h->vocab_size, "logits");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->att_sum, (uint64_t)h->n_heads * B, "attention sums");
    if (rc == QWEN3_OK) rc = batch_init(&c->xq, (uint32_t)wide, B, h->group_size, "matmul input");
    if (rc == QWEN3_OK) rc = batch_init(&c->hq, h->hidden_dim, B, h->group_size, "feed-forward input");
    if (rc == QWEN3_OK && kv_type == QWEN3_KV_Q8) {
        rc = batch_init(&c->q_q8, h->head_dim, h->n_heads * B, c->kv_group, "quantised queries");
    }
    if (rc == QWEN3_OK) rc = qwen3_sampler_init(&c->sampler, h->vocab_size);
    if (rc == QWEN3_OK) rc = qwen3_moe_scratch_new(model, B, &c->moe);
    if (rc != QWEN3_OK) {
        qwen3_context_deinit(c);
        return rc;
    }
    /* The expression of qwen3_rope_angles, so both give the same angles. */
    for (uint32_t i = 0; i < half; i++) {
        c->rope_freq[i] = qwen3_rope_pow(model->rope_theta, -(float)i / (float)half);
    }
    return QWEN3_OK;
}

void qwen3_context_deinit(Qwen3Context* c) {
    qwen3_moe_scratch_free(c->moe);
    c->moe = NULL;
    qwen3_region_deinit(&c->lazy);
    qwen3_aligned_free(c->x);
    qwen3_aligned_free(c->xb);
    qwen3_aligned_free(c->xb2);
    qwen3_aligned_free(c->q);
    qwen3_aligned_free(c->k);
    qwen3_aligned_free(c->v_new);
    qwen3_aligned_free(c->hb);
    qwen3_aligned_free(c->hb2);
    qwen3_aligned_free(c->rope_freq);
    qwen3_aligned_free(c->rope_cos);
    qwen3_aligned_free(c->rope_sin);
    qwen3_aligned_free(c->logits);
    qwen3_aligned_free(c->att_sum);
    batch_deinit(&c->xq);
    batch_deinit(&c->hq);
    batch_deinit(&c->q_q8);
    qwen3_sampler_deinit(&c->sampler);
    memset(c, 0, sizeof *c);
}

/* Commits the cache pages of positions below `upto` (a no-op on POSIX, where untouched
 * pages are free anyway). */
static int32_t commit_positions(Qwen3Context* c, uint32_t upto) {
    if (upto <= c->committed) return QWEN3_OK;
    const Qwen3Header* h = &c->model->header;
    uint64_t target = ((uint64_t)upto + COMMIT_CHUNK - 1) / COMMIT_CHUNK * COMMIT_CHUNK;
    if (target > c->att_stride) target = c->att_stride;
    const uint64_t from = c->committed;
    CacheArray arrays[4];
    uint64_t att_offset, total;
    const uint32_t n_arrays = cache_arrays(c, arrays, &att_offset, &total);
    for (uint32_t a = 0; a < n_arrays; a++) {
        /* committed and target are multiples of the key block (or the rounded length) */
        const uint64_t to = target < arrays[a].positions ? target : arrays[a].positions;
        if (to <= from) continue;
        for (uint64_t l = 0; l < arrays[a].slabs; l++) {
            const uint64_t off = arrays[a].offset + (l * arrays[a].positions + from) * arrays[a].bytes;
            int32_t rc = qwen3_region_commit(&c->lazy, (size_t)off, (size_t)((to - from) * arrays[a].bytes));
            if (rc != QWEN3_OK) return rc;
        }
    }
    const size_t att_rows = (size_t)h->n_heads * c->block;
    for (size_t r = 0; r < att_rows; r++) {
        size_t off = (size_t)att_offset + (r * c->att_stride + from) * sizeof(float);
        int32_t rc = qwen3_region_commit(&c->lazy, off, ((size_t)target - from) * sizeof(float));
        if (rc != QWEN3_OK) return rc;
    }
    c->committed = (uint32_t)target;
    return QWEN3_OK;
}

/* ====================================================================================
 * Parallel matmuls
 * ================================================================================== */

/* Up to three matrices that share one input batch, split into row blocks. Token t's
 * output of part p goes to parts[p].out + t * parts[p].stride. A Q8 or block matrix reads
 * the quantised input x, a float matrix (F32/F16/BF16) the fp32 input xf, token t at
 * xf + t * xf_stride (kernels_float.h). */
typedef struct {
    struct {
        float* out;
        size_t stride;
        const Qwen3Matrix* w;
    } parts[3];
    uint32_t n_parts;
    uint32_t rows_per_task;
    const Qwen3Q8Batch* x;
    const float* xf;
    size_t xf_stride;
    const Qwen3KernelTable* kernels;
} MatmulJob;

void qwen3_matmul_rows(const Qwen3KernelTable* k, float* out, size_t stride, const Qwen3Matrix* w,
                       const Qwen3Q8Batch* x, const float* xf, size_t xf_stride, uint32_t r0, uint32_t r1) {
    out += r0;
    if (w->type == QWEN3_WEIGHT_BLOCKS) {
        k->matmul_blocks(out, stride, &w->blocks, x, r0, r1);
    } else if (w->type != QWEN3_WEIGHT_Q8) {
        qwen3_matmul_float(out, stride, w, xf, xf_stride, x->n_tokens, r0, r1);
    } else if (x->n_tokens == 1) {
        const Qwen3Q8Vector v = qwen3_q8_batch_row(x, 0);
        k->matvec_q8(out, &w->q8, &v, r0, r1);
    } else {
        k->matmul_q8(out, stride, &w->q8, x, r0, r1);
    }
}

static void matmul_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const MatmulJob* job = (const MatmulJob*)arg;
    uint64_t begin = (uint64_t)task * job->rows_per_task;
    uint64_t end = begin + job->rows_per_task;
    uint64_t base = 0; /* first row of the current part in the joined row space */
    for (uint32_t p = 0; p < job->n_parts && begin < end; p++) {
        const Qwen3Matrix* w = job->parts[p].w;
        uint64_t part_end = base + w->rows;
        if (begin < part_end) {
            uint32_t r0 = (uint32_t)(begin - base);
            uint32_t r1 = (uint32_t)((end < part_end ? end : part_end) - base);
            qwen3_matmul_rows(job->kernels, job->parts[p].out, job->parts[p].stride, w, job->x, job->xf,
                              job->xf_stride, r0, r1);
            begin = base + r1;
        }
        base = part_end;
    }
}

/* Below this many multiply-adds a job costs less than waking the pool's workers. */
#define PARALLEL_MIN_WORK (1u << 16)

/* Tasks per thread of a one-token (decode) product. A decode matvec streams its weights
 * from memory, and each task starts a new stream the hardware prefetcher must pick up
 * again: fewer, longer tasks read closer to the machine's bandwidth, more of them even out
 * cores that run at different speeds. Measured on the 2-vCPU Xeon (tg128, 2 threads,
 * builds alternating, medians of 11): 4 per thread 43.19, 2 per thread 43.91, 1 per
 * thread 44.09 tok/s (8 per thread: 2-4% below 4 in shorter runs); 2 keeps a task to
 * share when one core falls behind. */
#define DECODE_TASKS_PER_THREAD 2u

/* Rows per task: a multiple of 32 (whole SIMD row tiles), about four tasks per thread
 * (DECODE_TASKS_PER_THREAD for one token) so uneven cores still finish together. Sets
 * job->rows_per_task for an input of in_n values per token and returns the number of
 * tasks. */
static uint32_t plan_matmul(const Qwen3Model* m, MatmulJob* job, uint32_t in_n) {
    uint64_t rows = 0;
    for (uint32_t p = 0; p < job->n_parts; p++) rows += job->parts[p].w->rows;
    uint32_t threads = qwen3_pool_threads(m->pool);
    if (rows * in_n * job->x->n_tokens < PARALLEL_MIN_WORK) threads = 1;
    const uint32_t per_thread = job->x->n_tokens == 1 ? DECODE_TASKS_PER_THREAD : 4;
    uint64_t per = threads > 1 ? rows / ((uint64_t)threads * per_thread) : rows;
    per = (per + 31) / 32 * 32;
    if (per < 32) per = 32;
    job->rows_per_task = (uint32_t)per;
    return (uint32_t)((rows + per - 1) / per);
}

static void run_matmul(Qwen3Model* m, MatmulJob* job) {
    const uint32_t n_tasks = plan_matmul(m, job, job->x->n);
    if (n_tasks == 1) {
        matmul_task(job, 0, 1);
    } else {
        qwen3_pool_run(m->pool, matmul_task, job, n_tasks);
    }
}

static void matmul1(Qwen3Model* m, const Qwen3KernelTable* k, float* out, size_t stride,
                    const Qwen3Matrix* w, const Qwen3Q8Batch* x, const float* xf, size_t xf_stride) {
    MatmulJob job = {.parts = {{out, stride, w}}, .n_parts = 1, .x = x, .xf = xf, .xf_stride = xf_stride,
                     .kernels = k};
    run_matmul(m, &job);
}

/* ====================================================================================
 * One block of tokens
 * ================================================================================== */

/* What the per-token and attention tasks of one layer need. */
typedef struct {
    Qwen3Context* c;
    const Qwen3KernelTable* kernels;
    const Qwen3LayerWeights* lw; /* NULL after the last layer */
    uint32_t layer;
    uint32_t pos0;      /* position of the block's first token */
    uint32_t n;         /* tokens in the block */
    uint32_t tile;      /* tokens per attention task */
    uint32_t n_tiles;
    int residual;       /* add xb2 into x first (the previous layer's down projection) */
    Qwen3Context* const* seqs; /* a batched decode step: row t is a token of seqs[t] at its
                                * position (c is the batch scratch); NULL: rows are c's
                                * tokens at pos0 .. pos0 + n - 1 */
} BlockJob;

static void add_into(float* x, const float* y, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) x[i] = x[i] + y[i];
}

/* Token t's matmul input quantised, unless every weight is unquantised (group_size 0):
 * then only the fp32 input is read. */
static void quantize_input(const Qwen3Context* c, const Qwen3KernelTable* k, const float* x, Qwen3Q8Batch* b,
                           uint32_t t) {
    if (c->model->header.group_size != 0) k->quantize_row(x, b, t);
}

/* Rows of a per-token task: up to TASK_TOKENS tokens of the block, split where the
 * positions cross a key block (QWEN3_KV_BLOCK positions share each cache line of the
 * transposed key cache, so two threads storing keys of one block would pass its lines back
 * and forth: at 2 threads store_keys took 4% of a 512-token prefill with 8-token tasks).
 * Several tokens, so their norms' sums can run side by side. */
#define TASK_TOKENS QWEN3_KV_BLOCK

/* qwen3_rmsnorm of `rows` vectors of n (row r at x + r * stride, out + r * stride; out
 * may equal x), bit for bit: each row's sum of squares runs in index order as there, but
 * up to 8 rows' sums advance together, so the adds' latency is paid once for all of them
 * instead of once per element (the norms of a prefill block were ~7% of its time). */
static void rmsnorm_rows(float* out, const float* x, size_t stride, uint32_t rows, const float* w, uint32_t n,
                         float eps) {
    for (uint32_t r0 = 0; r0 < rows; r0 += 8) {
        const uint32_t k = rows - r0 < 8 ? rows - r0 : 8;
        const float* xr = x + (size_t)r0 * stride;
        float ss[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if (k == 8) {
            for (uint32_t i = 0; i < n; i++) {
                for (uint32_t r = 0; r < 8; r++) {
                    const float v = xr[(size_t)r * stride + i];
                    ss[r] += v * v;
                }
            }
        } else {
            for (uint32_t i = 0; i < n; i++) {
                for (uint32_t r = 0; r < k; r++) {
                    const float v = xr[(size_t)r * stride + i];
                    ss[r] += v * v;
                }
            }
        }
        for (uint32_t r = 0; r < k; r++) {
            const float scale = 1.0f / sqrtf(ss[r] / (float)n + eps);
            const float* xi = xr + (size_t)r * stride;
            float* o = out + (size_t)(r0 + r) * stride;
            for (uint32_t i = 0; i < n; i++) o[i] = w[i] * (scale * xi[i]);
        }
    }
}

/* How far the block's first position lies into its key block (0 for a batch of contexts,
 * whose rows have caches of their own): task i covers the tokens whose positions fall in
 * the block's i-th key block. */
static uint32_t task_offset(const BlockJob* job) { return job->seqs ? 0 : job->pos0 % QWEN3_KV_BLOCK; }

static uint32_t task_count(const BlockJob* job) { return (job->n + task_offset(job) + TASK_TOKENS - 1) / TASK_TOKENS; }

/* Tokens of task `task`: [*t0, *t0 + return value). */
static uint32_t task_tokens(const BlockJob* job, uint32_t task, uint32_t* t0) {
    const uint32_t off = task_offset(job), end = (task + 1) * TASK_TOKENS - off;
    *t0 = task == 0 ? 0 : task * TASK_TOKENS - off;
    return (end < job->n ? end : job->n) - *t0;
}

/* A task's tokens: [x += down output], h = rmsnorm(x) * norm, quantised as the next
 * input. */
static void norm_input_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const BlockJob* job = (const BlockJob*)arg;
    Qwen3Context* c = job->c;
    const uint32_t dim = c->model->header.dim;
    uint32_t t0;
    const uint32_t nt = task_tokens(job, task, &t0);
    if (job->residual) {
        for (uint32_t t = t0; t < t0 + nt; t++) add_into(c->x + (size_t)t * dim, c->xb2 + (size_t)t * dim, dim);
    }
    const float* norm = job->lw ? job->lw->attn_norm : c->model->weights.final_norm;
    rmsnorm_rows(c->xb + (size_t)t0 * dim, c->x + (size_t)t0 * dim, dim, nt, norm, dim, c->model->rms_eps);
    for (uint32_t t = t0; t < t0 + nt; t++) quantize_input(c, job->kernels, c->xb + (size_t)t * dim, &c->xq, t);
}

/* ====================================================================================
 * KV cache writes (docs/numerics.md#int8-kv-cache)
 * ================================================================================== */

/* One kv head's row x (hd floats) into a q8 cache row (q, s): the tier's quantize_row,
 * which gives qwen3_quantize_q8's bits (kernels.h), its group sums dropped. (The scalar
 * function took 4% of a q8 cache's 2048-token prefill, most of it in roundf.) */
static void quantize_cache_row(const Qwen3KernelTable* kernels, const float* x, int8_t* q, float* s, uint32_t hd,
                               uint32_t gs) {
    int32_t sums[QWEN3_KV_Q8_MAX_HEAD_DIM];
    Qwen3Q8Batch row = {q, s, sums, hd, 1, gs};
    kernels->quantize_row(x, &row, 0);
}

/* Kv heads [a, b) of one position's new key row k (kv_dim floats) into dst's cache at
 * position p of `layer`: copied (f32), rounded to binary16 (f16) or quantised per kv_group
 * values (q8), as qwen3_quantize_q8 quantises activations. */
static void store_keys(const Qwen3KernelTable* kernels, Qwen3Context* dst, uint32_t layer, uint32_t p, const float* k,
                       uint32_t a, uint32_t b) {
    const Qwen3Header* h = &dst->model->header;
    const uint32_t hd = h->head_dim, gs = dst->kv_group;
    const Qwen3ToF16Fn to_f16 = qwen3_kv_kernels_for(kernels)->to_f16;
    for (uint32_t kh = a; kh < b; kh++) {
        const size_t slab = (size_t)layer * h->n_kv_heads + kh;
        const float* kh_in = k + (size_t)kh * hd;
        /* f32 and f16: a slab per (layer, kv head) of blocks (head_dim, QWEN3_KV_BLOCK) */
        const size_t kb = (slab * dst->ctx_blocks + p / QWEN3_KV_BLOCK) * hd * QWEN3_KV_BLOCK + p % QWEN3_KV_BLOCK;
        if (dst->kv_type == QWEN3_KV_F32) {
            for (uint32_t i = 0; i < hd; i++) dst->key_cache[kb + (size_t)i * QWEN3_KV_BLOCK] = kh_in[i];
            continue;
        }
        if (dst->kv_type == QWEN3_KV_F16) {
            uint16_t row[QWEN3_KV_Q8_MAX_HEAD_DIM];
            to_f16(row, kh_in, hd);
            for (uint32_t i = 0; i < hd; i++) dst->key_f16[kb + (size_t)i * QWEN3_KV_BLOCK] = row[i];
            continue;
        }
        /* a slab per (layer, kv head) of rows, like the values */
        const size_t at = slab * dst->ctx_len + p;
        quantize_cache_row(kernels, kh_in, dst->key_q8 + at * hd, dst->key_scale + at * (hd / gs), hd, gs);
    }
}

/* Kv heads [a, b) of one position's new value row v into dst's cache at position p: a
 * slab per (layer, kv head), positions consecutive in it, so attention reads one head's
 * values from consecutive memory (with rows kv_dim floats apart, consecutive positions of
 * a head were 4 KB apart for Qwen3-0.6B: a page and an L1 set each). */
static void store_values(const Qwen3KernelTable* kernels, Qwen3Context* dst, uint32_t layer, uint32_t p,
                         const float* v, uint32_t a, uint32_t b) {
    const Qwen3Header* h = &dst->model->header;
    const uint32_t hd = h->head_dim, gs = dst->kv_group;
    const Qwen3ToF16Fn to_f16 = qwen3_kv_kernels_for(kernels)->to_f16;
    for (uint32_t i = a; i < b; i++) {
        const size_t at = ((size_t)layer * h->n_kv_heads + i) * dst->ctx_len + p;
        if (dst->kv_type == QWEN3_KV_F32) {
            memcpy(dst->value_cache + at * hd, v + (size_t)i * hd, (size_t)hd * sizeof(float));
            continue;
        }
        if (dst->kv_type == QWEN3_KV_F16) {
            to_f16(dst->value_f16 + at * hd, v + (size_t)i * hd, hd);
            continue;
        }
        quantize_cache_row(kernels, v + (size_t)i * hd, dst->value_q8 + at * hd, dst->value_scale + at * (hd / gs), hd,
                           gs);
    }
}

/* A task's tokens: QK-norm and RoPE on their query and key heads; keys into the cache. */
static void qk_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const BlockJob* job = (const BlockJob*)arg;
    Qwen3Context* c = job->c;
    const Qwen3Header* h = &c->model->header;
    const uint32_t hd = h->head_dim, half = hd / 2, kv_dim = h->n_kv_heads * hd;
    const float eps = c->model->rms_eps;
    uint32_t t0;
    const uint32_t nt = task_tokens(job, task, &t0);
    for (uint32_t t = t0; t < t0 + nt; t++) {
        const float* cos_t = c->rope_cos + (size_t)t * half;
        const float* sin_t = c->rope_sin + (size_t)t * half;
        float* q = c->q + (size_t)t * h->n_heads * hd;
        rmsnorm_rows(q, q, hd, h->n_heads, job->lw->q_norm, hd, eps);
        for (uint32_t i = 0; i < h->n_heads; i++) qwen3_rope_rotate(q + (size_t)i * hd, cos_t, sin_t, hd);
        float* k = c->k + (size_t)t * kv_dim;
        rmsnorm_rows(k, k, hd, h->n_kv_heads, job->lw->k_norm, hd, eps);
        for (uint32_t i = 0; i < h->n_kv_heads; i++) qwen3_rope_rotate(k + (size_t)i * hd, cos_t, sin_t, hd);
        Qwen3Context* const dst = job->seqs ? job->seqs[t] : c; /* whose cache */
        const uint32_t p = job->seqs ? dst->pos : job->pos0 + t;
        store_keys(job->kernels, dst, job->layer, p, k, 0, h->n_kv_heads);
        store_values(job->kernels, dst, job->layer, p, c->v_new + (size_t)t * kv_dim, 0, h->n_kv_heads); /* Wv wrote v_new */
    }
}

/* A q8 cache's values of one kv head at positions [p0, p0 + n), dequantised into out,
 * rows of head_dim floats (consecutive in the cache too: one call). */
static void dequantize_values(const Qwen3KvKernels* kv, float* out, const Qwen3Context* c, uint32_t layer,
                              uint32_t kv_head, uint32_t p0, uint32_t n) {
    const Qwen3Header* h = &c->model->header;
    const uint32_t hd = h->head_dim, gs = c->kv_group;
    const size_t at = ((size_t)layer * h->n_kv_heads + kv_head) * c->ctx_len + p0; /* n rows in a row */
    kv->dequant_groups(out, c->value_q8 + at * hd, c->value_scale + at * (hd / gs), n * hd, gs);
}

/* Positions of a q8 cache's keys per chunk of the scores: 32 KiB of int8 keys at
 * head_dim 128, read once per query head of the task while in L1/L2. */
#define ATT_Q8_CHUNK 256u

/* Rows t0 .. t0 + nt - 1 of query head `head` in a q8 cache context's quantised queries. */
static Qwen3Q8Batch query_rows(const Qwen3Context* cache, uint32_t head, uint32_t t0, uint32_t nt) {
    const Qwen3Q8Batch* all = &cache->q_q8;
    const uint32_t ng = all->n / all->group_size;
    const size_t row = (size_t)head * cache->block + t0;
    return (Qwen3Q8Batch){all->q + row * all->n, all->s + row * ng, all->sums + row * ng, all->n, nt,
                          all->group_size};
}

/* attend over a q8 cache (docs/numerics.md#int8-kv-cache). Scores: the task's queries are
 * quantised per kv_group (into the cache context's q_q8 rows of their query heads, from
 * token t0 of its block), and each score is the int8 product of a key row and a query, a
 * row of the matrix product matmul_q8 (every tier's matvec_q8 for one token) with the
 * weights' numerics, times 1/sqrt(head_dim). Values: each chunk dequantised once into a stack buffer and read
 * by every query of the task from there through the f32 cache's attn_values; for one token,
 * where the tier has it, attn_values_q8 straight from the int8 rows instead. Neither the
 * chunking nor that route changes the bits, so every tier and thread count agree. */
static void attend_q8(const Qwen3KernelTable* kernels, const Qwen3Context* cache, uint32_t layer, uint32_t kv_head,
                      uint32_t pos0, uint32_t t0, uint32_t nt, const float* q, float* out, float* att,
                      size_t att_head, float* sums, size_t sum_head) {
    const Qwen3Header* h = &cache->model->header;
    const uint32_t hd = h->head_dim, q_dim = h->n_heads * hd, gs = cache->kv_group;
    const uint32_t group = h->n_heads / h->n_kv_heads;
    const uint32_t wide = q_dim > h->dim ? q_dim : h->dim;
    const uint32_t att_stride = cache->att_stride;
    const size_t slab = (size_t)layer * h->n_kv_heads + kv_head;
    _Alignas(64) float buf[QWEN3_KV_Q8_MAX_HEAD_DIM * QWEN3_KV_BLOCK];
    const uint32_t fits = QWEN3_KV_Q8_MAX_HEAD_DIM * QWEN3_KV_BLOCK / hd / QWEN3_KV_BLOCK * QWEN3_KV_BLOCK;
    const uint32_t chunk = cache->att_chunk < fits ? cache->att_chunk : fits;
    const uint32_t key_chunk = cache->att_chunk < ATT_Q8_CHUNK ? cache->att_chunk : ATT_Q8_CHUNK;
    const Qwen3KvKernels* kv = qwen3_kv_kernels_for(kernels);
    const float scale = 1.0f / sqrtf((float)hd);
    uint32_t n_pos[QWEN3_MAX_FORWARD_BLOCK], lens[QWEN3_MAX_FORWARD_BLOCK];
    for (uint32_t j = 0; j < nt; j++) n_pos[j] = pos0 + j + 1;
    const uint32_t n_all = n_pos[nt - 1];
    const Qwen3Q8Matrix keys = {cache->key_q8 + slab * cache->ctx_len * hd,
                                cache->key_scale + slab * cache->ctx_len * (hd / gs), n_all, hd, gs};
    for (uint32_t g = 0; g < group; g++) {
        Qwen3Q8Batch qg = query_rows(cache, kv_head * group + g, t0, nt);
        const float* x = q + (size_t)(kv_head * group + g) * hd;
        for (uint32_t j = 0; j < nt; j++) kernels->quantize_row(x + (size_t)j * q_dim, &qg, j);
    }
    for (uint32_t p0 = 0; p0 < n_all; p0 += key_chunk) {
        const uint32_t p1 = n_all - p0 < key_chunk ? n_all : p0 + key_chunk;
        for (uint32_t g = 0; g < group; g++) {
            const Qwen3Q8Batch qg = query_rows(cache, kv_head * group + g, t0, nt);
            float* s = att + g * att_head + p0;
            kernels->matmul_q8(s, att_stride, &keys, &qg, p0, p1); /* one token: the tier's matvec */
            for (uint32_t j = 0; j < nt; j++) {
                float* row = s + (size_t)j * att_stride;
                for (uint32_t i = 0; i < p1 - p0; i++) row[i] = row[i] * scale;
            }
        }
    }
    for (uint32_t g = 0; g < group; g++) {
        kernels->softmax_exp(att + g * att_head, att_stride, nt, n_pos, sums + g * sum_head);
    }
    if (nt == 1 && kv->attn_values_q8) {
        /* one token: the group's query heads share its positions, and the values go
         * straight from the int8 rows into their sums (the same bits as below) */
        const size_t at = slab * cache->ctx_len;
        kv->attn_values_q8(out + (size_t)kv_head * group * hd, hd, att, att_head, group, cache->value_q8 + at * hd,
                           cache->value_scale + at * (hd / gs), n_all, hd, gs);
        return;
    }
    for (uint32_t p0 = 0; p0 < n_all; p0 += chunk) {
        const uint32_t p1 = n_all - p0 < chunk ? n_all : p0 + chunk;
        dequantize_values(kv, buf, cache, layer, kv_head, p0, p1 - p0);
        for (uint32_t j = 0; j < nt; j++) lens[j] = n_pos[j] <= p0 ? 0 : (n_pos[j] < p1 ? n_pos[j] : p1) - p0;
        for (uint32_t g = 0; g < group; g++) {
            kernels->attn_values(out + (size_t)(kv_head * group + g) * hd, wide, att + g * att_head + p0, att_stride,
                                 lens, nt, buf, hd, hd, p0 > 0);
        }
    }
}

/* attend over an f32 cache, the key and value chunks read in place, or over an f16 one
 * (docs/numerics.md#fp16-kv-cache), each chunk widened into a stack buffer first (exact
 * conversions): the same kernels on the same floats as an f32 cache holding the rounded
 * keys and values. */
static void attend_float(const Qwen3KernelTable* kernels, const Qwen3Context* cache, uint32_t layer,
                         uint32_t kv_head, uint32_t pos0, uint32_t nt, const float* q, float* out, float* att,
                         size_t att_head, float* sums, size_t sum_head) {
    const Qwen3Header* h = &cache->model->header;
    const uint32_t hd = h->head_dim, q_dim = h->n_heads * hd;
    const uint32_t group = h->n_heads / h->n_kv_heads;
    const uint32_t wide = q_dim > h->dim ? q_dim : h->dim;
    const uint32_t att_stride = cache->att_stride;
    const size_t block_stride = (size_t)QWEN3_KV_BLOCK * hd, slab = (size_t)layer * h->n_kv_heads + kv_head;
    const int f16 = cache->kv_type == QWEN3_KV_F16;
    const float* keys = f16 ? NULL : cache->key_cache + slab * cache->ctx_blocks * block_stride;
    const float* values = f16 ? NULL : cache->value_cache + slab * cache->ctx_len * hd;
    const uint16_t* keys16 = f16 ? cache->key_f16 + slab * cache->ctx_blocks * block_stride : NULL;
    const uint16_t* values16 = f16 ? cache->value_f16 + slab * cache->ctx_len * hd : NULL;
    const Qwen3FromF16Fn widen = f16 ? qwen3_kv_kernels_for(kernels)->from_f16 : NULL;
    _Alignas(64) float buf[QWEN3_KV_Q8_MAX_HEAD_DIM * QWEN3_KV_BLOCK]; /* f16: a widened chunk */
    const uint32_t fits = QWEN3_KV_Q8_MAX_HEAD_DIM * QWEN3_KV_BLOCK / hd / QWEN3_KV_BLOCK * QWEN3_KV_BLOCK;
    const float scale = 1.0f / sqrtf((float)hd);
    uint32_t n_pos[QWEN3_MAX_FORWARD_BLOCK], lens[QWEN3_MAX_FORWARD_BLOCK];
    for (uint32_t j = 0; j < nt; j++) n_pos[j] = pos0 + j + 1;
    const uint32_t n_all = n_pos[nt - 1];
    const uint32_t chunk = f16 && cache->att_chunk > fits ? fits : cache->att_chunk;
    /* Each kernel call takes n_q queries: in a tile, one query head's tokens (q_dim apart
     * in q, att_stride in att), a call per head of the group; in decoding (one token), the
     * group's query heads at once (hd apart in q, att_head in att), so each key and value
     * chunk is read once per kv head. A query's sums do not depend on the other queries of
     * a call: the same bits either way. */
    const int heads = nt == 1 && group <= QWEN3_MAX_FORWARD_BLOCK && att_head <= UINT32_MAX;
    const uint32_t calls = heads ? 1 : group, n_q = heads ? group : nt;
    const uint32_t q_step = heads ? hd : q_dim, s_step = heads ? (uint32_t)att_head : att_stride;
    const uint32_t o_step = heads ? hd : wide;
    for (uint32_t p0 = 0; p0 < n_all; p0 += chunk) {
        const uint32_t n_c = n_all - p0 < chunk ? n_all - p0 : chunk;
        const float* kc = f16 ? buf : keys + (size_t)(p0 / QWEN3_KV_BLOCK) * block_stride;
        if (f16) {
            /* whole key blocks (their lanes past n_c are never read into a score) */
            const uint32_t blocks = (n_c + QWEN3_KV_BLOCK - 1) / QWEN3_KV_BLOCK;
            widen(buf, keys16 + (size_t)(p0 / QWEN3_KV_BLOCK) * block_stride, blocks * (uint32_t)block_stride);
        }
        for (uint32_t g = 0; g < calls; g++) {
            const float* qg = q + (size_t)(kv_head * group + g) * hd;
            kernels->attn_scores(att + g * att_head + p0, s_step, qg, q_step, n_q, kc, block_stride, n_c, hd, scale);
        }
    }
    for (uint32_t g = 0; g < group; g++) {
        kernels->softmax_exp(att + g * att_head, att_stride, nt, n_pos, sums + g * sum_head);
    }
    for (uint32_t p0 = 0; p0 < n_all; p0 += chunk) {
        const uint32_t p1 = n_all - p0 < chunk ? n_all : p0 + chunk;
        for (uint32_t j = 0; j < n_q; j++) {
            const uint32_t np = heads ? n_all : n_pos[j];
            lens[j] = np <= p0 ? 0 : (np < p1 ? np : p1) - p0;
        }
        const float* vc = f16 ? buf : values + (size_t)p0 * hd;
        if (f16) widen(buf, values16 + (size_t)p0 * hd, (p1 - p0) * hd);
        for (uint32_t g = 0; g < calls; g++) {
            kernels->attn_values(out + (size_t)(kv_head * group + g) * hd, o_step, att + g * att_head + p0, s_step,
                                 lens, n_q, vc, hd, hd, p0 > 0);
        }
    }
}

/* One kv head, nt tokens at positions pos0 .. pos0 + nt - 1 of the context `cache`:
 * causal attention of each token, for every query head reading that kv head, over
 * positions 0 .. its own. Token j's queries are at q + j * q_dim, its output at
 * out + j * wide; query head kv_head * group + g keeps its scores at att + g * att_head,
 * rows att_stride floats apart, and the sums of its weights at sums + g * sum_head. */
static void attend(const Qwen3KernelTable* kernels, const Qwen3Context* cache, uint32_t layer, uint32_t kv_head,
                   uint32_t pos0, uint32_t t0, uint32_t nt, const float* q, float* out, float* att, size_t att_head,
                   float* sums, size_t sum_head) {
    if (cache->kv_type == QWEN3_KV_Q8) {
        attend_q8(kernels, cache, layer, kv_head, pos0, t0, nt, q, out, att, att_head, sums, sum_head);
    } else {
        attend_float(kernels, cache, layer, kv_head, pos0, nt, q, out, att, att_head, sums, sum_head);
    }
    /* the softmax's division, once per output instead of once per weight */
    const Qwen3Header* h = &cache->model->header;
    const uint32_t hd = h->head_dim, group = h->n_heads / h->n_kv_heads, q_dim = h->n_heads * hd;
    const uint32_t wide = q_dim > h->dim ? q_dim : h->dim;
    for (uint32_t g = 0; g < group; g++) {
        for (uint32_t j = 0; j < nt; j++) {
            float* o = out + (size_t)j * wide + (size_t)(kv_head * group + g) * hd;
            const float s = sums[g * sum_head + j];
            for (uint32_t i = 0; i < hd; i++) o[i] = o[i] / s;
        }
    }
}

/* One kv head, one tile of tokens of the block (attend). */
static void attention_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const BlockJob* job = (const BlockJob*)arg;
    Qwen3Context* c = job->c;
    const Qwen3Header* h = &c->model->header;
    const uint32_t q_dim = h->n_heads * h->head_dim, wide = q_dim > h->dim ? q_dim : h->dim;
    const uint32_t group = h->n_heads / h->n_kv_heads;
    const uint32_t kv_head = task / job->n_tiles, t0 = (task % job->n_tiles) * job->tile;
    const uint32_t nt = job->n - t0 < job->tile ? job->n - t0 : job->tile;
    float* const att = c->att + ((size_t)kv_head * group * c->block + t0) * c->att_stride;
    attend(job->kernels, c, job->layer, kv_head, job->pos0 + t0, t0, nt, c->q + (size_t)t0 * q_dim,
           c->xb + (size_t)t0 * wide, att, (size_t)c->block * c->att_stride,
           c->att_sum + (size_t)kv_head * group * c->block + t0, c->block);
}

/* A batched decode step: one kv head of row t's context, over that context's own cache
 * and scores buffer (tasks t * n_kv_heads + kv_head). */
static void batch_attention_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const BlockJob* job = (const BlockJob*)arg;
    Qwen3Context* c = job->c;
    const Qwen3Header* h = &c->model->header;
    const uint32_t q_dim = h->n_heads * h->head_dim, wide = q_dim > h->dim ? q_dim : h->dim;
    const uint32_t group = h->n_heads / h->n_kv_heads;
    const uint32_t t = task / h->n_kv_heads, kv_head = task % h->n_kv_heads;
    Qwen3Context* const seq = job->seqs[t];
    float* const att = seq->att + (size_t)kv_head * group * seq->block * seq->att_stride;
    attend(job->kernels, seq, job->layer, kv_head, seq->pos, 0, 1, c->q + (size_t)t * q_dim, c->xb + (size_t)t * wide,
           att, (size_t)seq->block * seq->att_stride, seq->att_sum + (size_t)kv_head * group * seq->block,
           seq->block);
}

/* A task's tokens: the attention output quantised as the input of Wo. */
static void quantize_att_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const BlockJob* job = (const BlockJob*)arg;
    Qwen3Context* c = job->c;
    const Qwen3Header* h = &c->model->header;
    const uint32_t q_dim = h->n_heads * h->head_dim, wide = q_dim > h->dim ? q_dim : h->dim;
    uint32_t t0;
    const uint32_t nt = task_tokens(job, task, &t0);
    for (uint32_t t = t0; t < t0 + nt; t++) quantize_input(c, job->kernels, c->xb + (size_t)t * wide, &c->xq, t);
}

/* A task's tokens: x += Wo output, h = rmsnorm(x) * ffn_norm, quantised. */
static void ffn_input_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const BlockJob* job = (const BlockJob*)arg;
    Qwen3Context* c = job->c;
    const uint32_t dim = c->model->header.dim;
    uint32_t t0;
    const uint32_t nt = task_tokens(job, task, &t0);
    for (uint32_t t = t0; t < t0 + nt; t++) add_into(c->x + (size_t)t * dim, c->xb2 + (size_t)t * dim, dim);
    rmsnorm_rows(c->xb + (size_t)t0 * dim, c->x + (size_t)t0 * dim, dim, nt, job->lw->ffn_norm, dim,
                 c->model->rms_eps);
    for (uint32_t t = t0; t < t0 + nt; t++) quantize_input(c, job->kernels, c->xb + (size_t)t * dim, &c->xq, t);
}

/* A task's tokens: hb = silu(gate) * up, quantised as the input of the down projection. */
static void silu_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const BlockJob* job = (const BlockJob*)arg;
    Qwen3Context* c = job->c;
    const uint32_t hidden = c->model->header.hidden_dim;
    uint32_t t0;
    const uint32_t nt = task_tokens(job, task, &t0);
    for (uint32_t t = t0; t < t0 + nt; t++) {
        float* hb = c->hb + (size_t)t * hidden;
        job->kernels->silu_mul(hb, c->hb2 + (size_t)t * hidden, hidden);
        quantize_input(c, job->kernels, hb, &c->hq, t);
    }
}

/* Runs fn over the block's tokens, TASK_TOKENS per task: on the pool when there is more
 * than one task. */
static void per_token(Qwen3Model* m, Qwen3TaskFn fn, BlockJob* job) {
    const uint32_t n_tasks = task_count(job);
    if (n_tasks == 1) {
        fn(job, 0, 1);
    } else {
        qwen3_pool_run(m->pool, fn, job, n_tasks);
    }
}

/* ====================================================================================
 * Decode (one token): fused pool runs
 *
 * With one token the elementwise work between matmuls would run on the calling thread
 * while the workers wait: QK-norm and RoPE after Q/K/V, SiLU and the quantisation of the
 * down projection's input after gate/up (a few percent of a step, twice that share at two
 * threads). Here each task of the matmul run also finishes its own rows: whole heads for
 * Q/K/V, whole quantisation groups for gate/up. The operations per element are the
 * same as in the block path, so the bits are too.
 * ================================================================================== */

typedef struct {
    Qwen3Context* c;
    const Qwen3LayerWeights* lw;
    const Qwen3KernelTable* kernels;
    uint32_t layer;
    uint32_t pos;
    uint32_t per;       /* heads (Q/K/V) or rows (gate/up) per task */
} FusedJob;

/* Task `task`'s heads of a fused Q/K/V job, `per` heads each in the joined order (n_heads
 * Q heads, then K, then V): heads [span[m][0], span[m][1]) of matrix m = Q, K, V (empty
 * when equal). qkv_fused_task runs them; layer_warm prefetches their rows. */
static void qkv_heads(const Qwen3Header* h, uint32_t per, uint32_t task, uint32_t span[3][2]) {
    const uint32_t total = h->n_heads + 2 * h->n_kv_heads;
    const uint32_t u0 = task * per, u1 = u0 + per < total ? u0 + per : total;
    const uint32_t start[4] = {0, h->n_heads, h->n_heads + h->n_kv_heads, total};
    for (uint32_t m = 0; m < 3; m++) {
        const uint32_t lo = start[m], hi = start[m + 1];
        const uint32_t a = u0 > lo ? (u0 < hi ? u0 : hi) : lo, b = u1 < hi ? (u1 > lo ? u1 : lo) : hi;
        span[m][0] = a - lo;
        span[m][1] = b - lo;
    }
}

/* Gate and up rows [*r0, *r1) of task `task` of a fused gate/up job. */
static void gate_up_rows(const FusedJob* job, uint32_t hidden, uint32_t task, uint32_t* r0, uint32_t* r1) {
    *r0 = task * job->per;
    *r1 = *r0 + job->per < hidden ? *r0 + job->per : hidden;
}

/* Q/K/V heads qkv_heads gives task `task`. */
static void qkv_fused_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const FusedJob* job = (const FusedJob*)arg;
    Qwen3Context* c = job->c;
    const Qwen3Header* h = &c->model->header;
    const uint32_t hd = h->head_dim;
    uint32_t span[3][2];
    qkv_heads(h, job->per, task, span);
    const uint32_t dim = h->dim;
    const float eps = c->model->rms_eps;
    if (span[0][0] < span[0][1]) {
        const uint32_t a = span[0][0], b = span[0][1];
        float* q = c->q + (size_t)a * hd;
        qwen3_matmul_rows(job->kernels, c->q, 0, &job->lw->wq, &c->xq, c->xb, dim, a * hd, b * hd);
        rmsnorm_rows(q, q, hd, b - a, job->lw->q_norm, hd, eps);
        for (uint32_t i = 0; i < b - a; i++) qwen3_rope_rotate(q + (size_t)i * hd, c->rope_cos, c->rope_sin, hd);
    }
    if (span[1][0] < span[1][1]) {
        const uint32_t a = span[1][0], b = span[1][1];
        float* k = c->k + (size_t)a * hd;
        qwen3_matmul_rows(job->kernels, c->k, 0, &job->lw->wk, &c->xq, c->xb, dim, a * hd, b * hd);
        rmsnorm_rows(k, k, hd, b - a, job->lw->k_norm, hd, eps);
        for (uint32_t i = 0; i < b - a; i++) qwen3_rope_rotate(k + (size_t)i * hd, c->rope_cos, c->rope_sin, hd);
        store_keys(job->kernels, c, job->layer, job->pos, c->k, a, b);
    }
    if (span[2][0] < span[2][1]) {
        const uint32_t a = span[2][0], b = span[2][1];
        qwen3_matmul_rows(job->kernels, c->v_new, 0, &job->lw->wv, &c->xq, c->xb, dim, a * hd, b * hd);
        store_values(job->kernels, c, job->layer, job->pos, c->v_new, a, b);
    }
}

/* Gate and up rows [r0, r1), then SiLU and the quantisation of those rows' groups. */
static void gate_up_fused_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const FusedJob* job = (const FusedJob*)arg;
    Qwen3Context* c = job->c;
    const uint32_t hidden = c->model->header.hidden_dim, gs = c->hq.group_size;
    uint32_t r0, r1;
    gate_up_rows(job, hidden, task, &r0, &r1);
    const uint32_t dim = c->model->header.dim;
    qwen3_matmul_rows(job->kernels, c->hb, 0, &job->lw->w1, &c->xq, c->xb, dim, r0, r1);
    qwen3_matmul_rows(job->kernels, c->hb2, 0, &job->lw->w3, &c->xq, c->xb, dim, r0, r1);
    job->kernels->silu_mul(c->hb + r0, c->hb2 + r0, r1 - r0);
    Qwen3Q8Batch slice = {c->hq.q + r0, c->hq.s + r0 / gs, c->hq.sums + r0 / gs, r1 - r0, 1, gs};
    job->kernels->quantize_row(c->hb + r0, &slice, 0);
}

/* Tasks for `units` of one token's work on this pool, DECODE_TASKS_PER_THREAD per thread,
 * at least one unit each (one task, on the caller, when the whole job is too small to
 * share). */
static uint32_t fused_tasks(const Qwen3Model* m, uint32_t units, uint64_t work) {
    const uint32_t threads = qwen3_pool_threads(m->pool);
    if (threads == 1 || work < PARALLEL_MIN_WORK) return 1;
    const uint32_t n = threads * DECODE_TASKS_PER_THREAD;
    return units < n ? units : n;
}

/* Sets job->per and returns the number of tasks. */
static uint32_t plan_fused(const Qwen3Model* m, FusedJob* job, uint32_t units, uint32_t unit_rows, uint64_t work) {
    const uint32_t n_tasks = fused_tasks(m, units, work);
    job->per = (units + n_tasks - 1) / n_tasks * unit_rows;
    return (units * unit_rows + job->per - 1) / job->per;
}

static void run_fused(Qwen3Model* m, Qwen3TaskFn fn, FusedJob* job, uint32_t units, uint32_t unit_rows,
                      uint64_t work) {
    const uint32_t n_tasks = plan_fused(m, job, units, unit_rows, work);
    if (n_tasks == 1) {
        fn(job, 0, 1);
    } else {
        qwen3_pool_run(m->pool, fn, job, n_tasks);
    }
}

/* Row t of a pass: token's embedding into x, and the RoPE angles of position pos. */
static void embed_row(Qwen3Context* c, uint32_t t, int32_t token, uint32_t pos) {
    const Qwen3Header* h = &c->model->header;
    const uint32_t dim = h->dim, half = h->head_dim / 2;
    qwen3_matrix_row(c->x + (size_t)t * dim, &c->model->weights.embed, (uint32_t)token);
    /* the expression of qwen3_rope_angles, with its power hoisted to the context */
    const float fpos = (float)pos;
    for (uint32_t i = 0; i < half; i++) {
        float angle = fpos * c->rope_freq[i];
        qwen3_rope_sincos(angle, &c->rope_cos[(size_t)t * half + i], &c->rope_sin[(size_t)t * half + i]);
    }
}

/* One decode layer as one phased pool run (qwen3_pool_run_phases): the stages below,
 * each starting once the one before has finished, as the separate runs of the block path
 * would. The same task functions on the same data, so the same bits; what changes is one
 * hand-off to the workers per layer instead of five (Q/K/V, attention, Wo, gate/up, down)
 * plus the serial steps in between run by whichever thread gets there first. */
enum {
    PHASE_NORM_INPUT, /* [x += previous down output], rmsnorm, quantise: 1 task */
    PHASE_QKV,        /* Q/K/V matvecs with QK-norm, RoPE and the cache writes */
    PHASE_ATTENTION,  /* per kv head (one task for all when too small to share) */
    PHASE_QUANT_ATT,  /* the attention output quantised: 1 task */
    PHASE_WO,
    PHASE_FFN_INPUT,  /* x += Wo output, rmsnorm, quantise: 1 task */
    PHASE_GATE_UP,    /* gate/up matvecs with SiLU and the down input's quantisation */
    PHASE_DOWN,
    LAYER_PHASES
};

typedef struct {
    BlockJob* block;
    FusedJob qkv, gate_up;
    MatmulJob wo, down;
    uint32_t att_tasks;  /* attention tasks (kv heads) */
    int att_serial;      /* all of them in one task */
} LayerRun;

static void layer_phase(void* arg, uint32_t phase, uint32_t task, uint32_t n_tasks) {
    LayerRun* r = (LayerRun*)arg;
    Qwen3Context* c = r->block->c;
    const Qwen3Header* h = &c->model->header;
    switch (phase) {
    case PHASE_NORM_INPUT:
        c->xq.n = h->dim;
        norm_input_task(r->block, 0, 1);
        break;
    case PHASE_QKV:
        qkv_fused_task(&r->qkv, task, n_tasks);
        break;
    case PHASE_ATTENTION:
        if (r->att_serial) {
            for (uint32_t i = 0; i < r->att_tasks; i++) attention_task(r->block, i, r->att_tasks);
        } else {
            attention_task(r->block, task, n_tasks);
        }
        break;
    case PHASE_QUANT_ATT:
        c->xq.n = h->n_heads * h->head_dim;
        quantize_att_task(r->block, 0, 1);
        break;
    case PHASE_WO:
        matmul_task(&r->wo, task, n_tasks);
        break;
    case PHASE_FFN_INPUT:
        c->xq.n = h->dim;
        ffn_input_task(r->block, 0, 1);
        break;
    case PHASE_GATE_UP:
        gate_up_fused_task(&r->gate_up, task, n_tasks);
        break;
    default:
        matmul_task(&r->down, task, n_tasks);
        break;
    }
}

/* What a thread does while its phase waits (qwen3_pool_run_phases_warm): it has claimed
 * its next matvec task, so it asks for that task's first rows, WARM_ROWS at a time, into
 * L2 - up to WARM_MAX_BYTES, well inside any L2 of 1 MB or more. A task's rows are
 * contiguous in each matrix. At two threads a decode step spends about a twentieth of
 * each thread's time in these waits (the other thread's last task, the one-task phases;
 * perf on the 2-vCPU Xeon: 2.2% of samples per thread in run_tasks), with that core's
 * share of the memory bandwidth unused. tg128 of the 0.6B shape, 2 threads, fp16 cache,
 * runs alternating, medians of 7: 35.86 tok/s without, 36.13 with 16 rows up to 256 KB,
 * 36.18 up to 1 MB (4 rows: within noise of none; 5 pairs at 4 rows: 35.44 -> 35.94). */
#define WARM_ROWS 16u
#define WARM_MAX_BYTES (256u << 10)

typedef struct {
    const Qwen3Matrix* w;
    uint32_t r0, r1;
} RowRange;

/* Step `step` of warming rows rr[0], then rr[1], ...: 0 when there is nothing left. Q8
 * and block (K-quant) weights; a row of blocks is row_bytes in a row, rows one after another. */
static int warm_rows(const RowRange* rr, uint32_t n, uint32_t step) {
    uint64_t skip = (uint64_t)step * WARM_ROWS;
    for (uint32_t i = 0; i < n; i++) {
        const Qwen3Matrix* w = rr[i].w;
        const uint64_t row_bytes = w->type == QWEN3_WEIGHT_Q8 ? w->cols : w->type == QWEN3_WEIGHT_BLOCKS ? w->blocks.row_bytes : 0;
        if (row_bytes == 0 || skip * row_bytes >= WARM_MAX_BYTES) return 0;
        const uint32_t rows = rr[i].r1 - rr[i].r0;
        if (skip >= rows) {
            skip -= rows;
            continue;
        }
        const uint32_t r = rr[i].r0 + (uint32_t)skip, k = rr[i].r1 - r < WARM_ROWS ? rr[i].r1 - r : WARM_ROWS;
        if (w->type == QWEN3_WEIGHT_Q8) {
            qwen3_prefetch_q8_rows(&w->q8, r, k);
        } else {
            const char* p = (const char*)w->blocks.data + (size_t)r * row_bytes;
            for (size_t off = 0; off < (size_t)k * row_bytes; off += 64) __builtin_prefetch(p + off, 0, 2);
        }
        return 1;
    }
    return 0;
}

/* The rows task `task` of a matmul phase reads (one part). */
static RowRange matmul_rows(const MatmulJob* job, uint32_t task) {
    const Qwen3Matrix* w = job->parts[0].w;
    const uint64_t begin = (uint64_t)task * job->rows_per_task, end = begin + job->rows_per_task;
    return (RowRange){w, begin < w->rows ? (uint32_t)begin : w->rows, end < w->rows ? (uint32_t)end : w->rows};
}

static int layer_warm(void* arg, uint32_t phase, uint32_t task, uint32_t n_tasks, uint32_t step) {
    (void)n_tasks;
    const LayerRun* r = (const LayerRun*)arg;
    const Qwen3LayerWeights* lw = r->block->lw;
    const Qwen3Header* h = &r->block->c->model->header;
    RowRange rr[3];
    uint32_t n = 0;
    switch (phase) {
    case PHASE_QKV: {
        const Qwen3Matrix* w[3] = {&lw->wq, &lw->wk, &lw->wv};
        uint32_t span[3][2];
        qkv_heads(h, r->qkv.per, task, span);
        for (uint32_t m = 0; m < 3; m++) {
            if (span[m][0] < span[m][1]) rr[n++] = (RowRange){w[m], span[m][0] * h->head_dim, span[m][1] * h->head_dim};
        }
        break;
    }
    case PHASE_WO:
        rr[n++] = matmul_rows(&r->wo, task);
        break;
    case PHASE_GATE_UP: {
        uint32_t r0, r1;
        gate_up_rows(&r->gate_up, h->hidden_dim, task, &r0, &r1);
        rr[n++] = (RowRange){&lw->w1, r0, r1};
        rr[n++] = (RowRange){&lw->w3, r0, r1};
        break;
    }
    case PHASE_DOWN:
        rr[n++] = matmul_rows(&r->down, task);
        break;
    default:
        return 0;
    }
    return warm_rows(rr, n, step);
}

/* Layer job->layer of a one-token decode step (job: one token of c, lw set) as one phased
 * run. The caller checked that it has no experts (its weights may be of any type: the fused
 * tasks take qwen3_matmul_rows). */
static void run_decode_layer(Qwen3Context* c, BlockJob* job, uint32_t unit, uint32_t att_tasks, int att_parallel) {
    Qwen3Model* m = c->model;
    const Qwen3Header* h = &m->header;
    const Qwen3LayerWeights* lw = job->lw;
    const uint32_t dim = h->dim, hd = h->head_dim, q_dim = h->n_heads * hd, kv_dim = h->n_kv_heads * hd;
    LayerRun r = {.block = job, .att_tasks = att_tasks, .att_serial = !att_parallel};
    r.qkv = (FusedJob){.c = c, .lw = lw, .kernels = job->kernels, .layer = job->layer, .pos = job->pos0};
    r.gate_up = r.qkv;
    r.wo = (MatmulJob){.parts = {{c->xb2, dim, &lw->wo}}, .n_parts = 1, .x = &c->xq, .xf = c->xb,
                       .xf_stride = q_dim > dim ? q_dim : dim, .kernels = job->kernels};
    r.down = (MatmulJob){.parts = {{c->xb2, dim, &lw->w2}}, .n_parts = 1, .x = &c->hq, .xf = c->hb,
                         .xf_stride = h->hidden_dim, .kernels = job->kernels};
    uint32_t n_tasks[LAYER_PHASES];
    n_tasks[PHASE_NORM_INPUT] = 1;
    n_tasks[PHASE_QKV] = plan_fused(m, &r.qkv, h->n_heads + 2 * h->n_kv_heads, 1, (uint64_t)(q_dim + 2 * kv_dim) * dim);
    n_tasks[PHASE_ATTENTION] = att_parallel ? att_tasks : 1;
    n_tasks[PHASE_QUANT_ATT] = 1;
    n_tasks[PHASE_WO] = plan_matmul(m, &r.wo, q_dim);
    n_tasks[PHASE_FFN_INPUT] = 1;
    n_tasks[PHASE_GATE_UP] = plan_fused(m, &r.gate_up, h->hidden_dim / unit, unit, (uint64_t)2 * h->hidden_dim * dim);
    n_tasks[PHASE_DOWN] = plan_matmul(m, &r.down, h->hidden_dim);
    qwen3_pool_run_phases_warm(m->pool, layer_phase, layer_warm, &r, n_tasks, LAYER_PHASES);
}

/* Every layer over the rows of job (embedded by embed_row): a prefill block's tokens of c
 * (job->seqs NULL), or a batched decode step's rows on the batch scratch c (job->seqs set).
 * The stages and their order are the same; a batch differs only in where Wv's rows go
 * (the scratch's cache rows 0 .. n-1, which qk_task copies to each row's context) and in
 * its attention tasks, one per (row, kv head) over each row's own cache. A single token
 * of one context takes the fused decode stages, a whole layer per pool run where its
 * weights allow (run_decode_layer). Leaves the last layer's down output in
 * xb2, not yet added to x. */
static void run_layers(Qwen3Context* c, BlockJob* job) {
    Qwen3Model* m = c->model;
    const Qwen3Header* h = &m->header;
    const Qwen3Weights* w = &m->weights;
    const Qwen3KernelTable* kernels = job->kernels;
    const uint32_t dim = h->dim, hd = h->head_dim, n = job->n, pos0 = job->pos0;
    const uint32_t q_dim = h->n_heads * hd, kv_dim = h->n_kv_heads * hd;
    const uint32_t threads = qwen3_pool_threads(m->pool);
    Qwen3TaskFn att_fn = attention_task;
    uint32_t att_tasks = h->n_kv_heads * job->n_tiles;
    uint64_t att_work = (uint64_t)(pos0 + n) * n * q_dim * 2; /* multiply-adds, about */
    if (job->seqs) {
        att_fn = batch_attention_task;
        att_tasks = n * h->n_kv_heads;
        att_work = 0;
        for (uint32_t t = 0; t < n; t++) att_work += (uint64_t)(job->seqs[t]->pos + 1) * q_dim * 2;
    }
    const int q8 = h->group_size != 0;
    const int fuse = n == 1 && !job->seqs && q8;

    /* lcm(group, 16) rows: whole quantisation groups and SIMD row blocks */
    const uint32_t gs = h->group_size;
    uint32_t unit = gs;
    while (q8 && unit % 16 != 0) unit += gs;
    const int att_parallel = threads > 1 && att_tasks > 1 && att_work >= PARALLEL_MIN_WORK;

    for (uint32_t l = 0; l < h->n_layers; l++) {
        const Qwen3LayerWeights* lw = &w->layers[l];
        job->lw = lw;
        job->layer = l;
        job->residual = l > 0;
        if (fuse && !lw->moe && h->hidden_dim % unit == 0) {
            run_decode_layer(c, job, unit, att_tasks, att_parallel);
            continue;
        }
        c->xq.n = dim;
        per_token(m, norm_input_task, job);

        FusedJob fused = {.c = c, .lw = lw, .kernels = kernels, .layer = l, .pos = pos0};
        if (fuse) {
            /* units of one head (head_dim rows: whole SIMD row blocks in practice) */
            run_fused(m, qkv_fused_task, &fused, h->n_heads + 2 * h->n_kv_heads, 1,
                      (uint64_t)(q_dim + 2 * kv_dim) * dim);
        } else {
            /* values through v_new: qk_task copies or quantises them to their place (each
             * row's own context in a batch) */
            MatmulJob qkv = {.parts = {{c->q, q_dim, &lw->wq}, {c->k, kv_dim, &lw->wk}, {c->v_new, kv_dim, &lw->wv}},
                             .n_parts = 3,
                             .x = &c->xq,
                             .xf = c->xb,
                             .xf_stride = dim,
                             .kernels = kernels};
            run_matmul(m, &qkv);
            per_token(m, qk_task, job);
        }

        if (att_parallel) {
            qwen3_pool_run(m->pool, att_fn, job, att_tasks);
        } else {
            for (uint32_t i = 0; i < att_tasks; i++) att_fn(job, i, att_tasks);
        }
        c->xq.n = q_dim;
        per_token(m, quantize_att_task, job);
        matmul1(m, kernels, c->xb2, dim, &lw->wo, &c->xq, c->xb, q_dim > dim ? q_dim : dim);

        c->xq.n = dim;
        per_token(m, ffn_input_task, job);
        if (lw->moe) {
            qwen3_moe_forward(c, kernels, lw->moe, n); /* moe.c: xb2 = the experts' weighted sum */
            continue;
        }
        if (fuse && h->hidden_dim % unit == 0) {
            run_fused(m, gate_up_fused_task, &fused, h->hidden_dim / unit, unit, (uint64_t)2 * h->hidden_dim * dim);
        } else {
            MatmulJob gate_up = {.parts = {{c->hb, h->hidden_dim, &lw->w1}, {c->hb2, h->hidden_dim, &lw->w3}},
                                 .n_parts = 2,
                                 .x = &c->xq,
                                 .xf = c->xb,
                                 .xf_stride = dim,
                                 .kernels = kernels};
            run_matmul(m, &gate_up);
            per_token(m, silu_task, job);
        }
        matmul1(m, kernels, c->xb2, dim, &lw->w2, &c->hq, c->hb, h->hidden_dim);
    }
}

static void forward_block(Qwen3Context* c, const int32_t* tokens, uint32_t n, int want_logits,
                          const Qwen3KernelTable* kernels) {
    Qwen3Model* m = c->model;
    const Qwen3Header* h = &m->header;
    const Qwen3Weights* w = &m->weights;
    const uint32_t dim = h->dim;
    const uint32_t pos0 = c->pos;

    for (uint32_t t = 0; t < n; t++) embed_row(c, t, tokens[t], pos0 + t);
    c->xq.n_tokens = n;
    c->hq.n_tokens = n;

    /* Attention tiles (one kv head each): enough tasks to share among threads, few enough
     * that each one reuses its keys for several tokens, and scores that stay in cache. */
    const uint32_t threads = qwen3_pool_threads(m->pool);
    const uint64_t row_bytes = (uint64_t)(h->n_heads / h->n_kv_heads) * (pos0 + n) * sizeof(float);
    uint32_t tile = n;
    while (tile > 8 && h->n_kv_heads * ((n + tile - 1) / tile) < 4 * threads) tile = (tile + 1) / 2;
    while (tile > 16 && tile * row_bytes > c->att_tile_bytes) tile = (tile + 1) / 2;
    BlockJob job = {.c = c, .kernels = kernels, .pos0 = pos0, .n = n, .tile = tile,
                    .n_tiles = (n + tile - 1) / tile};
    run_layers(c, &job);

    /* The last token: its residual, and its logits if wanted; the others' residual
     * streams are not needed any more. */
    const uint32_t last = n - 1;
    float* x = c->x + (size_t)last * dim;
    add_into(x, c->xb2 + (size_t)last * dim, dim);
    if (!want_logits) return;
    float* xb = c->xb + (size_t)last * dim;
    qwen3_rmsnorm(xb, x, w->final_norm, dim, m->rms_eps);
    c->xq.n = dim;
    c->xq.n_tokens = 1;
    quantize_input(c, kernels, xb, &c->xq, 0);
    matmul1(m, kernels, c->logits, 0, &w->classifier, &c->xq, xb, 0);
}

/* The checks of a forward pass over n tokens, before anything changes: they fit, every
 * id is in the vocabulary, the model file is unchanged, the cache pages are committed. */
static int32_t forward_checks(Qwen3Context* c, const int32_t* tokens, uint32_t n) {
    const Qwen3Header* h = &c->model->header;
    if (n > c->ctx_len - c->pos) {
        return qwen3_fail(QWEN3_ERR_CONTEXT_FULL,
                          "context full: %u tokens at position %u do not fit in a context of %u "
                          "positions",
                          n, c->pos, c->ctx_len);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= h->vocab_size) {
            return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                              "token id %d at index %u is outside the vocabulary [0, %u)",
                              tokens[i], i, h->vocab_size);
        }
    }
    /* one fstat per call: a model file truncated since it was loaded must give an error,
     * not a SIGBUS that kills the host process (platform.h) */
    int32_t rc = qwen3_file_map_check(&c->model->map, c->model->path);
    if (rc != QWEN3_OK) return rc;
    return commit_positions(c, c->pos + n);
}

/* Tokens per block of a call whose last position is end - 1: the context's block, halved
 * (down to QWEN3_MIN_FORWARD_BLOCK) while the attention scores a block touches,
 * n_heads x block x end fp32, would pass QWEN3_ATT_BUDGET (the scores' pages are committed
 * only as positions fill, so a long context pays only once it is used). */
static uint32_t call_block(const Qwen3Context* c, uint64_t end) {
    uint32_t b = c->block;
    while (b > QWEN3_MIN_FORWARD_BLOCK &&
           (uint64_t)c->model->header.n_heads * b * end * sizeof(float) > QWEN3_ATT_BUDGET) {
        b /= 2;
    }
    return b;
}

/* One forward pass of a call, run on the model's pool thread (qwen3_pool_call: a decode
 * loop then finds that thread on a core that did not go idle between its steps, whichever
 * thread calls, threadpool.c). Which of the three passes: `rows` set, forward_rows over
 * them; else forward_block of c, and with `all_logits` set every token's logits into it. */
typedef struct {
    Qwen3Context* c;
    Qwen3BatchScratch* rows;
    Qwen3Context* const* seqs;
    const int32_t* tokens;
    uint32_t n;
    int logits;
    float* all_logits;
    const Qwen3KernelTable* kernels;
} Pass;

/* Runs a Pass (below forward_rows); given to qwen3_pool_call with the model lock held. */
static void run_pass(void* arg);

/* The forward pass over n tokens; hidden NULL: the last token's logits, else its final
 * hidden state into hidden (dim floats) and no classifier (qwen3_forward_embed). */
static int32_t forward_tokens(Qwen3Context* c, const int32_t* tokens, uint32_t n, float* hidden) {
    if (n == 0) return QWEN3_OK;
    const Qwen3Header* h = &c->model->header;
    int32_t rc = forward_checks(c, tokens, n);
    if (rc != QWEN3_OK) return rc;
    const Qwen3KernelTable* kernels = qwen3_kernels_active();
    c->has_logits = 0;
    /* Blocks of equal size rather than full ones and a remainder: a lone last token would
     * stream every weight for itself (a 65-token prompt: 33 + 32, not 64 + 1). */
    const uint32_t block = call_block(c, (uint64_t)c->pos + n);
    const uint32_t n_blocks = (n + block - 1) / block;
    uint32_t i = 0;
    for (uint32_t b = 0; b < n_blocks; b++) {
        const uint32_t left = n_blocks - b;
        const uint32_t count = (n - i + left - 1) / left; /* <= block: n - i <= left * block */
        /* one block per lock hold: two contexts on one model take turns fairly */
        Pass pass = {.c = c, .tokens = tokens + i, .n = count, .logits = !hidden && i + count == n, .kernels = kernels};
        qwen3_mutex_lock(c->model->lock);
        qwen3_pool_call(c->model->pool, run_pass, &pass);
        qwen3_mutex_unlock(c->model->lock);
        c->pos += count;
        i += count;
        if (hidden && i == n) {
            /* the classifier's input, final_norm applied; forward_block left the last
             * token's residual stream complete */
            const Qwen3Model* m = c->model;
            qwen3_rmsnorm(hidden, c->x + (size_t)(count - 1) * h->dim, m->weights.final_norm, h->dim,
                          m->rms_eps);
        }
    }
    c->has_logits = hidden == NULL;
    return QWEN3_OK;
}

int32_t qwen3_forward_tokens(Qwen3Context* c, const int32_t* tokens, uint32_t n) {
    return forward_tokens(c, tokens, n, NULL);
}

int32_t qwen3_forward_embed(Qwen3Context* c, const int32_t* tokens, uint32_t n, float* hidden) {
    if (n == 0) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "embed: no tokens (a hidden state needs one)");
    return forward_tokens(c, tokens, n, hidden);
}

/* Every token's logits of a block that forward_block ran without logits (it added the
 * last token's residual already): the same rmsnorm, quantisation and classifier as its
 * last-token path, with the classifier as one matrix-matrix product over the block. The
 * GEMM gives each row the bits of the single-row product (the kernel tier contract), so
 * row t is what a decode step of token t leaves. */
static void block_logits(Qwen3Context* c, uint32_t n, const Qwen3KernelTable* kernels, float* out) {
    Qwen3Model* m = c->model;
    const Qwen3Header* h = &m->header;
    const uint32_t dim = h->dim;
    for (uint32_t t = 0; t < n; t++) {
        float* x = c->x + (size_t)t * dim;
        if (t + 1 < n) add_into(x, c->xb2 + (size_t)t * dim, dim);
        float* xb = c->xb + (size_t)t * dim;
        qwen3_rmsnorm(xb, x, m->weights.final_norm, dim, m->rms_eps);
    }
    c->xq.n = dim;
    c->xq.n_tokens = n;
    for (uint32_t t = 0; t < n; t++) quantize_input(c, kernels, c->xb + (size_t)t * dim, &c->xq, t);
    matmul1(m, kernels, out, h->vocab_size, &m->weights.classifier, &c->xq, c->xb, dim);
}

int32_t qwen3_forward_tokens_logits(Qwen3Context* c, const int32_t* tokens, uint32_t n, float* logits) {
    if (n == 0) return QWEN3_OK;
    int32_t rc = forward_checks(c, tokens, n);
    if (rc != QWEN3_OK) return rc;
    const Qwen3KernelTable* kernels = qwen3_kernels_active();
    const uint32_t vocab = c->model->header.vocab_size;
    c->has_logits = 0;
    /* blocks split as in qwen3_forward_tokens (any split gives the same bits) */
    const uint32_t block = call_block(c, (uint64_t)c->pos + n);
    const uint32_t n_blocks = (n + block - 1) / block;
    uint32_t i = 0;
    for (uint32_t b = 0; b < n_blocks; b++) {
        const uint32_t left = n_blocks - b;
        const uint32_t count = (n - i + left - 1) / left;
        Pass pass = {.c = c, .tokens = tokens + i, .n = count, .all_logits = logits + (size_t)i * vocab,
                     .kernels = kernels};
        qwen3_mutex_lock(c->model->lock);
        qwen3_pool_call(c->model->pool, run_pass, &pass);
        qwen3_mutex_unlock(c->model->lock);
        c->pos += count;
        i += count;
    }
    /* the context's own logits stay those of the last token, as after a prefill */
    memcpy(c->logits, logits + (size_t)(n - 1) * vocab, (size_t)vocab * sizeof(float));
    c->has_logits = 1;
    return QWEN3_OK;
}

/* ====================================================================================
 * Batched decode: one token for each of several contexts (docs/numerics.md#batched-decode)
 *
 * The rows of a pass are tokens of different contexts at their own positions. Everything
 * that is per row (embedding, norms, QK-norm, RoPE, SiLU, quantisation, residuals) and the
 * matrix products run on the model's batch scratch exactly as a prefill block's rows do;
 * what reads a context's history (the keys and values at its position, attention over its
 * cache) goes to row t's own context. A prefill block is bit-identical to one decode per
 * token, and the GEMM gives each row the single-row bits, so each context gets the logits
 * of its own decode step.
 *
 * Scratch: one per model (model->batch), not per context or per call. The model lock
 * already serialises every forward pass on a model, so one scratch is never wanted twice
 * at once; a context's own block buffers would not do (they hold min(64, its length)
 * rows, fewer than a batch may have, and its scores rows are as long as its own cache),
 * and a per-call allocation would cost the step a malloc of n * vocab_size logits. The
 * scratch is a context of batch_rows positions: its block buffers hold the rows, its
 * value cache takes each layer's new value rows before they are copied to their contexts,
 * and qwen3_moe_forward reads and writes it as it does any block. It is made at the first
 * batched step, so a model that never batches pays nothing, and only ever grows.
 * ================================================================================== */

struct Qwen3BatchScratch {
    Qwen3Context rows; /* block = rows per pass; pos stays 0 (its keys are never written) */
    float* logits;     /* (rows.block, vocab_size) the classifier's output, copied to each context */
};

void qwen3_batch_scratch_free(Qwen3BatchScratch* s) {
    if (!s) return;
    qwen3_context_deinit(&s->rows);
    qwen3_aligned_free(s->logits);
    free(s);
}

/* A scratch of at least `rows` rows on m->batch (the model lock held): kept when large
 * enough, else replaced; on failure the old one stays and the error names the size. */
static int32_t batch_scratch_reserve(Qwen3Model* m, uint32_t rows) {
    if (m->batch && m->batch->rows.block >= rows) return QWEN3_OK;
    Qwen3BatchScratch* s = (Qwen3BatchScratch*)calloc(1, sizeof *s);
    if (!s) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory allocating a batch scratch of %u rows", rows);
    int32_t rc = qwen3_context_init(&s->rows, m, rows);
    if (rc == QWEN3_OK) rc = commit_positions(&s->rows, rows);
    if (rc == QWEN3_OK) {
        rc = alloc_floats(&s->logits, (uint64_t)rows * m->header.vocab_size, "batch logits");
    }
    if (rc != QWEN3_OK) {
        qwen3_batch_scratch_free(s);
        return rc;
    }
    qwen3_batch_scratch_free(m->batch);
    m->batch = s;
    return QWEN3_OK;
}

/* One batched pass over n >= 2 rows (n <= the scratch's rows): row t is tokens[t] of
 * seqs[t] at seqs[t]->pos. Leaves each context's logits; positions do not move here. */
static void forward_rows(Qwen3BatchScratch* bs, Qwen3Context* const* seqs, const int32_t* tokens, uint32_t n,
                         const Qwen3KernelTable* kernels) {
    Qwen3Context* c = &bs->rows;
    Qwen3Model* m = c->model;
    const Qwen3Header* h = &m->header;
    const Qwen3Weights* w = &m->weights;
    const uint32_t dim = h->dim, vocab = h->vocab_size;

    for (uint32_t t = 0; t < n; t++) embed_row(c, t, tokens[t], seqs[t]->pos);
    c->xq.n_tokens = n;
    c->hq.n_tokens = n;
    BlockJob job = {.c = c, .kernels = kernels, .pos0 = 0, .n = n, .tile = 1, .n_tiles = n, .seqs = seqs};
    run_layers(c, &job);

    /* every row's logits, as block_logits: one classifier product over the rows */
    for (uint32_t t = 0; t < n; t++) {
        float* x = c->x + (size_t)t * dim;
        add_into(x, c->xb2 + (size_t)t * dim, dim);
        qwen3_rmsnorm(c->xb + (size_t)t * dim, x, w->final_norm, dim, m->rms_eps);
    }
    c->xq.n = dim;
    for (uint32_t t = 0; t < n; t++) quantize_input(c, kernels, c->xb + (size_t)t * dim, &c->xq, t);
    matmul1(m, kernels, bs->logits, vocab, &w->classifier, &c->xq, c->xb, dim);
    for (uint32_t t = 0; t < n; t++) {
        memcpy(seqs[t]->logits, bs->logits + (size_t)t * vocab, (size_t)vocab * sizeof(float));
    }
}

static void run_pass(void* arg) {
    const Pass* p = (const Pass*)arg;
    if (p->rows) {
        forward_rows(p->rows, p->seqs, p->tokens, p->n, p->kernels);
        return;
    }
    forward_block(p->c, p->tokens, p->n, p->logits, p->kernels);
    if (p->all_logits) block_logits(p->c, p->n, p->kernels, p->all_logits);
}

int32_t qwen3_forward_batch(Qwen3Context* const* ctxs, const int32_t* tokens, uint32_t n) {
    if (n == 0) return QWEN3_OK;
    if (!ctxs || !tokens) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "decode batch: %s is NULL but n is %u",
                          !ctxs ? "contexts" : "tokens", n);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!ctxs[i]) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "decode batch: contexts[%u] is NULL", i);
    }
    Qwen3Model* m = ctxs[0]->model;
    for (uint32_t i = 0; i < n; i++) {
        Qwen3Context* c = ctxs[i];
        if (c->model != m) {
            return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                              "decode batch: contexts[%u] belongs to another model than contexts[0] (one "
                              "batch reads one model's weights)",
                              i);
        }
        /* quadratic, but n is a handful of chats and this is nothing beside the pass */
        for (uint32_t j = 0; j < i; j++) {
            if (ctxs[j] == c) {
                return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                                  "decode batch: contexts[%u] is contexts[%u] again (a context takes one "
                                  "token per batch)",
                                  i, j);
            }
        }
        if (c->pos >= c->ctx_len) {
            return qwen3_fail(QWEN3_ERR_CONTEXT_FULL,
                              "context full: contexts[%u] holds %u of %u positions, no room for its token", i,
                              c->pos, c->ctx_len);
        }
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= m->header.vocab_size) {
            return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                              "decode batch: token id %d of contexts[%u] is outside the vocabulary [0, %u)",
                              tokens[i], i, m->header.vocab_size);
        }
    }
    int32_t rc = qwen3_file_map_check(&m->map, m->path);
    for (uint32_t i = 0; i < n && rc == QWEN3_OK; i++) rc = commit_positions(ctxs[i], ctxs[i]->pos + 1);
    if (rc != QWEN3_OK) return rc;
    /* passes of equal size, as forward_tokens splits a prefill */
    const uint32_t max_rows = m->batch_rows ? m->batch_rows : QWEN3_FORWARD_BLOCK;
    const uint32_t n_passes = (n + max_rows - 1) / max_rows;
    const uint32_t widest = (n + n_passes - 1) / n_passes;
    if (widest > 1) {
        qwen3_mutex_lock(m->lock);
        rc = batch_scratch_reserve(m, widest);
        qwen3_mutex_unlock(m->lock);
        if (rc != QWEN3_OK) return rc;
    }

    const Qwen3KernelTable* kernels = qwen3_kernels_active();
    for (uint32_t i = 0; i < n; i++) ctxs[i]->has_logits = 0;
    uint32_t i = 0;
    for (uint32_t b = 0; b < n_passes; b++) {
        const uint32_t left = n_passes - b;
        const uint32_t count = (n - i + left - 1) / left;
        /* one pass per lock hold, as forward_tokens; the scratch only grows, so the one
         * reserved above (or a larger one) is there; a pass of one row is its context's
         * fused decode step (forward_block) */
        Pass pass = {.c = ctxs[i], .seqs = ctxs + i, .tokens = tokens + i, .n = count, .logits = 1, .kernels = kernels};
        qwen3_mutex_lock(m->lock);
        if (count > 1) pass.rows = m->batch;
        qwen3_pool_call(m->pool, run_pass, &pass);
        qwen3_mutex_unlock(m->lock);
        for (uint32_t j = i; j < i + count; j++) {
            ctxs[j]->pos += 1;
            ctxs[j]->has_logits = 1;
        }
        i += count;
    }
    return QWEN3_OK;
}
