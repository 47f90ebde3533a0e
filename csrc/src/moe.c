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
 *
 * A block runs in six steps, each one thread-pool run whatever the number of experts
 * (docs/numerics.md#mixture-of-experts): route the tokens; quantise each token's input
 * once and copy it to its k slots, grouped by expert; the gate and up products of every
 * chosen expert (tasks: expert x row range); SiLU(gate) * up of every slot; the down
 * products (expert x row range); each token's weighted sum. A task never depends on the
 * split, so the bits do not depend on the thread count.
 */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "moe.h"
#include "model.h"
#include "platform.h"
#include "transformer.h"

/* Tokens the router takes side by side (lanes of its vector loop). */
#define ROUTE_LANES 16u

struct Qwen3MoeScratch {
    uint32_t block;    /* tokens per block, at most */
    float* probs;      /* (block, n_experts) each token's router probabilities */
    uint32_t* chosen;  /* (block, k) expert of each token's slot j */
    float* weights;    /* (block, k) */
    float* xt;         /* (block rounded up to ROUTE_LANES, dim) the router's transposed inputs */
    uint32_t* start;   /* (n_experts + 1) first grouped row of each expert */
    uint32_t* fill;    /* (n_experts) rows placed so far while grouping */
    uint32_t* active;  /* (n_experts) the experts some token chose, in index order */
    uint32_t* row_of;  /* (block * k) grouped row of slot token * k + j */
    float* xf;         /* (block * k, dim) grouped fp32 inputs (float experts only, else NULL) */
    float* hb;         /* (block * k, hidden) gate, then silu(gate) * up */
    float* hb2;        /* (block * k, hidden) up */
    float* eo;         /* (block * k, dim) each grouped row's down output */
    Qwen3Q8Batch xq;   /* (block * k, dim) grouped quantised inputs */
    Qwen3Q8Batch hq;   /* (block * k, hidden) quantised down inputs */
};

/* Router logits of one token: out[e] = router row e . h, each summed in index order. Eight
 * rows advance together, so their adds' latency overlaps instead of each sum waiting on its
 * previous add (one row at a time, the router was latency bound: ~4 cycles per
 * multiply-add); each row's sum is still the same sequence of roundings, so the bits are
 * the one-row loop's. */
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

/* Router logits of ROUTE_LANES tokens at once, the tokens in lanes: xt holds their inputs
 * transposed (value i of lane l at xt[i * ROUTE_LANES + l]), out[l * out_stride + e] gets
 * lane l's logit e. Each lane is the one-token sum (the same products and adds in index
 * order, no FMA under -ffp-contract=off), so the bits are router_logits'; the loops over
 * lanes are what the compiler vectorises, four rows sharing each load of the inputs. */
#define ROUTER_LANES_BODY                                                                                \
    {                                                                                                    \
        uint32_t e = 0;                                                                                  \
        for (; e + 4 <= n_experts; e += 4) {                                                             \
            const float* r = router + (size_t)e * dim;                                                   \
            float a0[ROUTE_LANES] = {0}, a1[ROUTE_LANES] = {0}, a2[ROUTE_LANES] = {0},                   \
                  a3[ROUTE_LANES] = {0};                                                                 \
            for (uint32_t i = 0; i < dim; i++) {                                                         \
                const float* x = xt + (size_t)i * ROUTE_LANES;                                           \
                const float w0 = r[i], w1 = r[dim + i], w2 = r[2 * (size_t)dim + i],                     \
                            w3 = r[3 * (size_t)dim + i];                                                 \
                for (uint32_t l = 0; l < ROUTE_LANES; l++) a0[l] = a0[l] + w0 * x[l];                    \
                for (uint32_t l = 0; l < ROUTE_LANES; l++) a1[l] = a1[l] + w1 * x[l];                    \
                for (uint32_t l = 0; l < ROUTE_LANES; l++) a2[l] = a2[l] + w2 * x[l];                    \
                for (uint32_t l = 0; l < ROUTE_LANES; l++) a3[l] = a3[l] + w3 * x[l];                    \
            }                                                                                            \
            for (uint32_t l = 0; l < ROUTE_LANES; l++) {                                                 \
                float* o = out + (size_t)l * out_stride + e;                                             \
                o[0] = a0[l];                                                                            \
                o[1] = a1[l];                                                                            \
                o[2] = a2[l];                                                                            \
                o[3] = a3[l];                                                                            \
            }                                                                                            \
        }                                                                                                \
        for (; e < n_experts; e++) {                                                                     \
            const float* r = router + (size_t)e * dim;                                                   \
            float a[ROUTE_LANES] = {0};                                                                  \
            for (uint32_t i = 0; i < dim; i++) {                                                         \
                const float* x = xt + (size_t)i * ROUTE_LANES;                                           \
                const float w = r[i];                                                                    \
                for (uint32_t l = 0; l < ROUTE_LANES; l++) a[l] = a[l] + w * x[l];                       \
            }                                                                                            \
            for (uint32_t l = 0; l < ROUTE_LANES; l++) out[(size_t)l * out_stride + e] = a[l];           \
        }                                                                                                \
    }

typedef void (*RouterLanesFn)(const float* router, const float* xt, uint32_t dim, uint32_t n_experts, float* out,
                              size_t out_stride);

static void router_lanes(const float* router, const float* xt, uint32_t dim, uint32_t n_experts, float* out,
                         size_t out_stride) ROUTER_LANES_BODY

#if defined(__x86_64__) || defined(_M_X64)
/* The same loops compiled for AVX2 (every x86 tier but scalar has it): eight lanes per
 * instruction instead of SSE2's four. */
__attribute__((target("avx2"))) static void router_lanes_avx2(const float* router, const float* xt, uint32_t dim,
                                                              uint32_t n_experts, float* out,
                                                              size_t out_stride) ROUTER_LANES_BODY
#endif

#undef ROUTER_LANES_BODY

/* Softmax over the logits in probs, then the top k and their weights (moe.h). */
static void route_select(uint32_t n_experts, uint32_t k, int norm, float* probs, uint32_t* chosen, float* weights) {
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

void qwen3_moe_route(const float* router, const float* h, uint32_t dim, uint32_t n_experts, uint32_t k, int norm,
                     float* probs, uint32_t* chosen, float* weights) {
    router_logits(router, h, dim, n_experts, probs);
    route_select(n_experts, k, norm, probs, chosen, weights);
}

void qwen3_moe_route_lanes(const float* router, const float* x, size_t x_stride, uint32_t n, uint32_t dim,
                           uint32_t n_experts, uint32_t k, int norm, int simd, float* xt, float* probs,
                           uint32_t* chosen, float* weights) {
    if (n < 4) { /* fewer tokens than make lanes worth their transpose */
        for (uint32_t t = 0; t < n; t++) {
            qwen3_moe_route(router, x + t * x_stride, dim, n_experts, k, norm, probs + (size_t)t * n_experts,
                            chosen + (size_t)t * k, weights + (size_t)t * k);
        }
        return;
    }
    RouterLanesFn lanes = router_lanes;
#if defined(__x86_64__) || defined(_M_X64)
    if (simd) lanes = router_lanes_avx2;
#else
    (void)simd;
#endif
    for (uint32_t t0 = 0; t0 < n; t0 += ROUTE_LANES) {
        const uint32_t nt = n - t0 < ROUTE_LANES ? n - t0 : ROUTE_LANES;
        for (uint32_t i = 0; i < dim; i++) {
            float* col = xt + (size_t)i * ROUTE_LANES;
            for (uint32_t l = 0; l < nt; l++) col[l] = x[(t0 + l) * x_stride + i];
            for (uint32_t l = nt; l < ROUTE_LANES; l++) col[l] = 0.0f; /* lanes past n: computed, dropped */
        }
        float* p = probs + (size_t)t0 * n_experts;
        _Alignas(64) float tail[ROUTE_LANES * 8];
        /* lanes past n have no rows in probs: a whole group writes there directly, a partial
         * one (rare: the block's last) a row at a time through the stack */
        if (nt == ROUTE_LANES) {
            lanes(router, xt, dim, n_experts, p, n_experts);
        } else {
            for (uint32_t e0 = 0; e0 < n_experts; e0 += 8) {
                const uint32_t ne = n_experts - e0 < 8 ? n_experts - e0 : 8;
                lanes(router + (size_t)e0 * dim, xt, dim, ne, tail, 8);
                for (uint32_t l = 0; l < nt; l++) memcpy(p + (size_t)l * n_experts + e0, tail + l * 8, ne * sizeof(float));
            }
        }
        for (uint32_t l = 0; l < nt; l++) {
            const size_t t = t0 + l;
            route_select(n_experts, k, norm, probs + t * n_experts, chosen + t * k, weights + t * k);
        }
    }
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

/* 1 when some sparse block's experts are stored as floats (they read fp32 inputs). */
static int float_experts(const Qwen3Model* m) {
    for (uint32_t l = 0; l < m->header.n_layers; l++) {
        const Qwen3MoeLayer* layer = m->weights.layers[l].moe;
        if (!layer) continue;
        for (uint32_t e = 0; e < m->moe.n_experts; e++) {
            const Qwen3Matrix* w[3] = {&layer->gate[e], &layer->up[e], &layer->down[e]};
            for (int i = 0; i < 3; i++) {
                if (w[i]->type != QWEN3_WEIGHT_Q8 && w[i]->type != QWEN3_WEIGHT_BLOCKS) return 1;
            }
        }
    }
    return 0;
}

int32_t qwen3_moe_scratch_new(const Qwen3Model* m, uint32_t block, Qwen3MoeScratch** out) {
    *out = NULL;
    if (m->moe.n_experts == 0) return QWEN3_OK;
    Qwen3MoeScratch* s = (Qwen3MoeScratch*)calloc(1, sizeof *s);
    if (!s) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for the experts' scratch");
    const uint64_t dim = m->header.dim, hidden = m->moe.hidden_dim, k = m->moe.n_used, B = block;
    const uint64_t ne = m->moe.n_experts, rows = B * k;
    const uint32_t gs = m->header.group_size;
    int failed = 0;
    s->block = block;
    s->probs = (float*)alloc_bytes(B * ne * sizeof(float), &failed);
    s->chosen = (uint32_t*)alloc_bytes(rows * sizeof(uint32_t), &failed);
    s->weights = (float*)alloc_bytes(rows * sizeof(float), &failed);
    s->xt = (float*)alloc_bytes((B + ROUTE_LANES - 1) / ROUTE_LANES * ROUTE_LANES * dim * sizeof(float), &failed);
    s->start = (uint32_t*)alloc_bytes((ne + 1) * sizeof(uint32_t), &failed);
    s->fill = (uint32_t*)alloc_bytes(ne * sizeof(uint32_t), &failed);
    s->active = (uint32_t*)alloc_bytes(ne * sizeof(uint32_t), &failed);
    s->row_of = (uint32_t*)alloc_bytes(rows * sizeof(uint32_t), &failed);
    if (float_experts(m)) s->xf = (float*)alloc_bytes(rows * dim * sizeof(float), &failed);
    s->hb = (float*)alloc_bytes(rows * hidden * sizeof(float), &failed);
    s->hb2 = (float*)alloc_bytes(rows * hidden * sizeof(float), &failed);
    s->eo = (float*)alloc_bytes(rows * dim * sizeof(float), &failed);
    batch_alloc(&s->xq, (uint32_t)dim, (uint32_t)rows, gs, &failed);
    batch_alloc(&s->hq, (uint32_t)hidden, (uint32_t)rows, gs, &failed);
    if (failed) {
        qwen3_moe_scratch_free(s);
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "out of memory for the experts' scratch (%u tokens)", block);
    }
    *out = s;
    return QWEN3_OK;
}

void qwen3_moe_scratch_free(Qwen3MoeScratch* s) {
    if (!s) return;
    void* bufs[] = {s->probs, s->chosen, s->weights, s->xt, s->start, s->fill, s->active, s->row_of, s->xf,
                    s->hb,    s->hb2,    s->eo,      s->xq.q, s->xq.s, s->xq.sums, s->hq.q, s->hq.s, s->hq.sums};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) qwen3_aligned_free(bufs[i]);
    free(s);
}

/* ====================================================================================
 * The block's steps, each a set of pool tasks
 * ================================================================================== */

/* Below this many multiply-adds a step costs less than waking the pool's workers (as
 * transformer.c's matmuls). */
#define MOE_PARALLEL_MIN_WORK (1u << 16)

/* Tokens (or grouped rows) per task of the elementwise steps. */
#define MOE_TASK_ROWS 16u

typedef struct {
    Qwen3Context* c;
    const Qwen3KernelTable* k;
    const Qwen3MoeLayer* layer;
    uint32_t n;            /* tokens */
    uint32_t n_active;     /* experts chosen by some token */
    uint32_t rows_per_task; /* of one matrix, in the matmul steps: a multiple of 32 */
    uint32_t chunks;       /* tasks per matrix: rows / rows_per_task rounded up */
    int simd;              /* the router's AVX2 loops */
} MoeJob;

static void run_tasks(Qwen3Model* m, Qwen3TaskFn fn, MoeJob* job, uint32_t n_tasks, uint64_t work) {
    if (n_tasks > 1 && qwen3_pool_threads(m->pool) > 1 && work >= MOE_PARALLEL_MIN_WORK) {
        qwen3_pool_run(m->pool, fn, job, n_tasks);
    } else {
        for (uint32_t i = 0; i < n_tasks; i++) fn(job, i, n_tasks);
    }
}

/* Routing, ROUTE_LANES tokens per task (each token's route is computed alone, so the
 * split changes no bits). */
static void route_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const MoeJob* job = (const MoeJob*)arg;
    const Qwen3Model* m = job->c->model;
    Qwen3MoeScratch* s = job->c->moe;
    const uint32_t dim = m->header.dim, ne = m->moe.n_experts, used = m->moe.n_used;
    const uint32_t t0 = task * ROUTE_LANES, nt = job->n - t0 < ROUTE_LANES ? job->n - t0 : ROUTE_LANES;
    qwen3_moe_route_lanes(job->layer->router, job->c->xb + (size_t)t0 * dim, dim, nt, dim, ne, used,
                          (int)m->moe.norm_weights, job->simd, s->xt + (size_t)t0 * dim,
                          s->probs + (size_t)t0 * ne, s->chosen + (size_t)t0 * used, s->weights + (size_t)t0 * used);
}

