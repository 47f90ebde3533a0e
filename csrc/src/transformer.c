/*
 * transformer.c - the Qwen3 forward pass over one context (SPEC sections 1 and 4).
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
 *   logits = Wcls (rmsnorm(x) * final_norm)         (only for the last token of a prefill)
 *
 * The fp32 operations below fix their summation order (index order, one fp32
 * accumulator) so the TypeScript engine can reproduce them:
 *   rmsnorm: ss = sum x[i]*x[i]; s = 1 / sqrtf(ss / n + eps); out[i] = w[i] * (s * x[i])
 *   rope:    half = head_dim / 2; freq = powf(theta, -(float)i / (float)half);
 *            angle = (float)pos * freq; c = cosf(angle), s = sinf(angle);
 *            (a, b) -> (a*c - b*s, a*s + b*c)
 *            (fp32 throughout, as qwen3.c and Hugging Face's float32 rotary embedding do)
 *   scores:  dot = sum q[i]*k[i]; score = dot * (1.0f / sqrtf((float)head_dim))
 *   softmax: m = max; e[i] = expf(x[i] - m); sum += e[i]; out[i] = e[i] / sum
 *   values:  out[i] = sum over t of att[t] * v[t][i] (t ascending)
 *   silu:    hb[i] = (g * (1 / (1 + expf(-g)))) * u
 *   residual: x[i] = x[i] + y[i]
 */
#include "transformer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
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
        float freq = powf(theta, -(float)i / (float)half);
        float angle = (float)pos * freq;
        cos_out[i] = cosf(angle);
        sin_out[i] = sinf(angle);
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

void qwen3_softmax(float* x, uint32_t n) {
    if (n == 0) return;
    float m = x[0];
    for (uint32_t i = 1; i < n; i++) {
        if (x[i] > m) m = x[i];
    }
    float sum = 0.0f;
    for (uint32_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    for (uint32_t i = 0; i < n; i++) x[i] = x[i] / sum;
}

void qwen3_attention_head(float* out, const float* q, const float* k, const float* v,
                          uint32_t stride, uint32_t n_pos, uint32_t head_dim, float* att) {
    const float inv_scale = 1.0f / sqrtf((float)head_dim);
    for (uint32_t t = 0; t < n_pos; t++) {
        const float* kt = k + (size_t)t * stride;
        float dot = 0.0f;
        for (uint32_t i = 0; i < head_dim; i++) dot += q[i] * kt[i];
        att[t] = dot * inv_scale;
    }
    qwen3_softmax(att, n_pos);
    for (uint32_t i = 0; i < head_dim; i++) out[i] = 0.0f;
    for (uint32_t t = 0; t < n_pos; t++) {
        const float* vt = v + (size_t)t * stride;
        const float a = att[t];
        for (uint32_t i = 0; i < head_dim; i++) out[i] += a * vt[i];
    }
}

/* ====================================================================================
 * Context memory
 * ================================================================================== */

/* Positions committed at a time on Windows: few commit calls, little waste. */
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

static int32_t alloc_q8(Qwen3Q8Vector* v, uint32_t n, uint32_t group_size, const char* what) {
    v->n = n;
    v->group_size = group_size;
    v->q = (int8_t*)qwen3_aligned_alloc(n);
    v->s = (float*)qwen3_aligned_alloc((size_t)(n / group_size) * sizeof(float));
    if (!v->q || !v->s) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY,
                          "out of memory allocating %u quantised values for the context's %s", n,
                          what);
    }
    return QWEN3_OK;
}

