/* test_moe.c - the router of the sparse blocks (moe.c) against the formula written out
 * one step at a time (docs/numerics.md#mixture-of-experts): logits summed one row at a
 * time in index order, softmax, top-k with ties to the lower index, and the weights with
 * and without renormalisation, bit for bit, for expert counts that are and are not a
 * multiple of the router's eight-row step. The experts themselves are checked end to end
 * against transformers in tests/moe_test.ts. A prefill block's routing (many tokens at once, in
 * vector lanes) is checked against the same formula per token. */
#include <string.h>

#include "kernels.h"
#include "moe.h"
#include "test_util.h"

static uint32_t rng_state = 12345u;

static float rnd(void) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

/* The routing of moe.h's comment, one row at a time. */
static void route_naive(const float* router, const float* h, uint32_t dim, uint32_t ne, uint32_t k, int norm,
                        float* probs, uint32_t* chosen, float* weights) {
    for (uint32_t e = 0; e < ne; e++) {
        float acc = 0.0f;
        for (uint32_t i = 0; i < dim; i++) acc = acc + router[(size_t)e * dim + i] * h[i];
        probs[e] = acc;
    }
    qwen3_softmax_ref(probs, ne);
    float total = 0.0f;
    for (uint32_t j = 0; j < k; j++) {
        uint32_t best = ne;
        for (uint32_t e = 0; e < ne; e++) {
            int taken = 0;
            for (uint32_t i = 0; i < j; i++) taken |= chosen[i] == e;
            if (!taken && (best == ne || probs[e] > probs[best])) best = e;
        }
        chosen[j] = best;
        total = total + probs[best];
    }
    for (uint32_t j = 0; j < k; j++) weights[j] = norm ? probs[chosen[j]] / total : probs[chosen[j]];
}

static void test_route(void) {
    enum { MAX_E = 40, MAX_DIM = 70 };
    const uint32_t experts[] = {1, 7, 8, 13, 16, 40};
    const uint32_t dims[] = {1, 33, 70};
    static float router[MAX_E * MAX_DIM];
    float h[MAX_DIM];
    for (size_t a = 0; a < sizeof experts / sizeof experts[0]; a++) {
        for (size_t b = 0; b < sizeof dims / sizeof dims[0]; b++) {
            const uint32_t ne = experts[a], dim = dims[b];
            for (uint32_t i = 0; i < ne * dim; i++) router[i] = rnd();
            for (uint32_t i = 0; i < dim; i++) h[i] = rnd();
            /* a tie: expert 2's row a copy of expert 0's */
            if (ne > 2) memcpy(router + 2 * dim, router, dim * sizeof(float));
            for (uint32_t k = 1; k <= ne && k <= 8; k += 3) {
                for (int norm = 0; norm <= 1; norm++) {
                    float p0[MAX_E], p1[MAX_E], w0[8], w1[8];
                    uint32_t c0[8], c1[8];
                    qwen3_moe_route(router, h, dim, ne, k, norm, p0, c0, w0);
                    route_naive(router, h, dim, ne, k, norm, p1, c1, w1);
                    CHECK(memcmp(p0, p1, ne * sizeof(float)) == 0, "%u experts, dim %u: probabilities differ", ne,
                          dim);
                    CHECK(memcmp(c0, c1, k * sizeof(uint32_t)) == 0, "%u experts, dim %u, k %u: choice differs", ne,
                          dim, k);
                    CHECK(memcmp(w0, w1, k * sizeof(float)) == 0, "%u experts, dim %u, k %u, norm %d: weights differ",
                          ne, dim, k, norm);
                    float sum = 0.0f;
                    for (uint32_t j = 0; j < k; j++) sum += w0[j];
                    if (norm) CHECK(sum > 0.9999f && sum < 1.0001f, "renormalised weights sum to %g", (double)sum);
                    if (!norm && k < ne) CHECK(sum < 1.0f, "softmax weights of %u of %u sum to %g", k, ne, (double)sum);
                    if (ne > 2 && k >= 2) {
                        /* the tie goes to the lower index: 2 is never taken before 0 */
                        for (uint32_t j = 0; j < k; j++) {
                            if (c0[j] == 0) break;
                            CHECK(c0[j] != 2, "%u experts: expert 2 chosen before its twin 0", ne);
                        }
                    }
                }
            }
        }
    }
}

/* qwen3_moe_route_lanes (a prefill block's routing, tokens in vector lanes) against the
 * formula per token, bit for bit: token counts below, at and past the 16 lanes (partial
 * groups), expert counts that are and are not a multiple of its four-row step, the
 * generic loops and (x86 with AVX2) the AVX2 ones. */
static void test_route_lanes(void) {
    enum { MAX_E = 40, MAX_DIM = 70, MAX_N = 37, MAX_K = 8 };
    const uint32_t experts[] = {1, 3, 8, 13, 40};
    const uint32_t dims[] = {1, 33, 70};
    const uint32_t counts[] = {1, 3, 4, 5, 16, 17, 37};
    static float router[MAX_E * MAX_DIM], x[MAX_N * (MAX_DIM + 3)], xt[16 * MAX_DIM];
    static float p0[MAX_N * MAX_E], p1[MAX_E], w0[MAX_N * MAX_K], w1[MAX_K];
    static uint32_t c0[MAX_N * MAX_K], c1[MAX_K];
    int simd_max = 0;
#if defined(__x86_64__) || defined(_M_X64)
    simd_max = qwen3_kernels_find("avx2") != NULL; /* the AVX2 loops need the CPU to have it */
#endif
    uint32_t checked = 0;
    for (int simd = 0; simd <= simd_max; simd++) {
        for (size_t a = 0; a < sizeof experts / sizeof experts[0]; a++) {
            for (size_t b = 0; b < sizeof dims / sizeof dims[0]; b++) {
                for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
                    const uint32_t ne = experts[a], dim = dims[b], n = counts[c], stride = dim + 3;
                    const uint32_t k = ne < 3 ? ne : 3;
                    const int norm = (int)(c % 2);
                    for (uint32_t i = 0; i < ne * dim; i++) router[i] = rnd();
                    for (uint32_t i = 0; i < n * stride; i++) x[i] = rnd();
                    qwen3_moe_route_lanes(router, x, stride, n, dim, ne, k, norm, simd, xt, p0, c0, w0);
                    for (uint32_t t = 0; t < n; t++) {
                        route_naive(router, x + (size_t)t * stride, dim, ne, k, norm, p1, c1, w1);
                        CHECK(memcmp(p0 + (size_t)t * ne, p1, ne * sizeof(float)) == 0,
                              "simd %d, %u experts, dim %u, %u tokens: token %u's probabilities differ", simd, ne, dim,
                              n, t);
                        CHECK(memcmp(c0 + (size_t)t * k, c1, k * sizeof(uint32_t)) == 0 &&
                                  memcmp(w0 + (size_t)t * k, w1, k * sizeof(float)) == 0,
                              "simd %d, %u experts, dim %u, %u tokens: token %u's choice or weights differ", simd, ne,
                              dim, n, t);
                        checked++;
                    }
                }
            }
        }
    }
    CHECK(checked > 0, "no token checked");
}

int main(void) {
    test_route();
    test_route_lanes();
    return tu_finish("test_moe");
}