/* Each token's input quantised once into its first slot's grouped row and copied to its
 * other slots' rows (fp32 too for float experts). */
static void gather_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const MoeJob* job = (const MoeJob*)arg;
    const Qwen3Model* m = job->c->model;
    Qwen3MoeScratch* s = job->c->moe;
    const uint32_t dim = m->header.dim, used = m->moe.n_used, gs = m->header.group_size;
    const uint32_t ng = gs ? dim / gs : 0;
    const uint32_t t1 = (task + 1) * MOE_TASK_ROWS < job->n ? (task + 1) * MOE_TASK_ROWS : job->n;
    for (uint32_t t = task * MOE_TASK_ROWS; t < t1; t++) {
        const float* x = job->c->xb + (size_t)t * dim;
        const uint32_t* rows = s->row_of + (size_t)t * used;
        if (gs) {
            job->k->quantize_row(x, &s->xq, rows[0]);
            for (uint32_t j = 1; j < used; j++) {
                memcpy(s->xq.q + (size_t)rows[j] * dim, s->xq.q + (size_t)rows[0] * dim, dim);
                memcpy(s->xq.s + (size_t)rows[j] * ng, s->xq.s + (size_t)rows[0] * ng, ng * sizeof(float));
                memcpy(s->xq.sums + (size_t)rows[j] * ng, s->xq.sums + (size_t)rows[0] * ng, ng * sizeof(int32_t));
            }
        }
        if (s->xf) {
            for (uint32_t j = 0; j < used; j++) memcpy(s->xf + (size_t)rows[j] * dim, x, (size_t)dim * sizeof(float));
        }
    }
}

