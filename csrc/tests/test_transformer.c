/* test_transformer.c - the fp32 building blocks against hand values, and whole forward
 * passes of tiny models against a straightforward double-precision reference that reads
 * the checkpoint itself (so a loader that mixes up tensors fails here too). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "qwen3_inference.h"
#include "rope.h"
#include "test_util.h"
#include "transformer.h"

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol; }

/* ------------------------------------------------------------------------------------
 * Building blocks
 * ---------------------------------------------------------------------------------- */

static void test_rmsnorm(void) {
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 0.5f, 2, 1};
    float out[4];
    qwen3_rmsnorm(out, x, w, 4, 1e-6f);
    /* mean(x^2) = 7.5; 1 / sqrt(7.5) = 0.3651484 */
    const double want[4] = {0.3651484, 0.3651484, 2.1908902, 1.4605935};
    for (int i = 0; i < 4; i++) {
        CHECK(close_to(out[i], want[i], 2e-6), "rmsnorm[%d] = %.7f, want %.7f", i, out[i], want[i]);
    }
    float y[4] = {1, 2, 3, 4};
    qwen3_rmsnorm(y, y, w, 4, 1e-6f);
    CHECK(memcmp(y, out, sizeof y) == 0, "in-place rmsnorm differs");
    /* eps keeps a zero vector finite */
    const float z[4] = {0, 0, 0, 0};
    qwen3_rmsnorm(out, z, w, 4, 1e-6f);
    CHECK(out[0] == 0.0f && out[3] == 0.0f, "rmsnorm of zeros: %g", out[0]);
}

static void test_rope(void) {
    float c[64], s[64];
    qwen3_rope_angles(c, s, 4, 1, 1e6f);
    /* head_dim 4: freq_0 = 1, freq_1 = 1e6^(-1/2) = 0.001 */
    CHECK(close_to(c[0], 0.5403023, 1e-6) && close_to(s[0], 0.8414710, 1e-6), "angle 0: %g %g",
          c[0], s[0]);
    CHECK(close_to(c[1], 0.9999995, 1e-6) && close_to(s[1], 0.0009999998, 1e-9),
          "angle 1: %.9g %.9g", c[1], s[1]);
    /* rotate-half pairs element i with i + 2, not neighbours */
    float v[4] = {1, 2, 3, 4};
    qwen3_rope_rotate(v, c, s, 4);
    const double want[4] = {
        1 * 0.5403023 - 3 * 0.8414710, /* -1.9841107 */
        2 * 0.9999995 - 4 * 0.0009999998,
        1 * 0.8414710 + 3 * 0.5403023, /*  2.4623779 */
        2 * 0.0009999998 + 4 * 0.9999995,
    };
    for (int i = 0; i < 4; i++) {
        CHECK(close_to(v[i], want[i], 2e-6), "rope[%d] = %.7f, want %.7f", i, v[i], want[i]);
    }
    /* position 0 is the identity */
    qwen3_rope_angles(c, s, 4, 0, 1e6f);
    float u[4] = {1, 2, 3, 4};
    qwen3_rope_rotate(u, c, s, 4);
    CHECK(u[0] == 1 && u[1] == 2 && u[2] == 3 && u[3] == 4, "pos 0 moved the vector");
    /* a rotation keeps the norm; far positions stay close to the exact angle */
    qwen3_rope_angles(c, s, 128, 40000, 1e6f);
    float w[128];
    double n0 = 0, n1 = 0;
    for (int i = 0; i < 128; i++) {
        w[i] = (float)sin(i * 0.37 + 1);
        n0 += (double)w[i] * w[i];
    }
    qwen3_rope_rotate(w, c, s, 128);
    for (int i = 0; i < 128; i++) n1 += (double)w[i] * w[i];
    CHECK(close_to(n0, n1, 1e-4 * n0), "norm %g -> %g", n0, n1);
    for (int i = 0; i < 64; i++) {
        double angle = 40000.0 * pow(1e6, -(double)i / 64.0);
        CHECK(close_to(c[i], cos(angle), 5e-3) && close_to(s[i], sin(angle), 5e-3),
              "pos 40000 angle %d: %g vs %g", i, c[i], cos(angle));
    }
}

/* fp32 ulps between a and the double d rounded to fp32 (same sign, finite). */
static double ulps_off(float a, double d) {
    const float r = (float)d;
    int e;
    frexpf(r == 0.0f ? 1.0f : r, &e);
    return fabs((double)a - d) / ldexp(1.0, (e - 24) < -149 ? -149 : e - 24);
}

/* rope.h's power, cos and sin against the C library's double pow, cos and sin: within
 * 1 fp32 ulp of the exact value (the double functions err by ~1e-16), over positions up
 * to 2^17 and the exponents of head_dim 64 to 256, for theta 1e4, 1e6 and 5e6. Most
 * results are the correctly rounded ones; the bits printed here for a few inputs are
 * pinned in tests/rope_test.ts, which checks the TypeScript steps against them. */
static void test_rope_math(void) {
    double worst_trig = 0.0, worst_pow = 0.0;
    uint32_t off_trig = 0, n_trig = 0, off_pow = 0, n_pow = 0;
    static const float thetas[3] = {1e4f, 1e6f, 5e6f};
    for (int t = 0; t < 3; t++) {
        for (uint32_t half = 32; half <= 128; half *= 2) {
            for (uint32_t i = 0; i < half; i++) {
                const float e = -(float)i / (float)half;
                const float got = qwen3_rope_pow(thetas[t], e);
                const double want = pow((double)thetas[t], (double)e);
                const double u = ulps_off(got, want);
                if (u > worst_pow) worst_pow = u;
                if (got != (float)want) off_pow++;
                n_pow++;
            }
        }
    }
    uint64_t rng = 31;
    for (uint32_t n = 0; n < 400000; n++) {
        const double u01 = (double)(tu_next(&rng) >> 11) / 9007199254740992.0;
        const float x = n < 1000 ? (float)n * 0.01f : (float)(u01 * (n % 2 ? 131072.0 : 8.0));
        float c, s;
        qwen3_rope_sincos(x, &c, &s);
        const double uc = ulps_off(c, cos((double)x)), us = ulps_off(s, sin((double)x));
        if (uc > worst_trig) worst_trig = uc;
        if (us > worst_trig) worst_trig = us;
        if (c != (float)cos((double)x)) off_trig++;
        if (s != (float)sin((double)x)) off_trig++;
        n_trig += 2;
    }
    CHECK(worst_pow <= 1.0, "qwen3_rope_pow is %.3f ulp off", worst_pow);
    CHECK(worst_trig <= 1.0, "qwen3_rope_sincos is %.3f ulp off", worst_trig);
    CHECK(off_trig <= n_trig / 1000 && off_pow <= n_pow / 100, "not correctly rounded: cos/sin %u of %u, pow %u of %u",
          off_trig, n_trig, off_pow, n_pow);
    printf("rope math: cos/sin at most %.3f ulp (%u of %u not the correctly rounded fp32), pow %.3f ulp (%u of %u)\n",
           worst_trig, off_trig, n_trig, worst_pow, off_pow, n_pow);
    static const float xs[6] = {0.0f, 0.4f, 3.1415927f, 100.25f, 4.0f * 0.0486967f, 40000.0f};
    for (int k = 0; k < 6; k++) {
        float c, s;
        qwen3_rope_sincos(xs[k], &c, &s);
        uint32_t cb, sb;
        memcpy(&cb, &c, 4);
        memcpy(&sb, &s, 4);
        printf("  sincos(%.9g) = 0x%08x 0x%08x\n", xs[k], cb, sb);
    }
    static const float es[3] = {-0.25f, -0.5f, -0.984375f};
    for (int k = 0; k < 3; k++) {
        const float p = qwen3_rope_pow(1e6f, es[k]);
        uint32_t pb;
        memcpy(&pb, &p, 4);
        printf("  pow(1e6, %.9g) = 0x%08x\n", es[k], pb);
    }
}