int32_t qwen3_context_init(Qwen3Context* c, Qwen3Model* model, uint32_t ctx_len) {
    memset(c, 0, sizeof *c);
    c->model = model;
    c->ctx_len = ctx_len;
    const Qwen3Header* h = &model->header;
    const uint64_t kv_dim = (uint64_t)h->n_kv_heads * h->head_dim;
    const uint64_t q_dim = (uint64_t)h->n_heads * h->head_dim;
    const uint64_t wide = q_dim > h->dim ? q_dim : h->dim;

    /* Header limits keep every factor below 2^24, so these products fit in 64 bits. */
    uint64_t cache_floats = (uint64_t)h->n_layers * ctx_len * kv_dim;
    uint64_t att_floats = (uint64_t)h->n_heads * ctx_len;
    uint64_t lazy_bytes = (2 * cache_floats + att_floats) * sizeof(float);
    if (cache_floats > UINT64_MAX / 64 || lazy_bytes > (uint64_t)SIZE_MAX) {
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY,
                          "a KV cache of %u positions (%llu floats per layer per position) does "
                          "not fit in this address space",
                          ctx_len, (unsigned long long)(2 * kv_dim));
    }
    int32_t rc = qwen3_region_reserve(&c->lazy, (size_t)lazy_bytes);
    if (rc != QWEN3_OK) {
        qwen3_error_set("out of memory reserving %llu bytes for a KV cache of %u positions",
                        (unsigned long long)lazy_bytes, ctx_len);
        return rc;
    }
    c->key_cache = (float*)(void*)c->lazy.base;
    c->value_cache = c->key_cache + cache_floats;
    c->att = c->value_cache + cache_floats;

    if (rc == QWEN3_OK) rc = alloc_floats(&c->x, h->dim, "residual stream");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->xb, wide, "activation buffer");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->xb2, h->dim, "matmul output");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->q, q_dim, "queries");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->hb, h->hidden_dim, "feed-forward gate");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->hb2, h->hidden_dim, "feed-forward up");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->rope_cos, h->head_dim / 2, "RoPE table");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->rope_sin, h->head_dim / 2, "RoPE table");
    if (rc == QWEN3_OK) rc = alloc_floats(&c->logits, h->vocab_size, "logits");
    if (rc == QWEN3_OK) rc = alloc_q8(&c->xq, (uint32_t)wide, h->group_size, "matmul input");
    if (rc == QWEN3_OK) rc = alloc_q8(&c->hq, h->hidden_dim, h->group_size, "feed-forward input");
    if (rc == QWEN3_OK) rc = qwen3_sampler_init(&c->sampler, h->vocab_size);
    if (rc != QWEN3_OK) qwen3_context_release(c);
    return rc;
}

void qwen3_context_release(Qwen3Context* c) {
    qwen3_region_release(&c->lazy);
    qwen3_aligned_free(c->x);
    qwen3_aligned_free(c->xb);
    qwen3_aligned_free(c->xb2);
    qwen3_aligned_free(c->q);
    qwen3_aligned_free(c->hb);
    qwen3_aligned_free(c->hb2);
    qwen3_aligned_free(c->rope_cos);
    qwen3_aligned_free(c->rope_sin);
    qwen3_aligned_free(c->logits);
    qwen3_aligned_free(c->xq.q);
    qwen3_aligned_free(c->xq.s);
    qwen3_aligned_free(c->hq.q);
    qwen3_aligned_free(c->hq.s);
    qwen3_sampler_release(&c->sampler);
    memset(c, 0, sizeof *c);
}

/* Commits the cache pages of positions below `upto` (a no-op on POSIX, where untouched
 * pages are free anyway). */
static int32_t commit_positions(Qwen3Context* c, uint32_t upto) {
    if (upto <= c->committed) return QWEN3_OK;
    const Qwen3Header* h = &c->model->header;
    uint64_t target = ((uint64_t)upto + COMMIT_CHUNK - 1) / COMMIT_CHUNK * COMMIT_CHUNK;
    if (target > c->ctx_len) target = c->ctx_len;
    const size_t row = (size_t)h->n_kv_heads * h->head_dim * sizeof(float);
    const size_t from = c->committed, count = (size_t)target - c->committed;
    const size_t cache_bytes = (size_t)h->n_layers * c->ctx_len * row;
    for (uint32_t l = 0; l < h->n_layers; l++) {
        size_t off = ((size_t)l * c->ctx_len + from) * row;
        int32_t rc = qwen3_region_commit(&c->lazy, off, count * row);
        if (rc == QWEN3_OK) rc = qwen3_region_commit(&c->lazy, cache_bytes + off, count * row);
        if (rc != QWEN3_OK) return rc;
    }
    for (uint32_t hd = 0; hd < h->n_heads; hd++) {
        size_t off = 2 * cache_bytes + ((size_t)hd * c->ctx_len + from) * sizeof(float);
        int32_t rc = qwen3_region_commit(&c->lazy, off, count * sizeof(float));
        if (rc != QWEN3_OK) return rc;
    }
    c->committed = (uint32_t)target;
    return QWEN3_OK;
}

/* ====================================================================================
 * Parallel matmuls
 * ================================================================================== */