/* Rows [r0, r1) of w for the `count` grouped rows from `first`: out row i at out + i *
 * stride, through qwen3_matmul_rows as a dense block's matmul (transformer.c), so the same
 * bits. */
static void expert_matmul(const Qwen3KernelTable* k, float* out, size_t stride, const Qwen3Matrix* w,
                          const Qwen3Q8Batch* xq, const float* xf, uint32_t first, uint32_t count, uint32_t r0,
                          uint32_t r1) {
    Qwen3Q8Batch x = {.n = xq->n, .n_tokens = count, .group_size = xq->group_size};
    if (xq->group_size) { /* a float model has no quantised inputs */
        const uint32_t ng = xq->n / xq->group_size;
        x.q = xq->q + (size_t)first * xq->n;
        x.s = xq->s + (size_t)first * ng;
        x.sums = xq->sums + (size_t)first * ng;
    }
    qwen3_matmul_rows(k, out, stride, w, &x, xf ? xf + (size_t)first * w->cols : NULL, w->cols, r0, r1);
}

/* Gate and up: task = (chosen expert, gate or up, row range). */
static void gate_up_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const MoeJob* job = (const MoeJob*)arg;
    const Qwen3Model* m = job->c->model;
    Qwen3MoeScratch* s = job->c->moe;
    const uint32_t hidden = m->moe.hidden_dim;
    const uint32_t e = s->active[task / (2 * job->chunks)], part = task / job->chunks % 2, chunk = task % job->chunks;
    const uint32_t r0 = chunk * job->rows_per_task;
    const uint32_t r1 = r0 + job->rows_per_task < hidden ? r0 + job->rows_per_task : hidden;
    const uint32_t first = s->start[e], count = s->start[e + 1] - first;
    float* out = (part ? s->hb2 : s->hb) + (size_t)first * hidden;
    const Qwen3Matrix* w = part ? &job->layer->up[e] : &job->layer->gate[e];
    expert_matmul(job->k, out, hidden, w, &s->xq, s->xf, first, count, r0, r1);
}