static void test_softmax(void) {
    float x[3] = {1000, 1001, 1002};
    qwen3_softmax(x, 3);
    const double want[3] = {0.09003057, 0.24472847, 0.66524096};
    for (int i = 0; i < 3; i++) {
        CHECK(close_to(x[i], want[i], 1e-6), "softmax[%d] = %.8f, want %.8f", i, x[i], want[i]);
    }
    float y[4] = {-1e30f, 0.0f, -INFINITY, -3e38f};
    qwen3_softmax(y, 4);
    CHECK(y[0] == 0.0f && y[1] == 1.0f && y[2] == 0.0f && y[3] == 0.0f, "extremes: %g %g %g %g",
          y[0], y[1], y[2], y[3]);
    float z[2] = {-5000, -5000};
    qwen3_softmax(z, 2);
    CHECK(z[0] == 0.5f && z[1] == 0.5f, "all very negative: %g %g", z[0], z[1]);
    float one[1] = {123};
    qwen3_softmax(one, 1);
    CHECK(one[0] == 1.0f, "softmax of one value: %g", one[0]);
}

/* The router of a Qwen3-MoE block (moe.h): top-k by probability, ties to the lower index,
 * weights renormalised over the k in routing order. The whole sparse forward is checked
 * against transformers and across tiers / threads / prefill in tests/moe_test.ts. */
static void test_moe_route(void) {
    /* dim 2, four experts: logits (3, 1, 3, 2) from h = (1, 0) */
    const float router[8] = {3, 9, 1, 9, 3, -9, 2, 0};
    const float h[2] = {1, 0};
    float probs[4], weights[4];
    uint32_t chosen[4];
    qwen3_moe_route(router, h, 2, 4, 2, 1, probs, chosen, weights);
    CHECK(chosen[0] == 0 && chosen[1] == 2, "equal logits 3, 3: chose %u, %u, want 0, 2", chosen[0], chosen[1]);
    CHECK(weights[0] == 0.5f && weights[1] == 0.5f, "equal weights: %g %g", weights[0], weights[1]);
    double sum = 0;
    for (int e = 0; e < 4; e++) sum += probs[e];
    CHECK(close_to(sum, 1.0, 1e-6), "softmax over the experts sums to %g", sum);

    qwen3_moe_route(router, h, 2, 4, 3, 1, probs, chosen, weights);
    CHECK(chosen[2] == 3, "third: chose %u, want 3 (logit 2)", chosen[2]);
    const float total = probs[0] + probs[2] + probs[3];
    CHECK(weights[2] == probs[3] / total, "third weight %g, want %g", weights[2], probs[3] / total);

    qwen3_moe_route(router, h, 2, 4, 1, 1, probs, chosen, weights);
    CHECK(chosen[0] == 0 && weights[0] == 1.0f, "top-1: %u with weight %g", chosen[0], weights[0]);

    /* all four logits equal: routing order is index order */
    const float flat[8] = {0};
    qwen3_moe_route(flat, h, 2, 4, 4, 1, probs, chosen, weights);
    CHECK(chosen[0] == 0 && chosen[1] == 1 && chosen[2] == 2 && chosen[3] == 3, "all tied: %u %u %u %u",
          chosen[0], chosen[1], chosen[2], chosen[3]);
    CHECK(weights[0] == 0.25f && weights[3] == 0.25f, "all tied: weights %g %g", weights[0], weights[3]);
}

static void test_attention(void) {
    /* 3 positions, head_dim 2, keys/values interleaved with another head (stride 4) */
    const float q[2] = {1, 0};
    const float kv[3 * 4] = {1, 0, 9, 9, 0, 1, 9, 9, -1, 0, 9, 9};
    const float vv[3 * 4] = {1, 2, 9, 9, 3, 4, 9, 9, 5, 6, 9, 9};
    float att[3], out[2];
    qwen3_attention_head(out, q, kv, vv, 4, 3, 2, att);
    double sc[3] = {1 / sqrt(2.0), 0, -1 / sqrt(2.0)}, e[3], sum = 0;
    for (int t = 0; t < 3; t++) sum += (e[t] = exp(sc[t]));
    double o0 = 0, o1 = 0;
    for (int t = 0; t < 3; t++) {
        /* att holds exp(score - max), the weights before the division by their sum */
        CHECK(close_to(att[t], e[t] / e[0], 1e-6), "att[%d] = %g, want %g", t, att[t], e[t] / e[0]);
        o0 += e[t] / sum * vv[4 * t];
        o1 += e[t] / sum * vv[4 * t + 1];
    }
    CHECK(close_to(out[0], o0, 1e-5) && close_to(out[1], o1, 1e-5), "out %g %g, want %g %g",
          out[0], out[1], o0, o1);
    /* causal: one position sees only itself */
    qwen3_attention_head(out, q, kv, vv, 4, 1, 2, att);
    CHECK(att[0] == 1.0f && out[0] == 1.0f && out[1] == 2.0f, "single position: %g %g", out[0],
          out[1]);
}

/* ------------------------------------------------------------------------------------
 * A reference forward pass in double precision
 * ---------------------------------------------------------------------------------- */

typedef struct {
    uint32_t rows, cols;
    double* w; /* (rows, cols) dequantised */
} RefMatrix;

typedef struct {
    TuSpec s;
    double *attn_norm, *ffn_norm, *final_norm, *q_norm, *k_norm; /* as in the file */
    RefMatrix embed, *wq, *wk, *wv, *wo, *w1, *w2, *w3, cls;
    double *kcache, *vcache; /* (n_layers, positions, kv_dim) */
    uint32_t max_pos;
} RefModel;

static const uint8_t* ref_floats(const uint8_t* p, double** out, uint64_t n) {
    *out = (double*)malloc(n * sizeof(double));
    for (uint64_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        (*out)[i] = f;
    }
    return p + 4 * n;
}

static const uint8_t* ref_q8(const uint8_t* p, RefMatrix* m, uint32_t rows, uint32_t cols,
                             uint32_t gs) {
    uint64_t n = (uint64_t)rows * cols;
    m->rows = rows;
    m->cols = cols;
    m->w = (double*)malloc(n * sizeof(double));
    const int8_t* q = (const int8_t*)p;
    const uint8_t* sp = p + n;
    for (uint64_t i = 0; i < n; i++) {
        float sc;
        memcpy(&sc, sp + 4 * (i / gs), 4);
        m->w[i] = (double)q[i] * sc;
    }
    return sp + 4 * (n / gs);
}

/* Walks the file in the order of docs/formats.md#checkpoint-body, written here
 * independently of model_checkpoint.c. */
static void ref_init(RefModel* r, const TuSpec* s, const uint8_t* file, uint32_t max_pos) {
    memset(r, 0, sizeof *r);
    r->s = *s;
    const uint32_t L = s->n_layers, dim = s->dim, hd = s->head_dim, gs = s->group_size;
    const uint32_t qd = s->n_heads * hd, kvd = s->n_kv_heads * hd;
    const uint8_t* p = file + 256;
    p = ref_floats(p, &r->attn_norm, (uint64_t)L * dim);
    p = ref_floats(p, &r->ffn_norm, (uint64_t)L * dim);
    p = ref_floats(p, &r->final_norm, dim);
    p = ref_floats(p, &r->q_norm, (uint64_t)L * hd);
    p = ref_floats(p, &r->k_norm, (uint64_t)L * hd);
    p = ref_q8(p, &r->embed, s->vocab_size, dim, gs);
    RefMatrix** all[7] = {&r->wq, &r->wk, &r->wv, &r->wo, &r->w1, &r->w2, &r->w3};
    const uint32_t rows[7] = {qd, kvd, kvd, dim, s->hidden_dim, dim, s->hidden_dim};
    const uint32_t cols[7] = {dim, dim, dim, qd, dim, s->hidden_dim, dim};
    for (int t = 0; t < 7; t++) {
        *all[t] = (RefMatrix*)calloc(L, sizeof(RefMatrix));
        for (uint32_t l = 0; l < L; l++) p = ref_q8(p, &(*all[t])[l], rows[t], cols[t], gs);
    }
    if (s->shared_classifier) {
        r->cls = r->embed;
    } else {
        p = ref_q8(p, &r->cls, s->vocab_size, dim, gs);
    }
    r->max_pos = max_pos;
    r->kcache = (double*)calloc((size_t)L * max_pos * kvd, sizeof(double));
    r->vcache = (double*)calloc((size_t)L * max_pos * kvd, sizeof(double));
}

