/*
 * sampler.c - next-token selection. The TypeScript sampler (src/text/sampler.ts) follows these
 * steps exactly, in fp32, so one seed gives the same tokens in both engines.
 *
 * RNG (xorshift64*, qwen3.c / llama2.c): state is a u64, never 0.
 *   s ^= s >> 12; s ^= s << 25; s ^= s >> 27; u32 = (s * 0x2545F4914F6CDD1D) >> 32
 *   coin = (float)(u32 >> 8) / 16777216.0f                      (in [0, 1), 24 bits)
 *   seed: state = seed; seed 0 takes a clock-derived value instead.
 *
 * sample(logits[V]), with top_k on when 0 < top_k < V, top_p on when 0 < top_p < 1,
 * min_p on when min_p > 0:
 *   1. temperature == 0: return argmax(logits) (largest raw logit, lowest id on ties, NaN
 *      never wins). Nothing else applies and no coin is drawn.
 *   2. z[i] = logits[i]; with count[i] = times token i was returned (since the sampler was
 *      configured): if presence_penalty != 0 and count[i] > 0, z[i] = z[i] - presence_penalty;
 *      then if frequency_penalty != 0 and count[i] > 0,
 *      z[i] = z[i] - (float)count[i] * frequency_penalty (OpenAI's penalties). Then z[i] / T.
 *   3. softmax over all V: m = max z; e[i] = exp(z[i] - m) (qwen3_sampler_exp below, not the C
 *      library's expf); sum += e[i] in index order (one fp32 accumulator); p[i] = e[i] / sum;
 *      pmax = max p[i].
 *   4. coin = one draw, always (whatever the filters do).
 *   5. no filter on: walk ids in index order, cdf += p[i]; return the first i with
 *      coin < cdf; if none (rounding), return V - 1.
 *   6. floor = min_p on ? min_p * pmax : 0.
 *      top_k on:  candidates = the top_k ids by (p descending, lower id first on ties),
 *                 then those with p >= floor.
 *      otherwise: nucleus = top_p on ? (1.0f - top_p) / (float)(V - 1) : 0;
 *                 cut = min(max(floor, nucleus), pmax) (the most likely id always stays);
 *                 candidates = ids with p >= cut.
 *   7. order candidates by p descending, lower id first on ties (a total order: any
 *      correct sort agrees; here the k best kept in one pass for a top-k up to 1024,
 *      else a heap popped only as far as needed, or past 2048 candidates all of them
 *      radix-sorted, so the 151936 probabilities never go through a comparison sort).
 *   8. top_p on: total = 0; for each candidate in order: total += p; once total > top_p,
 *      keep the candidates up to and including this one and stop (all are kept if it never
 *      happens). Otherwise keep all, total = their sum in that order.
 *   9. r = coin * total; cdf = 0; for each kept candidate in order: cdf += p; return it
 *      when r < cdf. If none was returned (rounding), return the last kept one.
 *   The returned token is counted for the penalties (in greedy mode too).
 *   (Only NaN logits leave no candidate; then argmax(logits) is returned.)
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernels.h"
#include "platform.h"

uint32_t qwen3_rng_u32(uint64_t* state) {
    uint64_t s = *state;
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    *state = s;
    return (uint32_t)((s * 0x2545F4914F6CDD1Dull) >> 32);
}

float qwen3_rng_f32(uint64_t* state) {
    return (float)(qwen3_rng_u32(state) >> 8) / 16777216.0f;
}

/* From i, in steps of 16 while 16 are left: the first run x[i .. i + 16) holding a value
 * above top (NaN never is), or where fewer than 16 are left. One comparison per run that
 * the compiler vectorises, for passes where few values beat the best so far. */
static uint32_t skip_runs_not_above(const float* x, uint32_t i, uint32_t n, float top) {
    for (; i + 16 <= n; i += 16) {
        int any = 0;
        for (uint32_t l = 0; l < 16; l++) any |= x[i + l] > top;
        if (any) break;
    }
    return i;
}

int32_t qwen3_argmax(const float* x, uint32_t n) {
    uint32_t i = 0;
    while (i < n && x[i] != x[i]) i++; /* NaN never wins */
    if (i == n) return 0;
    uint32_t best = i++;
    /* A later id wins only with a larger value (NaN compares false), and few do. */
    while (i < n) {
        i = skip_runs_not_above(x, i, n, x[best]);
        const uint32_t end = i + 16 < n ? i + 16 : n;
        for (; i < end; i++) {
            if (x[i] > x[best]) best = i;
        }
    }
    return (int32_t)best;
}

