/*
 * moe.c - the sparse feed-forward of Qwen3-MoE (docs/numerics.md#mixture-of-experts).
 *
 * Per token: router logits (fp32, index order), softmax over the experts, the k most
 * probable experts (ties to the lower index), their weights renormalised over the k
 * (unless the model says not to: HF norm_topk_prob false).
 * Per expert, for all the block's tokens routed to it at once: gate and up products on
 * the tokens' inputs, SiLU(gate) * up, the down product, with the engine's kernels (so
 * tiers, thread counts and prefill / decode give the same bits as for a dense block).
 * Per token: out = 0; out += weight_j * expert_j output for j = 0 .. k-1 in routing order,
 * each product and sum rounded to fp32.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "moe.h"
#include "model.h"
#include "platform.h"
#include "transformer.h"

struct Qwen3MoeScratch {
    uint32_t block;   /* tokens per block, at most */
    float* probs;     /* (block, n_experts) each token's router probabilities */
    uint32_t* chosen; /* (block, k) expert of each token's slot j */
    float* weights;   /* (block, k) */
    uint32_t* slots;  /* (block * k) token * k + j of the slots routed to the current expert */
    float* xf;        /* (block, dim) gathered fp32 inputs */
    float* hb;        /* (block, hidden) gate, then silu(gate) * up */
    float* hb2;       /* (block, hidden) up */
    float* eo;        /* (block, dim) down output of the gathered tokens */
    float* out;       /* (block * k, dim) each slot's expert output */
    Qwen3Q8Batch xq;  /* (block, dim) gathered quantised inputs */
    Qwen3Q8Batch hq;  /* (block, hidden) quantised down input */
};

/* Router logits: out[e] = router row e . h, each summed in index order. Eight rows advance
 * together, so their adds' latency overlaps instead of each sum waiting on its previous
 * add (one row at a time, the router was latency bound: ~4 cycles per multiply-add); each
 * row's sum is still the same sequence of roundings, so the bits are the one-row loop's. */
static void router_logits(const float* router, const float* h, uint32_t dim, uint32_t n_experts, float* out) {
    uint32_t e = 0;
    for (; e + 8 <= n_experts; e += 8) {
        const float* r = router + (size_t)e * dim;
        float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (uint32_t i = 0; i < dim; i++) {
            const float x = h[i];
            for (uint32_t j = 0; j < 8; j++) a[j] = a[j] + r[(size_t)j * dim + i] * x;
        }
        for (uint32_t j = 0; j < 8; j++) out[e + j] = a[j];
    }
    for (; e < n_experts; e++) {
        const float* r = router + (size_t)e * dim;
        float acc = 0.0f;
        for (uint32_t i = 0; i < dim; i++) acc += r[i] * h[i];
        out[e] = acc;
    }
}

void qwen3_moe_route(const float* router, const float* h, uint32_t dim, uint32_t n_experts, uint32_t k, int norm,
                     float* probs, uint32_t* chosen, float* weights) {
    router_logits(router, h, dim, n_experts, probs);
    qwen3_softmax_ref(probs, n_experts);
    float total = 0.0f;
    for (uint32_t j = 0; j < k; j++) {
        uint32_t best = n_experts;
        for (uint32_t e = 0; e < n_experts; e++) {
            int taken = 0;
            for (uint32_t i = 0; i < j; i++) taken |= chosen[i] == e;
            if (!taken && (best == n_experts || probs[e] > probs[best])) best = e;
        }
        chosen[j] = best;
        total += probs[best];
    }
    for (uint32_t j = 0; j < k; j++) weights[j] = norm ? probs[chosen[j]] / total : probs[chosen[j]];
}

static void* alloc_bytes(uint64_t bytes, int* failed) {
    void* p = qwen3_aligned_alloc((size_t)(bytes ? bytes : 1));
    if (!p) *failed = 1;
    return p;
}

static void batch_alloc(Qwen3Q8Batch* b, uint32_t n, uint32_t tokens, uint32_t gs, int* failed) {
    b->n = n;
    b->n_tokens = tokens;
    b->group_size = gs;
    if (gs == 0) return;
    const uint64_t values = (uint64_t)n * tokens;
    b->q = (int8_t*)alloc_bytes(values, failed);
    b->s = (float*)alloc_bytes(values / gs * sizeof(float), failed);
    b->sums = (int32_t*)alloc_bytes(values / gs * sizeof(int32_t), failed);
}

int32_t qwen3_moe_scratch_new(const Qwen3Model* m, uint32_t block, Qwen3MoeScratch** out) {
    *out = NULL;
    if (m->moe.n_experts == 0) return QWEN3_OK;
    Qwen3MoeScratch* s = (Qwen3MoeScratch*)calloc(1, sizeof *s);
    if (!s) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for the experts' scratch");
    const uint64_t dim = m->header.dim, hidden = m->moe.hidden_dim, k = m->moe.n_used, B = block;
    const uint32_t gs = m->header.group_size;
    int failed = 0;
    s->block = block;
    s->probs = (float*)alloc_bytes(B * m->moe.n_experts * sizeof(float), &failed);
    s->chosen = (uint32_t*)alloc_bytes(B * k * sizeof(uint32_t), &failed);
    s->weights = (float*)alloc_bytes(B * k * sizeof(float), &failed);
    s->slots = (uint32_t*)alloc_bytes(B * k * sizeof(uint32_t), &failed);
    s->xf = (float*)alloc_bytes(B * dim * sizeof(float), &failed);
    s->hb = (float*)alloc_bytes(B * hidden * sizeof(float), &failed);
    s->hb2 = (float*)alloc_bytes(B * hidden * sizeof(float), &failed);
    s->eo = (float*)alloc_bytes(B * dim * sizeof(float), &failed);
    s->out = (float*)alloc_bytes(B * k * dim * sizeof(float), &failed);
    batch_alloc(&s->xq, (uint32_t)dim, block, gs, &failed);
    batch_alloc(&s->hq, (uint32_t)hidden, block, gs, &failed);
    if (failed) {
        qwen3_moe_scratch_free(s);
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for the experts' scratch (%u tokens)", block);
    }
    *out = s;
    return QWEN3_OK;
}