static void ref_deinit(RefModel* r) {
    free(r->attn_norm);
    free(r->ffn_norm);
    free(r->final_norm);
    free(r->q_norm);
    free(r->k_norm);
    free(r->embed.w);
    RefMatrix* all[7] = {r->wq, r->wk, r->wv, r->wo, r->w1, r->w2, r->w3};
    for (int t = 0; t < 7; t++) {
        for (uint32_t l = 0; l < r->s.n_layers; l++) free(all[t][l].w);
        free(all[t]);
    }
    if (!r->s.shared_classifier) free(r->cls.w);
    free(r->kcache);
    free(r->vcache);
}

static void ref_rmsnorm(double* out, const double* x, const double* w, uint32_t n) {
    double ss = 0;
    for (uint32_t i = 0; i < n; i++) ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + 1e-6);
    for (uint32_t i = 0; i < n; i++) out[i] = x[i] * inv * w[i];
}

/* W8A8: the input is rounded to int8 per group before the product
 * (docs/numerics.md#activations). */
static void ref_matvec(double* out, const RefMatrix* m, const double* x, uint32_t gs) {
    double* xq = (double*)malloc(m->cols * sizeof(double));
    for (uint32_t g = 0; g < m->cols / gs; g++) {
        double mx = 0;
        for (uint32_t i = 0; i < gs; i++) mx = fmax(mx, fabs(x[g * gs + i]));
        double sc = mx / 127.0;
        for (uint32_t i = 0; i < gs; i++) xq[g * gs + i] = sc > 0 ? round(x[g * gs + i] / sc) * sc : 0;
    }
    for (uint32_t r = 0; r < m->rows; r++) {
        double acc = 0;
        for (uint32_t c = 0; c < m->cols; c++) acc += m->w[(size_t)r * m->cols + c] * xq[c];
        out[r] = acc;
    }
    free(xq);
}

static void ref_rope(double* v, uint32_t hd, uint32_t pos) {
    for (uint32_t i = 0; i < hd / 2; i++) {
        double angle = pos * pow(1e6, -2.0 * i / hd);
        double a = v[i], b = v[i + hd / 2];
        v[i] = a * cos(angle) - b * sin(angle);
        v[i + hd / 2] = a * sin(angle) + b * cos(angle);
    }
}