int32_t qwen3_sampler_init(Qwen3Sampler* s, uint32_t vocab_size) {
    memset(s, 0, sizeof *s);
    s->vocab_size = vocab_size;
    s->probs = (float*)malloc((size_t)vocab_size * sizeof(float));
    s->candidates = (uint32_t*)malloc((size_t)vocab_size * sizeof(uint32_t));
    s->scratch = (uint32_t*)malloc((size_t)vocab_size * sizeof(uint32_t));
    s->counts = (uint32_t*)calloc(vocab_size, sizeof(uint32_t));
    if (!s->probs || !s->candidates || !s->scratch || !s->counts) {
        qwen3_sampler_deinit(s);
        return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY,
                          "out of memory allocating %zu bytes of sampler buffers",
                          (size_t)vocab_size * 16);
    }
    s->rng = 1;
    return QWEN3_OK;
}

void qwen3_sampler_deinit(Qwen3Sampler* s) {
    free(s->probs);
    free(s->candidates);
    free(s->scratch);
    free(s->counts);
    memset(s, 0, sizeof *s);
}

int32_t qwen3_sampler_configure(Qwen3Sampler* s, const Qwen3SamplerConfig* config) {
    const Qwen3SamplerConfig* c = config;
    if (!(c->temperature >= 0.0f) || isinf(c->temperature)) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "sampler temperature %g must be a finite number >= 0",
                          (double)c->temperature);
    }
    if (!(c->top_p >= 0.0f) || isinf(c->top_p)) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "sampler top_p %g must be a finite number >= 0 (0 or >= 1 disables)",
                          (double)c->top_p);
    }
    if (!(c->min_p >= 0.0f && c->min_p <= 1.0f)) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "sampler min_p %g must be in [0, 1] (0 disables)", (double)c->min_p);
    }
    if (!isfinite(c->presence_penalty)) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "sampler presence_penalty %g must be finite",
                          (double)c->presence_penalty);
    }
    if (!isfinite(c->frequency_penalty)) {
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT,
                          "sampler frequency_penalty %g must be finite",
                          (double)c->frequency_penalty);
    }
    s->config = *c;
    s->rng = c->seed != 0 ? c->seed : qwen3_time_seed();
    memset(s->counts, 0, (size_t)s->vocab_size * sizeof(uint32_t));
    return QWEN3_OK;
}

/* The candidate order of step 7: higher probability first, then lower id. */
static int ranks_before(const float* p, uint32_t a, uint32_t b) {
    return p[a] > p[b] || (p[a] == p[b] && a < b);
}

/* Max-heap by ranks_before over heap[0 .. n). */
static void sift_down(uint32_t* heap, uint32_t n, uint32_t i, const float* p) {
    for (;;) {
        uint32_t best = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_before(p, heap[l], heap[best])) best = l;
        if (r < n && ranks_before(p, heap[r], heap[best])) best = r;
        if (best == i) return;
        uint32_t t = heap[i];
        heap[i] = heap[best];
        heap[best] = t;
        i = best;
    }
}

/* Heap by ranks_before with the WORST id on top (a parent never ranks before a child). */
static void sift_down_worst(uint32_t* heap, uint32_t n, uint32_t i, const float* p) {
    for (;;) {
        uint32_t worst = i, l = 2 * i + 1, r = l + 1;
        if (l < n && ranks_before(p, heap[worst], heap[l])) worst = l;
        if (r < n && ranks_before(p, heap[worst], heap[r])) worst = r;
        if (worst == i) return;
        uint32_t t = heap[i];
        heap[i] = heap[worst];
        heap[worst] = t;
        i = worst;
    }
}

/* Above this top-k, the heap of all candidates popped only as far as top-p needs is cheaper
 * than keeping the k best in one pass. */
#define BEST_K_MAX 1024u

/* Step 7 for a small top-k: the ids of the k best p >= cut into out[0 .. returned),
 * best first - the ids and order keep_most_likely's pops give. One pass over the
 * vocabulary keeps them in a heap of size k with the worst on top: a later id beats it only
 * with a higher p, since ids arrive in increasing order and a tie goes to the lower id. The
 * 151936-entry heap of every id costs Qwen3's recommended top-k 20 about 1.7 ms a token. */