void qwen3_moe_scratch_free(Qwen3MoeScratch* s) {
    if (!s) return;
    void* bufs[] = {s->probs, s->chosen, s->weights, s->slots, s->xf,    s->hb,       s->hb2,
                    s->eo,    s->out,    s->xq.q,    s->xq.s, s->xq.sums, s->hq.q,    s->hq.s, s->hq.sums};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) qwen3_aligned_free(bufs[i]);
    free(s);
}

/* Routing of a block's tokens, a few tokens per task (each token's route is computed
 * alone, so the split changes no bits). */
typedef struct {
    const Qwen3Context* c;
    const Qwen3MoeLayer* layer;
    uint32_t n;
} RouteJob;

#define ROUTE_TASK_TOKENS 4u

static void route_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const RouteJob* job = (const RouteJob*)arg;
    const Qwen3Model* m = job->c->model;
    Qwen3MoeScratch* s = job->c->moe;
    const uint32_t dim = m->header.dim, ne = m->moe.n_experts, used = m->moe.n_used;
    const uint32_t t1 = (task + 1) * ROUTE_TASK_TOKENS < job->n ? (task + 1) * ROUTE_TASK_TOKENS : job->n;
    for (uint32_t t = task * ROUTE_TASK_TOKENS; t < t1; t++) {
        qwen3_moe_route(job->layer->router, job->c->xb + (size_t)t * dim, dim, ne, used, (int)m->moe.norm_weights,
                        s->probs + (size_t)t * ne, s->chosen + (size_t)t * used, s->weights + (size_t)t * used);
    }
}

void qwen3_moe_forward(Qwen3Context* c, const Qwen3KernelTable* k, const Qwen3MoeLayer* layer, uint32_t n) {
    Qwen3Model* m = c->model;
    Qwen3MoeScratch* s = c->moe;
    const uint32_t dim = m->header.dim, hidden = m->moe.hidden_dim, ne = m->moe.n_experts, used = m->moe.n_used;
    const uint32_t gs = m->header.group_size;
    RouteJob route = {.c = c, .layer = layer, .n = n};
    const uint32_t route_tasks = (n + ROUTE_TASK_TOKENS - 1) / ROUTE_TASK_TOKENS;
    if (route_tasks > 1 && qwen3_pool_threads(m->pool) > 1) {
        qwen3_pool_run(m->pool, route_task, &route, route_tasks);
    } else {
        for (uint32_t i = 0; i < route_tasks; i++) route_task(&route, i, route_tasks);
    }
    for (uint32_t e = 0; e < ne; e++) {
        /* the slots routed to e, in token order; their inputs gathered */
        uint32_t count = 0;
        for (uint32_t slot = 0; slot < n * used; slot++) {
            if (s->chosen[slot] != e) continue;
            const float* x = c->xb + (size_t)(slot / used) * dim;
            memcpy(s->xf + (size_t)count * dim, x, (size_t)dim * sizeof(float));
            if (gs) k->quantize_row(x, &s->xq, count);
            s->slots[count++] = slot;
        }
        if (count == 0) continue; /* an expert no token chose is never read */
        s->xq.n_tokens = count;
        s->hq.n_tokens = count;
        qwen3_matmul_pair(m, k, s->hb, &layer->gate[e], s->hb2, &layer->up[e], hidden, &s->xq, s->xf, dim);
        for (uint32_t i = 0; i < count; i++) {
            float* hb = s->hb + (size_t)i * hidden;
            k->silu_mul(hb, s->hb2 + (size_t)i * hidden, hidden);
            if (gs) k->quantize_row(hb, &s->hq, i);
        }
        qwen3_matmul_pair(m, k, s->eo, &layer->down[e], NULL, NULL, dim, &s->hq, s->hb, hidden);
        for (uint32_t i = 0; i < count; i++) {
            memcpy(s->out + (size_t)s->slots[i] * dim, s->eo + (size_t)i * dim, (size_t)dim * sizeof(float));
        }
    }
    for (uint32_t t = 0; t < n; t++) {
        float* o = c->xb2 + (size_t)t * dim;
        for (uint32_t i = 0; i < dim; i++) o[i] = 0.0f;
        for (uint32_t j = 0; j < used; j++) {
            const float w = s->weights[(size_t)t * used + j];
            const float* y = s->out + ((size_t)t * used + j) * dim;
            for (uint32_t i = 0; i < dim; i++) o[i] = o[i] + w * y[i];
        }
    }
}