/* Up to three matrices that share one quantised input, split into row blocks. */
typedef struct {
    struct {
        float* out;
        const Qwen3Q8Matrix* w;
    } parts[3];
    uint32_t n_parts;
    uint32_t rows_per_task;
    const Qwen3Q8Vector* x;
    Qwen3MatvecQ8Fn matvec;
} MatvecJob;

static void matvec_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const MatvecJob* job = (const MatvecJob*)arg;
    uint64_t begin = (uint64_t)task * job->rows_per_task;
    uint64_t end = begin + job->rows_per_task;
    uint64_t base = 0; /* first row of the current part in the joined row space */
    for (uint32_t p = 0; p < job->n_parts && begin < end; p++) {
        const Qwen3Q8Matrix* w = job->parts[p].w;
        uint64_t part_end = base + w->rows;
        if (begin < part_end) {
            uint32_t r0 = (uint32_t)(begin - base);
            uint32_t r1 = (uint32_t)((end < part_end ? end : part_end) - base);
            job->matvec(job->parts[p].out + r0, w, job->x, r0, r1);
            begin = base + r1;
        }
        base = part_end;
    }
}

/* Below this many multiply-adds a job costs less than waking the pool's workers. */
#define PARALLEL_MIN_WORK (1u << 16)

/* Rows per task: a multiple of 16 (whole SIMD row blocks), about four tasks per thread
 * so uneven cores still finish together. */
static void run_matvec(Qwen3Model* m, MatvecJob* job) {
    uint64_t rows = 0;
    for (uint32_t p = 0; p < job->n_parts; p++) rows += job->parts[p].w->rows;
    uint32_t threads = qwen3_pool_threads(m->pool);
    if (rows * job->x->n < PARALLEL_MIN_WORK) threads = 1;
    uint64_t per = threads > 1 ? rows / ((uint64_t)threads * 4) : rows;
    per = (per + 15) / 16 * 16;
    if (per < 16) per = 16;
    job->rows_per_task = (uint32_t)per;
    uint32_t n_tasks = (uint32_t)((rows + per - 1) / per);
    if (n_tasks == 1) {
        matvec_task(job, 0, 1);
    } else {
        qwen3_pool_run(m->pool, matvec_task, job, n_tasks);
    }
}

static void matvec1(Qwen3Model* m, Qwen3MatvecQ8Fn fn, float* out, const Qwen3Q8Matrix* w,
                    const Qwen3Q8Vector* x) {
    MatvecJob job = {.parts = {{out, w}}, .n_parts = 1, .x = x, .matvec = fn};
    run_matvec(m, &job);
}

/* ====================================================================================
 * Attention
 * ================================================================================== */

typedef struct {
    Qwen3Context* c;
    size_t layer_offset; /* floats from the cache start to this layer */
    uint32_t n_pos;      /* positions 0 .. pos inclusive */
} AttentionJob;

static void attention_task(void* arg, uint32_t head, uint32_t n_tasks) {
    (void)n_tasks;
    const AttentionJob* job = (const AttentionJob*)arg;
    Qwen3Context* c = job->c;
    const Qwen3Header* h = &c->model->header;
    const uint32_t hd = h->head_dim, kv_dim = h->n_kv_heads * hd;
    const uint32_t kv_head = head / (h->n_heads / h->n_kv_heads);
    qwen3_attention_head(c->xb + (size_t)head * hd, c->q + (size_t)head * hd,
                         c->key_cache + job->layer_offset + (size_t)kv_head * hd,
                         c->value_cache + job->layer_offset + (size_t)kv_head * hd, kv_dim,
                         job->n_pos, hd, c->att + (size_t)head * c->ctx_len);
}

/* ====================================================================================
 * Forward
 * ================================================================================== */

static void add_into(float* x, const float* y, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) x[i] = x[i] + y[i];
}