static uint32_t best_k(uint32_t* out, const float* p, uint32_t V, float cut, uint32_t k) {
    uint32_t size = 0, i = 0;
    for (; i < V && size < k; i++) {
        if (!(p[i] >= cut)) continue;
        uint32_t j = size++;
        out[j] = i;
        while (j > 0) {
            const uint32_t parent = (j - 1) / 2;
            if (!ranks_before(p, out[parent], out[j])) break;
            const uint32_t t = out[j];
            out[j] = out[parent];
            out[parent] = t;
            j = parent;
        }
    }
    /* The heap is full: an id gets in only with a p above the worst kept (which is >= cut,
     * so the cut needs no test), and most ids do not. */
    while (i < V) {
        i = skip_runs_not_above(p, i, V, p[out[0]]);
        const uint32_t end = i + 16 < V ? i + 16 : V;
        for (; i < end; i++) {
            if (p[i] > p[out[0]]) {
                out[0] = i;
                sift_down_worst(out, size, 0, p);
            }
        }
    }
    /* heap sort: the worst goes to the back, so the array ends best first */
    for (uint32_t n = size; n > 1; n--) {
        const uint32_t t = out[0];
        out[0] = out[n - 1];
        out[n - 1] = t;
        sift_down_worst(out, n - 1, 0, p);
    }
    return size;
}

/* Candidates from which ordering them all by a radix sort beats popping a heap: a flat
 * distribution's nucleus is most of the vocabulary (a random model's top-p 0.9 popped about
 * 136000 of 151936 ids, 23 ms a token). */
#define RADIX_MIN 2048u

/* Orders cand[0 .. n) (ids ascending) best first, the order keep_most_likely's pops give:
 * p descending, the lower id first on equal p. A stable LSD radix sort in three 11-bit
 * digits of ~bits(p) (non-negative floats order as their bit patterns), tmp n more ids. */
static void sort_by_p(uint32_t* cand, uint32_t* tmp, uint32_t n, const float* p) {
    uint32_t start[2048];
    uint32_t *src = cand, *dst = tmp;
    for (uint32_t shift = 0; shift < 32; shift += 11) {
        memset(start, 0, sizeof start);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &p[src[i]], sizeof bits);
            start[(~bits >> shift) & 2047u]++;
        }
        uint32_t at = 0;
        for (uint32_t d = 0; d < 2048; d++) {
            const uint32_t c = start[d];
            start[d] = at;
            at += c;
        }
        for (uint32_t i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &p[src[i]], sizeof bits);
            dst[start[(~bits >> shift) & 2047u]++] = src[i];
        }
        uint32_t* t = src;
        src = dst;
        dst = t;
    }
    if (src != cand) memcpy(cand, src, (size_t)n * sizeof *cand);
}

static int32_t record(Qwen3Sampler* s, int32_t token) {
    if (s->counts[token] < UINT32_MAX) s->counts[token]++;
    return token;
}

/* 2^(j/32) for j = 0 .. 31 as doubles (the TypeScript sampler's EXP_TABLE, the same values). */
const double qwen3_sampler_exp2_j32[32] = {
    0x1.0000000000000p+0, 0x1.059b0d3158574p+0, 0x1.0b5586cf9890fp+0, 0x1.11301d0125b51p+0,
    0x1.172b83c7d517bp+0, 0x1.1d4873168b9aap+0, 0x1.2387a6e756238p+0, 0x1.29e9df51fdee1p+0,
    0x1.306fe0a31b715p+0, 0x1.371a7373aa9cbp+0, 0x1.3dea64c123422p+0, 0x1.44e086061892dp+0,
    0x1.4bfdad5362a27p+0, 0x1.5342b569d4f82p+0, 0x1.5ab07dd485429p+0, 0x1.6247eb03a5585p+0,
    0x1.6a09e667f3bcdp+0, 0x1.71f75e8ec5f74p+0, 0x1.7a11473eb0187p+0, 0x1.82589994cce13p+0,
    0x1.8ace5422aa0dbp+0, 0x1.93737b0cdc5e5p+0, 0x1.9c49182a3f090p+0, 0x1.a5503b23e255dp+0,
    0x1.ae89f995ad3adp+0, 0x1.b7f76f2fb5e47p+0, 0x1.c199bdd85529cp+0, 0x1.cb720dcef9069p+0,
    0x1.d5818dcfba487p+0, 0x1.dfc97337b9b5fp+0, 0x1.ea4afa2a490dap+0, 0x1.f50765b6e4540p+0,
};