/* Runs one token at `pos`; writes vocab_size logits. */
static void ref_forward(RefModel* r, int32_t token, uint32_t pos, double* logits) {
    const TuSpec* s = &r->s;
    const uint32_t dim = s->dim, hd = s->head_dim, gs = s->group_size, hid = s->hidden_dim;
    const uint32_t qd = s->n_heads * hd, kvd = s->n_kv_heads * hd;
    double *x = calloc(dim, sizeof(double)), *h = calloc(dim, sizeof(double));
    double *q = calloc(qd, sizeof(double)), *att = calloc(qd, sizeof(double));
    double *o = calloc(dim, sizeof(double)), *g = calloc(hid, sizeof(double));
    double *u = calloc(hid, sizeof(double)), *sc = calloc(pos + 1, sizeof(double));
    memcpy(x, r->embed.w + (size_t)token * dim, dim * sizeof(double));
    for (uint32_t l = 0; l < s->n_layers; l++) {
        double* k = r->kcache + ((size_t)l * r->max_pos + pos) * kvd;
        double* v = r->vcache + ((size_t)l * r->max_pos + pos) * kvd;
        ref_rmsnorm(h, x, r->attn_norm + (size_t)l * dim, dim);
        ref_matvec(q, &r->wq[l], h, gs);
        ref_matvec(k, &r->wk[l], h, gs);
        ref_matvec(v, &r->wv[l], h, gs);
        for (uint32_t i = 0; i < s->n_heads; i++) {
            ref_rmsnorm(q + i * hd, q + i * hd, r->q_norm + (size_t)l * hd, hd);
            ref_rope(q + i * hd, hd, pos);
        }
        for (uint32_t i = 0; i < s->n_kv_heads; i++) {
            ref_rmsnorm(k + i * hd, k + i * hd, r->k_norm + (size_t)l * hd, hd);
            ref_rope(k + i * hd, hd, pos);
        }
        for (uint32_t i = 0; i < s->n_heads; i++) {
            uint32_t kvh = i / (s->n_heads / s->n_kv_heads);
            double mx = -INFINITY, sum = 0;
            for (uint32_t t = 0; t <= pos; t++) {
                const double* kt = r->kcache + ((size_t)l * r->max_pos + t) * kvd + kvh * hd;
                double d = 0;
                for (uint32_t j = 0; j < hd; j++) d += q[i * hd + j] * kt[j];
                sc[t] = d / sqrt((double)hd);
                mx = fmax(mx, sc[t]);
            }
            for (uint32_t t = 0; t <= pos; t++) sum += (sc[t] = exp(sc[t] - mx));
            for (uint32_t j = 0; j < hd; j++) {
                double acc = 0;
                for (uint32_t t = 0; t <= pos; t++) {
                    acc += sc[t] / sum * r->vcache[((size_t)l * r->max_pos + t) * kvd + kvh * hd + j];
                }
                att[i * hd + j] = acc;
            }
        }
        ref_matvec(o, &r->wo[l], att, gs);
        for (uint32_t i = 0; i < dim; i++) x[i] += o[i];
        ref_rmsnorm(h, x, r->ffn_norm + (size_t)l * dim, dim);
        ref_matvec(g, &r->w1[l], h, gs);
        ref_matvec(u, &r->w3[l], h, gs);
        for (uint32_t i = 0; i < hid; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
        ref_matvec(o, &r->w2[l], g, gs);
        for (uint32_t i = 0; i < dim; i++) x[i] += o[i];
    }
    ref_rmsnorm(h, x, r->final_norm, dim);
    ref_matvec(logits, &r->cls, h, gs);
    free(x), free(h), free(q), free(att), free(o), free(g), free(u), free(sc);
}

/* ------------------------------------------------------------------------------------
 * Engine against reference
 * ---------------------------------------------------------------------------------- */

#define N_STEPS 9

static void compare_model(const char* dir, const char* name, const TuSpec* s) {
    char path[1100], tok[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tok, sizeof tok, "%s.tokenizer", path);
    CHECK(tu_write_checkpoint(path, s) && tu_write_byte_tokenizer(tok), "%s: write", name);
    Qwen3Model* m = qwen3_model_new(path, 0);
    CHECK(m != NULL, "%s: %s", name, qwen3_get_last_error());
    if (!m) return;
    size_t len = 0;
    uint8_t* file = (uint8_t*)tu_read_file(path, &len);
    RefModel ref;
    ref_init(&ref, s, file, N_STEPS);

    Qwen3Context ctx, whole;
    CHECK(qwen3_context_init(&ctx, m, 64) == QWEN3_OK, "context: %s", qwen3_get_last_error());
    CHECK(qwen3_context_init(&whole, m, 64) == QWEN3_OK, "context: %s", qwen3_get_last_error());
    const int32_t tokens[N_STEPS] = {17, 300, 5, 258, 99, 17, 17, 311, 0};
    double* want = (double*)malloc(s->vocab_size * sizeof(double));
    double worst = 0;
    for (uint32_t t = 0; t < N_STEPS; t++) {
        CHECK(qwen3_forward_tokens(&ctx, &tokens[t], 1) == QWEN3_OK, "%s step %u: %s", name, t,
              qwen3_get_last_error());
        ref_forward(&ref, tokens[t], t, want);
        double scale = 0, err = 0;
        for (uint32_t i = 0; i < s->vocab_size; i++) {
            scale = fmax(scale, fabs(want[i]));
            err = fmax(err, fabs(want[i] - ctx.logits[i]));
        }
        CHECK(scale > 0.1, "%s step %u: degenerate reference logits (max %g)", name, t, scale);
        /* fp32 sums against double: ~5e-7 measured; a rare activation landing on the
         * other side of an int8 rounding step may add ~1e-5 */
        CHECK(err <= 1e-4 * scale, "%s step %u: max |logit - ref| = %g, max |ref| = %g", name, t,
              err, scale);
        worst = fmax(worst, err / scale);
    }
    fprintf(stderr, "%s: worst relative logit error against the double reference %.2e\n", name,
            worst);

    /* one prefill of all tokens leaves the same logits as token by token */
    CHECK(qwen3_forward_tokens(&whole, tokens, N_STEPS) == QWEN3_OK, "prefill: %s",
          qwen3_get_last_error());
    CHECK(whole.pos == N_STEPS && whole.has_logits, "prefill position %u", whole.pos);
    CHECK(memcmp(whole.logits, ctx.logits, s->vocab_size * sizeof(float)) == 0,
          "%s: prefill logits differ from step-by-step", name);

    /* the thread count changes nothing */
    for (uint32_t threads = 1; threads <= 3; threads += 2) {
        CHECK(qwen3_model_resize_pool(m, threads) == QWEN3_OK, "threads %u", threads);
        whole.pos = 0;
        CHECK(qwen3_forward_tokens(&whole, tokens, N_STEPS) == QWEN3_OK, "prefill");
        CHECK(memcmp(whole.logits, ctx.logits, s->vocab_size * sizeof(float)) == 0,
              "%s: %u threads change the logits", name, threads);
    }

    /* nothing happens on a bad token or a full context */
    float before = whole.logits[3];
    int32_t bad[2] = {1, (int32_t)s->vocab_size};
    whole.pos = 0;
    CHECK(qwen3_forward_tokens(&whole, bad, 2) == QWEN3_ERR_INVALID_ARGUMENT, "bad id accepted");
    char needle[64];
    snprintf(needle, sizeof needle, "token id %u at index 1", s->vocab_size);
    CHECK_ERROR_HAS(needle);
    CHECK(whole.pos == 0 && whole.logits[3] == before, "a rejected prefill changed the context");
    int32_t* many = (int32_t*)calloc(65, sizeof(int32_t));
    CHECK(qwen3_forward_tokens(&whole, many, 65) == QWEN3_ERR_CONTEXT_FULL, "65 tokens fit in 64");
    CHECK_ERROR_HAS("64 positions");
    CHECK(qwen3_forward_tokens(&whole, many, 64) == QWEN3_OK, "64 tokens: %s",
          qwen3_get_last_error());
    CHECK(qwen3_forward_tokens(&whole, many, 1) == QWEN3_ERR_CONTEXT_FULL, "65th token fit");
    free(many);

    free(want);
    qwen3_context_deinit(&ctx);
    qwen3_context_deinit(&whole);
    ref_deinit(&ref);
    free(file);
    qwen3_model_free(m);
}

static void test_forward(void) {
    char dir[1024];
    if (!tu_make_temp_dir(dir, sizeof dir)) {
        CHECK(0, "cannot create a temp folder");
        return;
    }
    TuSpec s = tu_small_spec();
    s.vocab_size = 512;
    compare_model(dir, "gqa2_tied_gs32.bin", &s);

    s.format = QWEN3_FORMAT_QWEN3RS;
    s.shared_classifier = 0;
    s.group_size = 64;
    s.seed = 2;
    compare_model(dir, "gqa2_untied_gs64_rs.bin", &s);

    s = tu_small_spec();
    s.vocab_size = 512;
    s.n_kv_heads = 4; /* plain multi-head attention */
    s.seed = 3;
    compare_model(dir, "mha_tied.bin", &s);

    s = tu_small_spec();
    s.vocab_size = 400;
    s.n_heads = 8;
    s.n_kv_heads = 2; /* GQA 4:1 */
    s.head_dim = 16;
    s.hidden_dim = 96;
    s.n_layers = 3;
    s.shared_classifier = 0;
    s.seed = 4;
    compare_model(dir, "gqa4_untied.bin", &s);
    tu_remove_dir(dir);
}

/* ------------------------------------------------------------------------------------
 * Batched prefill against token-by-token decoding: the same bits, every kernel tier
 * ---------------------------------------------------------------------------------- */

#define EQ_TOKENS 200

/* Compares the KV caches of two contexts (same model and length) at positions < n.
 * Writes where they first differ into `where`. */
static int kv_equal(const Qwen3Context* a, const Qwen3Context* b, uint32_t n, char* where, size_t cap) {
    const Qwen3Header* h = &a->model->header;
    if (a->kv_type != b->kv_type) {
        snprintf(where, cap, "kv type %u vs %u", a->kv_type, b->kv_type);
        return 0;
    }
    if (a->kv_type == QWEN3_KV_Q8) {
        /* int8 values, keys and their scales, a slab per layer and kv head (transformer.h) */
        for (uint32_t l = 0; l < h->n_layers; l++) {
            for (uint32_t p = 0; p < n; p++) {
                const uint32_t hd = h->head_dim, hg = hd / a->kv_group;
                for (uint32_t kh = 0; kh < h->n_kv_heads; kh++) {
                    const size_t at = ((size_t)l * h->n_kv_heads + kh) * a->ctx_len + p;
                    if (memcmp(a->value_q8 + at * hd, b->value_q8 + at * hd, hd) != 0 ||
                        memcmp(a->value_scale + at * hg, b->value_scale + at * hg, hg * sizeof(float)) != 0) {
                        snprintf(where, cap, "q8 value cache layer %u kv head %u position %u", l, kh, p);
                        return 0;
                    }
                    if (memcmp(a->key_q8 + at * hd, b->key_q8 + at * hd, hd) != 0 ||
                        memcmp(a->key_scale + at * hg, b->key_scale + at * hg, hg * sizeof(float)) != 0) {
                        snprintf(where, cap, "q8 key cache layer %u kv head %u position %u", l, kh, p);
                        return 0;
                    }
                }
            }
        }
        return 1;
    }
    /* fp32 (or binary16) values and keys, the same slabs per layer and kv head */
    const size_t es = a->kv_type == QWEN3_KV_F16 ? sizeof(uint16_t) : sizeof(float);
    const char* const av = a->kv_type == QWEN3_KV_F16 ? (const char*)a->value_f16 : (const char*)a->value_cache;
    const char* const bv = b->kv_type == QWEN3_KV_F16 ? (const char*)b->value_f16 : (const char*)b->value_cache;
    const char* const ak = a->kv_type == QWEN3_KV_F16 ? (const char*)a->key_f16 : (const char*)a->key_cache;
    const char* const bk = b->kv_type == QWEN3_KV_F16 ? (const char*)b->key_f16 : (const char*)b->key_cache;
    for (uint32_t l = 0; l < h->n_layers; l++) {
        for (uint32_t p = 0; p < n; p++) {
            const uint32_t hd = h->head_dim;
            for (uint32_t kh = 0; kh < h->n_kv_heads; kh++) {
                const size_t vrow = (((size_t)l * h->n_kv_heads + kh) * a->ctx_len + p) * hd;
                if (memcmp(av + vrow * es, bv + vrow * es, hd * es) != 0) {
                    snprintf(where, cap, "value cache layer %u kv head %u position %u", l, kh, p);
                    return 0;
                }
                const size_t block = ((size_t)l * h->n_kv_heads + kh) * a->ctx_blocks + p / QWEN3_KV_BLOCK;
                for (uint32_t i = 0; i < hd; i++) {
                    const size_t at = (block * hd + i) * QWEN3_KV_BLOCK + p % QWEN3_KV_BLOCK;
                    if (memcmp(ak + at * es, bk + at * es, es) != 0) {
                        snprintf(where, cap, "key cache layer %u kv head %u position %u dim %u", l, kh, p, i);
                        return 0;
                    }
                }
            }
        }
    }
    return 1;
}

/* The prefill lengths tried: all up to two blocks and a bit, then every stride-th, and
 * always the last. */
/* Set from QWEN3_TEST_EMULATED (tools/test_aarch64.ts sets it for runs under qemu-user,
 * where a forward pass costs 20-100x its native time): the prefill lengths shrink to the
 * ones next to block and tile edges. The native run keeps the full sweep. */
static int emulated;

/* Prefill lengths under emulation: one past a KV block (16) and either side of the
 * forward block's edges (64: the smallest block, 128), then all of them. */
static const uint32_t emulated_lengths[] = {1, 2, 17, 64, 65, 129, EQ_TOKENS};

static uint32_t next_length(uint32_t n, uint32_t stride) {
    if (emulated) {
        for (size_t i = 0; i < sizeof emulated_lengths / sizeof emulated_lengths[0]; i++)
            if (emulated_lengths[i] > n) return emulated_lengths[i];
        return EQ_TOKENS + 1;
    }
    /* a stride past 9: a sparse sweep (1, 2, 3, then every stride-th) */
    const uint32_t dense = stride > 9 ? 3 : QWEN3_FORWARD_BLOCK + 2;
    const uint32_t next = n + (n < dense ? 1 : stride);
    return next > EQ_TOKENS && n < EQ_TOKENS ? EQ_TOKENS : next;
}

/* One model, one tier, one thread count: token-by-token decoding of EQ_TOKENS tokens,
 * then a prefill in one call of every length 1..EQ_TOKENS (every `stride`-th length past
 * two blocks when stride > 1), and split prefills. */
static void check_prefill_bits(Qwen3Model* m, const char* name, const char* tier, uint32_t threads,
                               uint32_t stride, uint32_t kv_type, float* first, int* have_first) {
    const uint32_t vocab = m->header.vocab_size;
    Qwen3Context step, batch;
    CHECK(qwen3_context_init_kv(&step, m, EQ_TOKENS + 8, kv_type) == QWEN3_OK, "context: %s", qwen3_get_last_error());
    CHECK(qwen3_context_init_kv(&batch, m, EQ_TOKENS + 8, kv_type) == QWEN3_OK, "context: %s", qwen3_get_last_error());
    int32_t tokens[EQ_TOKENS];
    uint64_t rng = 77;
    for (uint32_t i = 0; i < EQ_TOKENS; i++) tokens[i] = (int32_t)(tu_next(&rng) % vocab);
    float* want = (float*)malloc((size_t)EQ_TOKENS * vocab * sizeof(float));
    int ok = 1;
    for (uint32_t i = 0; i < EQ_TOKENS && ok; i++) {
        ok = qwen3_forward_tokens(&step, &tokens[i], 1) == QWEN3_OK;
        memcpy(want + (size_t)i * vocab, step.logits, vocab * sizeof(float));
    }
    CHECK(ok, "%s/%s: token-by-token run: %s", name, tier, qwen3_get_last_error());
    /* every tier and thread count decodes the same bits (checked here for the q8 cache,
     * whose attention is not in test_kernels' per-kernel checks) */
    if (first && ok) {
        if (!*have_first) {
            memcpy(first, want, (size_t)EQ_TOKENS * vocab * sizeof(float));
            *have_first = 1;
        } else {
            CHECK(memcmp(first, want, (size_t)EQ_TOKENS * vocab * sizeof(float)) == 0,
                  "%s/%s/%u threads/kv %u: decode logits differ from the first tier/thread run", name, tier, threads,
                  kv_type);
        }
    }
    char where[128];
    uint32_t bad = 0;
    /* the prefills below tile their attention finely (chunks of 32 positions, tiles of 16
     * tokens), the token-by-token run coarsely (one chunk): the bits must not change */
    const uint32_t chunk = batch.att_chunk, tile_bytes = batch.att_tile_bytes;
    batch.att_chunk = 2 * QWEN3_KV_BLOCK;
    batch.att_tile_bytes = 1;
    CHECK(step.att_chunk >= EQ_TOKENS, "%s: the token-by-token run takes one chunk (%u)", name, step.att_chunk);
    for (uint32_t n = 1; n <= EQ_TOKENS && ok; n = next_length(n, stride)) {
        batch.pos = 0;
        CHECK(qwen3_forward_tokens(&batch, tokens, n) == QWEN3_OK, "prefill %u: %s", n, qwen3_get_last_error());
        if (memcmp(batch.logits, want + (size_t)(n - 1) * vocab, vocab * sizeof(float)) != 0) {
            if (bad++ == 0) CHECK(0, "%s/%s/%u threads: prefill of %u tokens: logits differ from token by token", name, tier, threads, n);
        } else if (!kv_equal(&batch, &step, n, where, sizeof where)) {
            if (bad++ == 0) CHECK(0, "%s/%s/%u threads: prefill of %u tokens: %s differs", name, tier, threads, n, where);
        }
    }
    batch.att_chunk = chunk;
    batch.att_tile_bytes = tile_bytes;
    /* prefills split anywhere, after a rewind, also end on the same bits */
    static const uint32_t splits[][3] = {{1, 63, 136}, {65, 0, 135}, {64, 64, 72}, {199, 1, 0}, {7, 100, 93}};
    const size_t n_splits = emulated ? 2 : sizeof splits / sizeof splits[0];
    for (size_t k = 0; k < n_splits; k++) {
        batch.pos = 0;
        uint32_t at = 0;
        for (int part = 0; part < 3; part++) {
            CHECK(qwen3_forward_tokens(&batch, tokens + at, splits[k][part]) == QWEN3_OK, "split prefill");
            at += splits[k][part];
        }
        CHECK(at == EQ_TOKENS, "split sums to %u", at);
        CHECK(memcmp(batch.logits, want + (size_t)(EQ_TOKENS - 1) * vocab, vocab * sizeof(float)) == 0 &&
                  kv_equal(&batch, &step, EQ_TOKENS, where, sizeof where),
              "%s/%s: prefill split %u+%u+%u differs from token by token", name, tier, splits[k][0], splits[k][1],
              splits[k][2]);
    }
    /* a verify pass (every token's logits) from any position: each row is the logits a
     * decode step of that token left, across forward blocks too; then the cache matches */
    static const uint32_t verifies[][2] = {{0, 1}, {0, 9}, {37, 8}, {60, 70}, {150, 50}};
    const size_t n_verifies = emulated ? 2 : sizeof verifies / sizeof verifies[0];
    float* rows = (float*)malloc((size_t)EQ_TOKENS * vocab * sizeof(float));
    CHECK(rows != NULL, "verify rows");
    for (size_t k = 0; k < n_verifies && rows; k++) {
        const uint32_t at = verifies[k][0], n = verifies[k][1];
        batch.pos = 0;
        CHECK(at == 0 || qwen3_forward_tokens(&batch, tokens, at) == QWEN3_OK, "verify prefix");
        CHECK(qwen3_forward_tokens_logits(&batch, tokens + at, n, rows) == QWEN3_OK, "verify %u at %u: %s", n, at,
              qwen3_get_last_error());
        CHECK(batch.pos == at + n && batch.has_logits, "verify position %u", batch.pos);
        for (uint32_t i = 0; i < n; i++) {
            if (memcmp(rows + (size_t)i * vocab, want + (size_t)(at + i) * vocab, vocab * sizeof(float)) != 0) {
                CHECK(0, "%s/%s/%u threads: verify of %u tokens at %u: row %u differs from token by token", name,
                      tier, threads, n, at, i);
                break;
            }
        }
        CHECK(memcmp(batch.logits, want + (size_t)(at + n - 1) * vocab, vocab * sizeof(float)) == 0 &&
                  kv_equal(&batch, &step, at + n, where, sizeof where),
              "%s/%s: verify of %u at %u: context logits or cache differ", name, tier, n, at);
    }
    free(rows);
    /* the cache really holds what the test compares: rewinding the step context into the
     * middle and decoding a different token must change later logits */
    step.pos = 100;
    int32_t other = (tokens[100] + 1) % (int32_t)vocab;
    CHECK(qwen3_forward_tokens(&step, &other, 1) == QWEN3_OK, "rewound step");
    CHECK(memcmp(step.logits, want + (size_t)100 * vocab, vocab * sizeof(float)) != 0,
          "%s: a different token gave the same logits", name);
    free(want);
    qwen3_context_deinit(&step);
    qwen3_context_deinit(&batch);
}

static void test_prefill_bit_identical(void) {
    char dir[1024];
    if (!tu_make_temp_dir(dir, sizeof dir)) {
        CHECK(0, "cannot create a temp folder");
        return;
    }
    TuSpec specs[4];
    const char* names[4] = {"gqa2_gs32", "odd_rows_gs16", "two_chunks_gs64", "wide_fused_decode"};
    specs[0] = tu_small_spec();
    specs[0].vocab_size = 512;
    specs[0].seq_len = 512;
    /* rows that are not multiples of any SIMD tile (q 48, kv 16, hidden 160), 3 heads on 1 kv head */
    specs[1] = specs[0];
    specs[1].dim = 96;
    specs[1].hidden_dim = 160;
    specs[1].n_heads = 3;
    specs[1].n_kv_heads = 1;
    specs[1].head_dim = 16;
    specs[1].group_size = 16;
    specs[1].vocab_size = 300;
    specs[1].shared_classifier = 0;
    specs[1].seed = 5;
    /* the down projection reads 1152 columns: more than one packed chunk of the GEMM */
    specs[2] = specs[0];
    specs[2].hidden_dim = 1152;
    specs[2].n_layers = 1;
    specs[2].group_size = 64;
    specs[2].seed = 6;
    /* big enough that a decode step's fused Q/K/V and gate/up runs split into tasks (one
     * straddles the K and V heads: 6 + 3 + 3 heads in tasks of 2) */
    specs[3] = specs[0];
    specs[3].dim = 256;
    specs[3].hidden_dim = 768;
    specs[3].n_heads = 6;
    specs[3].n_kv_heads = 3;
    specs[3].head_dim = 32;
    specs[3].group_size = 64;
    specs[3].seed = 7;
    const char* const* tiers = qwen3_kernels_all_names();
    const char* active = qwen3_kernel_name();
    for (int i = 0; i < 4; i++) {
        char path[1100], tok[1200];
        snprintf(path, sizeof path, "%s/%s.bin", dir, names[i]);
        snprintf(tok, sizeof tok, "%s.tokenizer", path);
        CHECK(tu_write_checkpoint(path, &specs[i]) && tu_write_byte_tokenizer(tok), "%s: write", names[i]);
        Qwen3Model* m = qwen3_model_new(path, 0);
        CHECK(m != NULL, "%s: %s", names[i], qwen3_get_last_error());
        if (!m) continue;
        /* the q8 cache (docs/numerics.md#int8-kv-cache): prefill equals decode on every
         * tier, and every tier and thread count decodes the same bits; sparser lengths
         * (stride 63) and no run on the one-layer model (its point is the down projection's
         * chunks, nothing the cache touches) keep it to a fraction of the f32 sweep's time */
        float* first = (float*)malloc((size_t)EQ_TOKENS * specs[i].vocab_size * sizeof(float));
        float* first16 = (float*)malloc((size_t)EQ_TOKENS * specs[i].vocab_size * sizeof(float));
        int have_first = 0, have_first16 = 0;
        CHECK(first != NULL && first16 != NULL, "first run's logits");
        for (uint32_t t = 0; tiers[t] && first && first16 && i != 2; t++) {
            if (qwen3_kernels_find(tiers[t]) == NULL) continue;
            if (emulated && i > 0) break; /* the first model only under emulation */
            CHECK(qwen3_kernel_select(tiers[t]) == QWEN3_OK, "select %s", tiers[t]);
            /* 3 threads too on the wide model's last tier (the thread split is the f32
             * cache's, checked below on every tier) */
            const uint32_t max_threads = i == 3 && tiers[t + 1] == NULL ? 3u : 1u;
            for (uint32_t threads = 1; threads <= max_threads; threads += 2) {
                CHECK(qwen3_model_resize_pool(m, threads) == QWEN3_OK, "threads %u", threads);
                check_prefill_bits(m, names[i], tiers[t], threads, 63, QWEN3_KV_Q8, first, &have_first);
                /* and the f16 cache (docs/numerics.md#fp16-kv-cache), the same way */
                check_prefill_bits(m, names[i], tiers[t], threads, 63, QWEN3_KV_F16, first16, &have_first16);
            }
        }
        free(first);
        free(first16);
        for (uint32_t t = 0; tiers[t]; t++) {
            if (qwen3_kernels_find(tiers[t]) == NULL) {
                fprintf(stderr, "%s: tier %s SKIPPED (not supported by this CPU)\n", names[i], tiers[t]);
                continue;
            }
            CHECK(qwen3_kernel_select(tiers[t]) == QWEN3_OK, "select %s", tiers[t]);
            /* under emulation the scalar tier (the same C as natively) runs on the first
             * model only: the SIMD tiers are what only an emulated run can test. So does
             * the SVE tier, with one thread: qemu runs its kernel several times slower
             * than NEON's (7-17 s a sweep against under 1 s; 44 s of the test's ~110 s),
             * and that kernel is matvec_q8 alone (its matmul runs it per token), which
             * test_kernels compares with scalar at three vector lengths, rows 1-67 and
             * every group size these models use. */
            if (emulated && i > 0 && strcmp(tiers[t], "scalar") == 0) continue;
            if (emulated && i > 0 && strcmp(tiers[t], "sve") == 0) continue;
            for (uint32_t threads = 1; threads <= 3; threads++) {
                /* the thread split is checked on the first model and (where a decode step's
                 * runs split into tasks) on the wide one, sparsely */
                if (i == 3 ? threads == 1 || (emulated && threads == 3) : threads > (i == 0 ? 2u : 1u)) continue;
                if (emulated && threads > 1 && strcmp(tiers[t], "sve") == 0) continue;
                CHECK(qwen3_model_resize_pool(m, threads) == QWEN3_OK, "threads %u", threads);
                check_prefill_bits(m, names[i], tiers[t], threads, i == 3 ? 31 : i == 0 && threads == 1 ? 1 : 9,
                                   QWEN3_KV_F32, NULL, NULL);
            }
        }
        qwen3_model_free(m);
    }
    CHECK(qwen3_kernel_select(active) == QWEN3_OK, "restore %s", active);
    tu_remove_dir(dir);
}

/* ------------------------------------------------------------------------------------
 * Embeddings: the last token's final hidden state without the classifier
 * ---------------------------------------------------------------------------------- */

#define EMBED_TOKENS 150
#define EMBED_LENGTHS 7 /* check_embed's prompt lengths */

/* The hidden state qwen3_context_embed writes for tokens[0..n) is, bit for bit, the input
 * the logits path hands the classifier (xb of the last token after a prefill); the same on
 * every tier and thread count; leaves the KV cache as a prefill does and no logits. */
static void check_embed(Qwen3Model* m, const char* name, const char* tier, uint32_t threads, float* first,
                        int* have_first) {
    const uint32_t dim = m->header.dim, vocab = m->header.vocab_size;
    /* under emulation: one token, and one past the forward block's edge */
    static const uint32_t lengths[EMBED_LENGTHS] = {1, QWEN3_FORWARD_BLOCK + 1, 2, 9, 64, 65, EMBED_TOKENS};
    const size_t n_lengths = emulated ? 2 : sizeof lengths / sizeof lengths[0];
    Qwen3Context* e = qwen3_context_new(m, EMBED_TOKENS + 8);
    Qwen3Context* p = qwen3_context_new(m, EMBED_TOKENS + 8);
    CHECK(e && p, "%s: context: %s", name, qwen3_get_last_error());
    if (!e || !p) return;
    int32_t tokens[EMBED_TOKENS];
    uint64_t rng = 91;
    for (uint32_t i = 0; i < EMBED_TOKENS; i++) tokens[i] = (int32_t)(tu_next(&rng) % vocab);
    float* out = (float*)malloc(dim * sizeof(float));
    char where[128];
    for (size_t k = 0; k < n_lengths; k++) {
        const uint32_t n = lengths[k];
        CHECK(qwen3_context_rewind(e, 0) == QWEN3_OK && qwen3_context_rewind(p, 0) == QWEN3_OK, "rewind");
        CHECK(qwen3_context_embed(e, tokens, n, out, dim) == QWEN3_OK, "%s/%s: embed %u: %s", name, tier, n,
              qwen3_get_last_error());
        CHECK(qwen3_context_position(e) == n && qwen3_context_logits(e) == NULL,
              "%s: after embed: position %u, logits %s", name, qwen3_context_position(e),
              qwen3_context_logits(e) ? "set" : "none");
        CHECK(qwen3_context_prefill(p, tokens, n) == QWEN3_OK, "prefill %u", n);
        /* the size of the last block, as qwen3_forward_tokens splits n tokens */
        const uint32_t n_blocks = (n + p->block - 1) / p->block;
        uint32_t left = n, count = 0;
        for (uint32_t b = 0; b < n_blocks; b++) {
            count = (left + (n_blocks - b) - 1) / (n_blocks - b);
            left -= count;
        }
        CHECK(memcmp(out, p->xb + (size_t)(count - 1) * dim, dim * sizeof(float)) == 0,
              "%s/%s/%u threads: embed of %u tokens differs from the classifier's input", name, tier, threads, n);
        CHECK(kv_equal(e, p, n, where, sizeof where), "%s/%s: embed of %u tokens: %s differs from prefill", name,
              tier, n, where);
        if (!*have_first) {
            memcpy(first + (size_t)k * dim, out, dim * sizeof(float));
        } else {
            CHECK(memcmp(first + (size_t)k * dim, out, dim * sizeof(float)) == 0,
                  "%s: embed of %u tokens on %s with %u threads differs from the first tier/thread run", name, n,
                  tier, threads);
        }
    }
    *have_first = 1;
    /* after an embed the context goes on as after a prefill */
    CHECK(qwen3_context_rewind(e, 0) == QWEN3_OK && qwen3_context_rewind(p, 0) == QWEN3_OK, "rewind");
    CHECK(qwen3_context_embed(e, tokens, 70, out, dim) == QWEN3_OK && qwen3_context_prefill(e, tokens + 70, 5) == QWEN3_OK,
          "embed then prefill: %s", qwen3_get_last_error());
    CHECK(qwen3_context_prefill(p, tokens, 75) == QWEN3_OK, "prefill 75");
    CHECK(memcmp(qwen3_context_logits(e), qwen3_context_logits(p), vocab * sizeof(float)) == 0,
          "%s/%s: logits after embed + prefill differ from one prefill", name, tier);

    /* errors change nothing and name the problem */
    CHECK(qwen3_context_rewind(e, 0) == QWEN3_OK, "rewind");
    CHECK(qwen3_context_embed(e, tokens, 0, out, dim) == QWEN3_ERR_INVALID_ARGUMENT, "0 tokens");
    CHECK_ERROR_HAS("no tokens");
    CHECK(qwen3_context_embed(e, tokens, 3, out, dim - 1) == QWEN3_ERR_INVALID_ARGUMENT, "short out");
    snprintf(where, sizeof where, "out_len is %u but the model's hidden state has dim = %u", dim - 1, dim);
    CHECK_ERROR_HAS(where);
    CHECK(qwen3_context_embed(e, tokens, 3, NULL, dim) == QWEN3_ERR_INVALID_ARGUMENT, "NULL out");
    CHECK_ERROR_HAS("out is NULL");
    CHECK(qwen3_context_embed(NULL, tokens, 3, out, dim) == QWEN3_ERR_INVALID_ARGUMENT, "NULL ctx");
    int32_t bad[2] = {1, (int32_t)vocab};
    CHECK(qwen3_context_embed(e, bad, 2, out, dim) == QWEN3_ERR_INVALID_ARGUMENT, "bad id");
    CHECK(qwen3_context_embed(e, tokens, EMBED_TOKENS + 9, out, dim) == QWEN3_ERR_CONTEXT_FULL, "too many");
    CHECK(qwen3_context_position(e) == 0, "a refused embed moved the position to %u", qwen3_context_position(e));
    free(out);
    qwen3_context_free(e);
    qwen3_context_free(p);
}

static void test_embed(void) {
    char dir[1024];
    if (!tu_make_temp_dir(dir, sizeof dir)) {
        CHECK(0, "cannot create a temp folder");
        return;
    }
    TuSpec specs[2];
    const char* names[2] = {"embed_tied_gs32", "embed_untied_odd_gs16"};
    specs[0] = tu_small_spec();
    specs[0].vocab_size = 512;
    specs[1] = specs[0];
    specs[1].dim = 96;
    specs[1].hidden_dim = 160;
    specs[1].n_heads = 3;
    specs[1].n_kv_heads = 1;
    specs[1].head_dim = 16;
    specs[1].group_size = 16;
    specs[1].vocab_size = 300;
    specs[1].shared_classifier = 0;
    specs[1].seed = 8;
    const char* const* tiers = qwen3_kernels_all_names();
    const char* active = qwen3_kernel_name();
    for (int i = 0; i < 2; i++) {
        char path[1100], tok[1200];
        snprintf(path, sizeof path, "%s/%s.bin", dir, names[i]);
        snprintf(tok, sizeof tok, "%s.tokenizer", path);
        CHECK(tu_write_checkpoint(path, &specs[i]) && tu_write_byte_tokenizer(tok), "%s: write", names[i]);
        Qwen3Model* m = qwen3_model_new(path, 0);
        CHECK(m != NULL, "%s: %s", names[i], qwen3_get_last_error());
        if (!m) continue;
        float* first = (float*)malloc(EMBED_LENGTHS * (size_t)specs[i].dim * sizeof(float));
        int have_first = 0;
        for (uint32_t t = 0; tiers[t]; t++) {
            if (qwen3_kernels_find(tiers[t]) == NULL) {
                fprintf(stderr, "%s: tier %s SKIPPED (not supported by this CPU)\n", names[i], tiers[t]);
                continue;
            }
            CHECK(qwen3_kernel_select(tiers[t]) == QWEN3_OK, "select %s", tiers[t]);
            /* under emulation the scalar tier runs on the first model only, as above */
            if (emulated && i > 0 && strcmp(tiers[t], "scalar") == 0) continue;
            for (uint32_t threads = 1; threads <= 3; threads++) {
                /* under emulation one thread count per model: 1, then 3 (a split) */
                if (emulated && threads != (i == 0 ? 1u : 3u)) continue;
                CHECK(qwen3_model_resize_pool(m, threads) == QWEN3_OK, "threads %u", threads);
                check_embed(m, names[i], tiers[t], threads, first, &have_first);
            }
        }
        free(first);
        qwen3_model_free(m);
    }
    CHECK(qwen3_kernel_select(active) == QWEN3_OK, "restore %s", active);
    tu_remove_dir(dir);
}

/* ------------------------------------------------------------------------------------
 * KV cache memory: reserved, not committed, until positions are used
 * ---------------------------------------------------------------------------------- */

/* Resident bytes of this process (Linux); 0 where unknown. */
static uint64_t resident_bytes(void) {
    FILE* f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int got = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    return got == 2 ? resident * 4096ull : 0;
}

static void test_lazy_kv_cache(void) {
    char dir[1024], path[1100], tok[1200];
    if (!tu_make_temp_dir(dir, sizeof dir)) return;
    TuSpec s = tu_small_spec();
    s.vocab_size = 512;
    s.seq_len = 40960;
    snprintf(path, sizeof path, "%s/long.bin", dir);
    snprintf(tok, sizeof tok, "%s.tokenizer", path);
    CHECK(tu_write_checkpoint(path, &s) && tu_write_byte_tokenizer(tok), "write");
    Qwen3Model* m = qwen3_model_new(path, 0);
    CHECK(m != NULL, "load: %s", qwen3_get_last_error());
    if (!m) return;
    /* 2 layers x 40960 positions x 64 floats, for K and V: 42 MB if committed */
    uint64_t before = resident_bytes();
    Qwen3Context ctx;
    CHECK(qwen3_context_init(&ctx, m, 40960) == QWEN3_OK, "context: %s", qwen3_get_last_error());
    CHECK(ctx.lazy.size >= 2ull * 2 * 40960 * 64 * 4, "reserved only %zu bytes", ctx.lazy.size);
    int32_t tokens[300];
    for (int i = 0; i < 300; i++) tokens[i] = i;
    CHECK(qwen3_forward_tokens(&ctx, tokens, 300) == QWEN3_OK, "prefill: %s", qwen3_get_last_error());
    uint64_t after = resident_bytes();
    if (before && after) {
        /* 16 MB: well under the 42 MB of a committed cache, with room for what the prefill's
         * scratch leaves resident under AddressSanitizer (its redzones and the quarantine of
         * freed blocks: 9.3 MB in one run of tools/sanitize.ts, where 8 MB was the bound) */
        CHECK(after - before < 16u << 20, "a 40960-position context with 300 used costs %llu bytes",
              (unsigned long long)(after - before));
    }
    /* the far end of the cache is usable too */
    ctx.pos = 40960 - 2;
    CHECK(qwen3_forward_tokens(&ctx, tokens, 2) == QWEN3_OK, "last positions: %s",
          qwen3_get_last_error());
    CHECK(qwen3_forward_tokens(&ctx, tokens, 1) == QWEN3_ERR_CONTEXT_FULL, "position 40960 fit");
    qwen3_context_deinit(&ctx);
    qwen3_model_free(m);
    tu_remove_dir(dir);
}

/* A compact cache (q8 or f16) against the f32 one on one model: it is smaller by the
 * documented ratio (q8: 36 bytes per 32 values for fp32's 128; f16: half), its logits are
 * close to the f32 cache's but not the same bits (so it really is int8 or binary16), and
 * an unknown cache type is an error. */
static void check_compact_kv_cache(uint32_t kv_type, uint64_t num, uint64_t den, double tolerance) {
    const char* name = kv_type == QWEN3_KV_Q8 ? "q8" : "f16";
    char dir[1024], path[1100], tok[1200];
    if (!tu_make_temp_dir(dir, sizeof dir)) return;
    TuSpec s = tu_small_spec();
    s.vocab_size = 512;
    snprintf(path, sizeof path, "%s/%skv.bin", dir, name);
    snprintf(tok, sizeof tok, "%s.tokenizer", path);
    CHECK(tu_write_checkpoint(path, &s) && tu_write_byte_tokenizer(tok), "write");
    Qwen3Model* m = qwen3_model_new(path, 0);
    CHECK(m != NULL, "load: %s", qwen3_get_last_error());
    if (!m) return;
    Qwen3Context f32, q8, bad;
    CHECK(qwen3_context_init_kv(&f32, m, 200, QWEN3_KV_F32) == QWEN3_OK, "f32: %s", qwen3_get_last_error());
    CHECK(qwen3_context_init_kv(&q8, m, 200, kv_type) == QWEN3_OK, "%s: %s", name, qwen3_get_last_error());
    CHECK(qwen3_context_init_kv(&bad, m, 200, 7) == QWEN3_ERR_INVALID_ARGUMENT, "kv type 7 accepted");
    CHECK(kv_type != QWEN3_KV_Q8 || q8.kv_group == 32, "group %u", q8.kv_group);
    CHECK(f32.kv_bytes >= q8.kv_bytes * num / den - 4096 && f32.kv_bytes <= q8.kv_bytes * num / den + 4096,
          "kv bytes %llu (f32) vs %llu (%s)", (unsigned long long)f32.kv_bytes, (unsigned long long)q8.kv_bytes,
          name);
    double worst = 0.0, range = 0.0;
    int same_bits = 1, argmax_agree = 0;
    uint64_t rng = 5;
    for (uint32_t i = 0; i < 150; i++) {
        int32_t t = (int32_t)(tu_next(&rng) % s.vocab_size);
        CHECK(qwen3_forward_tokens(&f32, &t, 1) == QWEN3_OK && qwen3_forward_tokens(&q8, &t, 1) == QWEN3_OK,
              "decode %u: %s", i, qwen3_get_last_error());
        uint32_t a = 0, b = 0;
        for (uint32_t v = 0; v < s.vocab_size; v++) {
            const double d = fabs((double)f32.logits[v] - (double)q8.logits[v]);
            if (d > worst) worst = d;
            if (fabs(f32.logits[v]) > range) range = fabs(f32.logits[v]);
            if (f32.logits[v] > f32.logits[a]) a = v;
            if (q8.logits[v] > q8.logits[b]) b = v;
        }
        argmax_agree += a == b;
        if (memcmp(f32.logits, q8.logits, s.vocab_size * sizeof(float)) != 0) same_bits = 0;
    }
    fprintf(stderr, "%s kv cache: worst logit difference %.3g of a largest logit %.3g; argmax agrees %d/150\n",
            name, worst, range, argmax_agree);
    CHECK(!same_bits, "the %s cache gave the f32 cache's bits at every step", name);
    CHECK(worst < tolerance * range, "%s cache logits off by %g (largest logit %g)", name, worst, range);
    CHECK(argmax_agree >= 140, "%s: argmax agrees at only %d of 150 steps", name, argmax_agree);
    qwen3_context_deinit(&f32);
    qwen3_context_deinit(&q8);
    qwen3_model_free(m);
    tu_remove_dir(dir);
}

/* head_dim 32: 32 int8 + one fp32 scale per 32 values, 36 bytes for fp32's 128 */
static void test_q8_kv_cache(void) { check_compact_kv_cache(QWEN3_KV_Q8, 128, 36, 0.05); }

/* binary16: 2 bytes for fp32's 4. Its logits are not much closer to fp32's than int8's on
 * this random model (0.32 against 0.40 of 30): whatever perturbs the first layer flips
 * int8 roundings of the Q8 weights' quantised activations later, so the same bound. */
static void test_f16_kv_cache(void) { check_compact_kv_cache(QWEN3_KV_F16, 2, 1, 0.05); }

int main(void) {
    const char* emu = getenv("QWEN3_TEST_EMULATED");
    emulated = emu != NULL && emu[0] != '\0' && strcmp(emu, "0") != 0;
    if (emulated) fprintf(stderr, "test_transformer: emulated run: prefill lengths at block edges only\n");
    /* each part's time on stderr: under emulation they show where the minutes go */
    static const struct {
        const char* name;
        void (*run)(void);
    } parts[] = {{"rmsnorm", test_rmsnorm},
                 {"rope", test_rope},
                 {"rope_math", test_rope_math},
                 {"softmax", test_softmax},
                 {"moe_route", test_moe_route},
                 {"attention", test_attention},
                 {"forward", test_forward},
                 {"prefill_bit_identical", test_prefill_bit_identical},
                 {"embed", test_embed},
                 {"lazy_kv_cache", test_lazy_kv_cache},
                 {"q8_kv_cache", test_q8_kv_cache},
                 {"f16_kv_cache", test_f16_kv_cache}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        const double t0 = qwen3_time_seconds();
        parts[i].run();
        fprintf(stderr, "test_transformer: %s took %.2f s\n", parts[i].name, qwen3_time_seconds() - t0);
    }
    return tu_finish("test_transformer");
}