static void forward_one(Qwen3Context* c, int32_t token, uint32_t pos, int want_logits,
                        Qwen3MatvecQ8Fn matvec) {
    Qwen3Model* m = c->model;
    const Qwen3Header* h = &m->header;
    const Qwen3Weights* w = &m->weights;
    const uint32_t dim = h->dim, hd = h->head_dim, gs = h->group_size;
    const uint32_t q_dim = h->n_heads * hd, kv_dim = h->n_kv_heads * hd;
    const float eps = m->rms_eps;

    const int8_t* eq = w->embed.q + (size_t)token * dim;
    const float* es = w->embed.s + (size_t)token * (dim / gs);
    for (uint32_t i = 0; i < dim; i++) c->x[i] = (float)eq[i] * es[i / gs];

    qwen3_rope_angles(c->rope_cos, c->rope_sin, hd, pos, m->rope_theta);

    for (uint32_t l = 0; l < h->n_layers; l++) {
        const Qwen3LayerWeights* lw = &w->layers[l];
        const size_t layer_offset = (size_t)l * c->ctx_len * kv_dim;
        float* k = c->key_cache + layer_offset + (size_t)pos * kv_dim;
        float* v = c->value_cache + layer_offset + (size_t)pos * kv_dim;

        qwen3_rmsnorm(c->xb, c->x, lw->attn_norm, dim, eps);
        c->xq.n = dim;
        qwen3_quantize_q8(c->xb, &c->xq);
        MatvecJob qkv = {.parts = {{c->q, &lw->wq}, {k, &lw->wk}, {v, &lw->wv}},
                         .n_parts = 3,
                         .x = &c->xq,
                         .matvec = matvec};
        run_matvec(m, &qkv);

        for (uint32_t i = 0; i < h->n_heads; i++) {
            float* qh = c->q + (size_t)i * hd;
            qwen3_rmsnorm(qh, qh, lw->q_norm, hd, eps);
            qwen3_rope_rotate(qh, c->rope_cos, c->rope_sin, hd);
        }
        for (uint32_t i = 0; i < h->n_kv_heads; i++) {
            float* kh = k + (size_t)i * hd;
            qwen3_rmsnorm(kh, kh, lw->k_norm, hd, eps);
            qwen3_rope_rotate(kh, c->rope_cos, c->rope_sin, hd);
        }

        AttentionJob att = {c, layer_offset, pos + 1};
        const uint64_t att_work = (uint64_t)(pos + 1) * q_dim * 2;
        if (qwen3_pool_threads(m->pool) > 1 && h->n_heads > 1 && att_work >= PARALLEL_MIN_WORK) {
            qwen3_pool_run(m->pool, attention_task, &att, h->n_heads);
        } else {
            for (uint32_t i = 0; i < h->n_heads; i++) attention_task(&att, i, h->n_heads);
        }

        c->xq.n = q_dim;
        qwen3_quantize_q8(c->xb, &c->xq);
        matvec1(m, matvec, c->xb2, &lw->wo, &c->xq);
        add_into(c->x, c->xb2, dim);

        qwen3_rmsnorm(c->xb, c->x, lw->ffn_norm, dim, eps);
        c->xq.n = dim;
        qwen3_quantize_q8(c->xb, &c->xq);
        MatvecJob gate_up = {.parts = {{c->hb, &lw->w1}, {c->hb2, &lw->w3}},
                             .n_parts = 2,
                             .x = &c->xq,
                             .matvec = matvec};
        run_matvec(m, &gate_up);
        for (uint32_t i = 0; i < h->hidden_dim; i++) {
            float g = c->hb[i];
            c->hb[i] = (g * (1.0f / (1.0f + expf(-g)))) * c->hb2[i];
        }
        qwen3_quantize_q8(c->hb, &c->hq);
        matvec1(m, matvec, c->xb2, &lw->w2, &c->hq);
        add_into(c->x, c->xb2, dim);
    }

    if (!want_logits) return;
    qwen3_rmsnorm(c->xb, c->x, w->final_norm, dim, eps);
    c->xq.n = dim;
    qwen3_quantize_q8(c->xb, &c->xq);
    matvec1(m, matvec, c->logits, &w->classifier, &c->xq);
}

int32_t qwen3_forward_tokens(Qwen3Context* c, const int32_t* tokens, uint32_t n) {
    const Qwen3Header* h = &c->model->header;
    if (n == 0) return QWEN3_OK;
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
    int32_t rc = commit_positions(c, c->pos + n);
    if (rc != QWEN3_OK) return rc;
    const Qwen3KernelTable* kernels = qwen3_kernels_active();
    c->has_logits = 0;
    for (uint32_t i = 0; i < n; i++) {
        /* one token per lock hold: two contexts on one model take turns fairly */
        qwen3_mutex_lock(c->model->lock);
        forward_one(c, tokens[i], c->pos, i + 1 == n, kernels->matvec_q8);
        qwen3_mutex_unlock(c->model->lock);
        c->pos++;
    }
    c->has_logits = 1;
    return QWEN3_OK;
}