/*
 * Step 3's exp (docs/sampling.md#the-samplers-exp): for x in (-104, 0], x = (32 k + j) ln2/32 + r
 * with |r| <= ln2/64, e^x ~ 2^k 2^(j/32) (1 + r (1 + r (1/2 + r (1/6 + r (1/24 + r / 120))))),
 * every operation a double in this order (the build has -ffp-contract=off), rounded to float
 * once; 0 from -104 down (e^-104 < 2^-150); NaN stays NaN. The TypeScript sampler runs the
 * same operations (samplerExp, src/text/sampler.ts), so both samplers get these bits on every
 * platform, where expf's last bit was each C library's own. (x = z - max z is never above 0;
 * such an x would take expf.) Relative error before the rounding under 5e-15.
 */
float qwen3_sampler_exp(float xf) {
    const double x = xf;
    if (x <= -104.0) return 0.0f;
    if (!(x <= 0.0)) return expf(xf); /* NaN, and x > 0, which step 3 never gives */
    const double magic = QWEN3_SAMPLER_EXP_MAGIC;
    const double m = x * QWEN3_SAMPLER_EXP_SCALE + magic - magic;
    const double r = x - m * QWEN3_SAMPLER_EXP_LN2_32_HI - m * QWEN3_SAMPLER_EXP_LN2_32_LO;
    const double poly = 1.0 + r * (1.0 + r * (1.0 / 2.0 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0)))));
    const int32_t mi = (int32_t)m; /* -4800 .. 0 */
    const int32_t j = mi & 31, k = (mi - j) / 32; /* mi = 32 k + j, 0 <= j < 32 */
    const uint64_t pow2_bits = (uint64_t)(1023 + k) << 52; /* 2^k, k >= -150: a normal double */
    double pow2;
    memcpy(&pow2, &pow2_bits, sizeof pow2);
    return (float)(pow2 * qwen3_sampler_exp2_j32[j] * poly); /* (2^k * 2^(j/32), exact) * poly, rounded twice */
}

float qwen3_sampler_softmax_ref(float* p, const float* z, uint32_t n, float t) {
    for (uint32_t i = 0; i < n; i++) p[i] = z[i] / t;
    const float m = p[qwen3_argmax(p, n)];
    float sum = 0.0f;
    for (uint32_t i = 0; i < n; i++) {
        p[i] = qwen3_sampler_exp(p[i] - m);
        sum += p[i];
    }
    float pmax = 0.0f;
    for (uint32_t i = 0; i < n; i++) {
        p[i] = p[i] / sum;
        if (p[i] > pmax) pmax = p[i];
    }
    return pmax;
}

/* Steps 2 and 3: writes softmax((logits - penalties) / T) to s->probs; returns its max. The
 * penalties touch only tokens already sampled; the rest is the active kernel tier's
 * sampler_softmax (the same bits in every tier). */
static float penalised_softmax(Qwen3Sampler* s, const float* logits) {
    const Qwen3SamplerConfig* c = &s->config;
    const uint32_t V = s->vocab_size;
    const float* z = logits;
    if (c->presence_penalty != 0.0f || c->frequency_penalty != 0.0f) {
        for (uint32_t i = 0; i < V; i++) {
            float zi = logits[i];
            const uint32_t n = s->counts[i];
            if (n > 0) {
                if (c->presence_penalty != 0.0f) zi = zi - c->presence_penalty;
                if (c->frequency_penalty != 0.0f) zi = zi - (float)n * c->frequency_penalty;
            }
            s->probs[i] = zi;
        }
        z = s->probs;
    }
    return qwen3_kernels_active()->sampler_softmax(s->probs, z, V, c->temperature);
}