/* SiLU(gate) * up of each grouped row, quantised for the down product. */
static void silu_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const MoeJob* job = (const MoeJob*)arg;
    const Qwen3Model* m = job->c->model;
    Qwen3MoeScratch* s = job->c->moe;
    const uint32_t hidden = m->moe.hidden_dim, rows = job->n * m->moe.n_used;
    const uint32_t i1 = (task + 1) * MOE_TASK_ROWS < rows ? (task + 1) * MOE_TASK_ROWS : rows;
    for (uint32_t i = task * MOE_TASK_ROWS; i < i1; i++) {
        float* hb = s->hb + (size_t)i * hidden;
        job->k->silu_mul(hb, s->hb2 + (size_t)i * hidden, hidden);
        if (m->header.group_size) job->k->quantize_row(hb, &s->hq, i);
    }
}

/* Down: task = (chosen expert, row range). */
static void down_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const MoeJob* job = (const MoeJob*)arg;
    const Qwen3Model* m = job->c->model;
    Qwen3MoeScratch* s = job->c->moe;
    const uint32_t dim = m->header.dim;
    const uint32_t e = s->active[task / job->chunks], chunk = task % job->chunks;
    const uint32_t r0 = chunk * job->rows_per_task;
    const uint32_t r1 = r0 + job->rows_per_task < dim ? r0 + job->rows_per_task : dim;
    const uint32_t first = s->start[e], count = s->start[e + 1] - first;
    expert_matmul(job->k, s->eo + (size_t)first * dim, dim, &job->layer->down[e], &s->hq, s->hb, first, count, r0,
                  r1);
}