/* Steps 7 and 8: orders the most likely of cand[0..n) into cand[first..n), returns first. */
static uint32_t keep_most_likely(uint32_t* cand, uint32_t n, uint32_t limit, int top_p_on, float top_p,
                                 const float* p, float* total_out) {
    /* Popping a max-heap moves the best remaining id to the end of the shrinking heap, so
     * popped ids collect at the back in reverse order. */
    for (uint32_t i = n / 2; i-- > 0;) sift_down(cand, n, i, p);
    uint32_t heap_n = n, popped = 0;
    float total = 0.0f;
    while (popped < limit) {
        uint32_t top = cand[0];
        heap_n--;
        cand[0] = cand[heap_n];
        cand[heap_n] = top;
        sift_down(cand, heap_n, 0, p);
        popped++;
        total += p[top];
        if (top_p_on && total > top_p) break;
    }
    const uint32_t first = n - popped;
    for (uint32_t a = first, b = n - 1; a < b; a++, b--) {
        uint32_t t = cand[a];
        cand[a] = cand[b];
        cand[b] = t;
    }
    *total_out = total;
    return first;
}

/* Step 8 over candidates already best first: adds their p into *total until the sum passes
 * top_p (that candidate is kept) or limit are taken; returns how many are kept. */
static uint32_t take_nucleus(const uint32_t* cand, uint32_t limit, int top_p_on, float top_p, const float* p,
                             float* total) {
    uint32_t end = 0;
    while (end < limit) {
        *total += p[cand[end++]];
        if (top_p_on && *total > top_p) break;
    }
    return end;
}

int32_t qwen3_sampler_pick(Qwen3Sampler* s, const float* logits) {
    const Qwen3SamplerConfig* c = &s->config;
    const uint32_t V = s->vocab_size;
    if (c->temperature == 0.0f) return qwen3_argmax(logits, V);

    const float* p = s->probs;
    const float pmax = penalised_softmax(s, logits);

    /* steps 4 and 5 */
    const float coin = qwen3_rng_f32(&s->rng);
    const int top_k_on = c->top_k > 0 && c->top_k < V;
    const int top_p_on = c->top_p > 0.0f && c->top_p < 1.0f;
    const int min_p_on = c->min_p > 0.0f;
    if (!top_k_on && !top_p_on && !min_p_on) {
        float cdf = 0.0f;
        for (uint32_t i = 0; i < V; i++) {
            cdf += p[i];
            if (coin < cdf) return (int32_t)i;
        }
        return (int32_t)(V - 1);
    }

    /* step 6, the threshold part; top-k is taken in step 7 */
    const float floor = min_p_on ? c->min_p * pmax : 0.0f;
    float cut = floor;
    if (!top_k_on) {
        float nucleus = top_p_on && V > 1 ? (1.0f - c->top_p) / (float)(V - 1) : 0.0f;
        if (nucleus > cut) cut = nucleus;
        if (cut > pmax) cut = pmax;
    }
    uint32_t* cand = s->candidates;
    uint32_t first, end; /* the kept candidates: cand[first .. end), best first */
    float total = 0.0f;
    if (top_k_on && c->top_k <= BEST_K_MAX) {
        const uint32_t n = best_k(cand, p, V, cut, (uint32_t)c->top_k);
        if (n == 0) return qwen3_argmax(logits, V);
        first = 0;
        end = take_nucleus(cand, n, top_p_on, c->top_p, p, &total);
    } else {
        uint32_t n = 0;
        for (uint32_t i = 0; i < V; i++) {
            if (p[i] >= cut) cand[n++] = i;
        }
        if (n == 0) return qwen3_argmax(logits, V);
        /* With top-k, ids under the min-p floor were already dropped, which keeps the same
         * set as "top k, then the floor" because the floor only removes the least likely. */
        const uint32_t limit = top_k_on && c->top_k < n ? c->top_k : n;
        if (n >= RADIX_MIN) {
            sort_by_p(cand, s->scratch, n, p);
            first = 0;
            end = take_nucleus(cand, limit, top_p_on, c->top_p, p, &total);
        } else {
            first = keep_most_likely(cand, n, limit, top_p_on, c->top_p, p, &total);
            end = n;
        }
    }

    /* step 9 */
    const float r = coin * total;
    float cdf = 0.0f;
    for (uint32_t i = first; i < end; i++) {
        cdf += p[cand[i]];
        if (r < cdf) return (int32_t)cand[i];
    }
    return (int32_t)cand[end - 1];
}

void qwen3_sampler_record(Qwen3Sampler* s, int32_t token) { (void)record(s, token); }

int32_t qwen3_sampler_sample(Qwen3Sampler* s, const float* logits) {
    return record(s, qwen3_sampler_pick(s, logits));
}