/* Each token's weighted sum of its experts' outputs, in routing order. */
static void combine_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    const MoeJob* job = (const MoeJob*)arg;
    const Qwen3Model* m = job->c->model;
    Qwen3MoeScratch* s = job->c->moe;
    const uint32_t dim = m->header.dim, used = m->moe.n_used;
    const uint32_t t1 = (task + 1) * MOE_TASK_ROWS < job->n ? (task + 1) * MOE_TASK_ROWS : job->n;
    for (uint32_t t = task * MOE_TASK_ROWS; t < t1; t++) {
        float* o = job->c->xb2 + (size_t)t * dim;
        for (uint32_t i = 0; i < dim; i++) o[i] = 0.0f;
        for (uint32_t j = 0; j < used; j++) {
            const float w = s->weights[(size_t)t * used + j];
            const float* y = s->eo + (size_t)s->row_of[(size_t)t * used + j] * dim;
            for (uint32_t i = 0; i < dim; i++) o[i] = o[i] + w * y[i];
        }
    }
}

/* Rows per matmul task: a multiple of 32 (whole SIMD row tiles), about four tasks per
 * thread over all the chosen experts, and no more than one matrix's rows. */
static void split_rows(MoeJob* job, uint32_t threads, uint32_t rows, uint32_t matrices) {
    uint64_t per = rows;
    if (threads > 1) {
        const uint64_t total = (uint64_t)job->n_active * matrices * rows;
        per = total / ((uint64_t)threads * 4);
        per = (per + 31) / 32 * 32;
        if (per < 32) per = 32;
        if (per > rows) per = rows;
    }
    job->rows_per_task = (uint32_t)per;
    job->chunks = (uint32_t)((rows + per - 1) / per);
}

void qwen3_moe_forward(Qwen3Context* c, const Qwen3KernelTable* k, const Qwen3MoeLayer* layer, uint32_t n) {
    Qwen3Model* m = c->model;
    Qwen3MoeScratch* s = c->moe;
    const uint32_t dim = m->header.dim, hidden = m->moe.hidden_dim, ne = m->moe.n_experts, used = m->moe.n_used;
    const uint32_t threads = qwen3_pool_threads(m->pool);
    MoeJob job = {.c = c, .k = k, .layer = layer, .n = n};
#if defined(__x86_64__) || defined(_M_X64)
    job.simd = strcmp(k->name, "scalar") != 0;
#endif
    const uint32_t rows = n * used;
    run_tasks(m, route_task, &job, (n + ROUTE_LANES - 1) / ROUTE_LANES, (uint64_t)n * ne * dim);

    /* the slots grouped by expert, each expert's in token order */
    for (uint32_t e = 0; e <= ne; e++) s->start[e] = 0;
    for (uint32_t i = 0; i < rows; i++) s->start[s->chosen[i] + 1]++;
    job.n_active = 0;
    for (uint32_t e = 0; e < ne; e++) {
        if (s->start[e + 1]) s->active[job.n_active++] = e; /* an expert no token chose is never read */
        s->start[e + 1] += s->start[e];
        s->fill[e] = s->start[e];
    }
    for (uint32_t i = 0; i < rows; i++) s->row_of[i] = s->fill[s->chosen[i]]++;
    s->xq.n_tokens = rows;
    s->hq.n_tokens = rows;
    const uint32_t token_tasks = (n + MOE_TASK_ROWS - 1) / MOE_TASK_ROWS;
    run_tasks(m, gather_task, &job, token_tasks, (uint64_t)rows * dim);

    split_rows(&job, threads, hidden, 2);
    run_tasks(m, gate_up_task, &job, job.n_active * 2 * job.chunks, (uint64_t)rows * 2 * hidden * dim);
    run_tasks(m, silu_task, &job, (rows + MOE_TASK_ROWS - 1) / MOE_TASK_ROWS, (uint64_t)rows * hidden * 8);
    split_rows(&job, threads, dim, 1);
    run_tasks(m, down_task, &job, job.n_active * job.chunks, (uint64_t)rows * hidden * dim);
    run_tasks(m, combine_task, &job, token_tasks, (uint64_t)rows * dim);
}
