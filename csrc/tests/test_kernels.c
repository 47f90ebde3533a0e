/* test_kernels.c - every kernel tier this CPU runs must return the scalar reference's
 * bits (memcmp-equal) on random and odd shapes, extreme values and row ranges that do
 * not start at 0, without writing past its output; the quantiser rounds half away from
 * zero; the dispatcher honours and reports QWEN3_KERNEL and qwen3_kernel_select.
 *
 *   test_kernels                      all tests; re-runs itself with QWEN3_KERNEL set
 *                                     (POSIX) to check the environment override
 *   QWEN3_KERNEL=neon test_kernels    all tests, plus: the forced tier is active if
 *                                     this CPU supports it, else the best one with a note
 * Tiers this CPU lacks are printed as SKIPPED, never counted as passed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/prctl.h>
#endif
#if !defined(_WIN32)
#include <spawn.h>
#include <sys/wait.h>
extern char** environ;
#endif

#include "cpu.h"
#include "error.h"
#include "kernels.h"
#include "fmaf.h"
#include "qwen3_inference.h"
#include "test_util.h"

/* ---- random numbers (xorshift64*) ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd_u32(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static uint32_t rnd_below(uint32_t n) { return rnd_u32() % n; }

static float rnd_unit(void) { return (float)(rnd_u32() >> 8) / 16777216.0f; } /* [0, 1) */

/* ---- test matrices ---- */

typedef enum {
    FILL_RANDOM,   /* uniform int8 weights incl. -128, random activations, random scales */
    FILL_EXTREME,  /* weights and activations all +-127 */
    FILL_SPARSE,   /* many all-zero groups with scale 0 on both sides */
    FILL_HUGE,     /* scales so large that products overflow to +inf */
    FILL_TINY,     /* subnormal scales */
} Fill;

typedef struct {
    Qwen3Q8Matrix m;
    Qwen3Q8Vector v;
    int8_t* wq;
    float* ws;
    int8_t* xq;
    float* xs;
    float* xf;
} Case;

static void case_deinit(Case* c) {
    free(c->wq);
    free(c->ws);
    free(c->xq);
    free(c->xs);
    free(c->xf);
}

static int case_init(Case* c, uint32_t rows, uint32_t cols, uint32_t gs, Fill fill) {
    memset(c, 0, sizeof *c);
    const uint32_t ng = cols / gs;
    c->wq = malloc((size_t)rows * cols);
    c->ws = malloc((size_t)rows * ng * sizeof(float));
    c->xq = malloc(cols);
    c->xs = malloc(ng * sizeof(float));
    c->xf = malloc(cols * sizeof(float));
    if (!c->wq || !c->ws || !c->xq || !c->xs || !c->xf) {
        case_deinit(c);
        return 0;
    }
    for (size_t i = 0; i < (size_t)rows * cols; i++) {
        switch (fill) {
        case FILL_EXTREME: c->wq[i] = (rnd_u32() & 1) ? 127 : -127; break;
        case FILL_HUGE: c->wq[i] = (int8_t)(rnd_below(127) + 1); break;
        default: c->wq[i] = (int8_t)(rnd_u32() & 0xff); break;
        }
    }
    for (size_t i = 0; i < (size_t)rows * ng; i++) {
        switch (fill) {
        case FILL_HUGE: c->ws[i] = 1e34f * (1.0f + rnd_unit()); break;
        case FILL_TINY: c->ws[i] = 1e-39f * rnd_unit(); break;
        default: c->ws[i] = 0.05f * rnd_unit(); break;
        }
    }
    for (uint32_t i = 0; i < cols; i++) {
        switch (fill) {
        case FILL_EXTREME: c->xf[i] = (rnd_u32() & 1) ? 3.0f : -3.0f; break;
        case FILL_HUGE: c->xf[i] = 1.0f + rnd_unit(); break;
        default: c->xf[i] = (rnd_unit() - 0.5f) * 8.0f; break;
        }
    }
    if (fill == FILL_SPARSE) {
        for (uint32_t g = 0; g < ng; g++) {
            if (rnd_below(3) == 0) {
                for (uint32_t i = 0; i < gs; i++) c->xf[g * gs + i] = 0.0f;
            }
        }
        for (uint32_t r = 0; r < rows; r++) {
            for (uint32_t g = 0; g < ng; g++) {
                if (rnd_below(3) == 0) {
                    memset(c->wq + (size_t)r * cols + (size_t)g * gs, 0, gs);
                    c->ws[(size_t)r * ng + g] = 0.0f;
                }
            }
        }
    }
    c->m = (Qwen3Q8Matrix){.q = c->wq, .s = c->ws, .rows = rows, .cols = cols, .group_size = gs};
    c->v = (Qwen3Q8Vector){.q = c->xq, .s = c->xs, .n = cols, .group_size = gs};
    qwen3_quantize_q8(c->xf, &c->v);
    if (fill == FILL_EXTREME) {
        /* +-3 quantises to +-127 with scale 3/127: the largest products a group can hold. */
        for (uint32_t i = 0; i < cols; i++) {
            if (c->xq[i] != 127 && c->xq[i] != -127) return 0;
        }
    }
    return 1;
}

/* ---- one tier against scalar ---- */

#define GUARD 24 /* floats past the end of the output that must stay untouched */

static uint32_t compared;

/* Runs rows [rb, re) with both kernels; returns 1 when memcmp-equal and in bounds. */
static int compare_range(const Qwen3KernelTable* t, const Case* c, uint32_t rb, uint32_t re, const char* what) {
    const uint32_t n = re - rb;
    float* want = malloc((n + GUARD) * sizeof(float));
    float* got = malloc((n + GUARD) * sizeof(float));
    if (!want || !got) {
        free(want);
        free(got);
        CHECK(0, "out of memory");
        return 0;
    }
    const float sentinel = -12345.678f;
    for (uint32_t i = 0; i < n + GUARD; i++) want[i] = got[i] = sentinel;
    qwen3_kernels_scalar.matvec_q8(want, &c->m, &c->v, rb, re);
    t->matvec_q8(got, &c->m, &c->v, rb, re);
    compared++;
    int ok = 1;
    for (uint32_t i = n; i < n + GUARD; i++) {
        if (memcmp(&got[i], &sentinel, sizeof sentinel) != 0) {
            CHECK(0, "%s: %s rows %u..%u wrote past its output (slot %u)", t->name, what, rb, re, i - n);
            ok = 0;
            break;
        }
    }
    if (ok && memcmp(want, got, n * sizeof(float)) != 0) {
        for (uint32_t i = 0; i < n; i++) {
            if (memcmp(&want[i], &got[i], sizeof(float)) != 0) {
                CHECK(0, "%s: %s (%ux%u, group %u) rows %u..%u: row %u = %.9g, scalar %.9g", t->name, what,
                      c->m.rows, c->m.cols, c->m.group_size, rb, re, rb + i, got[i], want[i]);
                break;
            }
        }
        ok = 0;
    }
    free(want);
    free(got);
    return ok;
}

static void test_tier(const Qwen3KernelTable* t) {
    const uint32_t fails_before = (uint32_t)tu_failures;
    const uint32_t compared_before = compared;
    /* Group sizes: the real 64, the tests' 32, 128, and odd ones (96 = 64 + 32, 48, 16,
     * 8, 24) that send SIMD tiers into their partial-chunk or generic paths. */
    static const uint32_t group_sizes[] = {32, 64, 128, 96, 48, 16, 8, 24};
    for (size_t gi = 0; gi < sizeof group_sizes / sizeof group_sizes[0]; gi++) {
        const uint32_t gs = group_sizes[gi];
        for (uint32_t mult = 1; mult <= 5; mult++) {
            const uint32_t cols = gs * mult;
            for (uint32_t rows = 1; rows <= 67; rows += (mult == 1 ? 1 : 5)) {
                Case c;
                if (!case_init(&c, rows, cols, gs, FILL_RANDOM)) {
                    CHECK(0, "case_init failed");
                    return;
                }
                char what[64];
                snprintf(what, sizeof what, "random");
                if (!compare_range(t, &c, 0, rows, what)) {
                    case_deinit(&c);
                    return;
                }
                /* A range that starts inside the matrix, as a thread's share does. */
                const uint32_t rb = rnd_below(rows);
                const uint32_t re = rb + 1 + rnd_below(rows - rb);
                if (!compare_range(t, &c, rb, re, "random sub-range")) {
                    case_deinit(&c);
                    return;
                }
                case_deinit(&c);
            }
        }
    }
    static const struct {
        Fill fill;
        const char* name;
    } fills[] = {
        {FILL_EXTREME, "all +-127"},
        {FILL_SPARSE, "zero groups with scale 0"},
        {FILL_HUGE, "overflow to inf"},
        {FILL_TINY, "subnormal scales"},
    };
    for (size_t fi = 0; fi < sizeof fills / sizeof fills[0]; fi++) {
        for (size_t gi = 0; gi < 4; gi++) {
            const uint32_t gs = group_sizes[gi];
            for (uint32_t rows = 1; rows <= 67; rows += 11) {
                Case c;
                const uint32_t cols = gs * (1 + rnd_below(8));
                if (!case_init(&c, rows, cols, gs, fills[fi].fill)) {
                    CHECK(0, "case_init(%s) failed", fills[fi].name);
                    return;
                }
                const uint32_t rb = rnd_below(rows);
                compare_range(t, &c, 0, rows, fills[fi].name);
                compare_range(t, &c, rb, rows, fills[fi].name);
                case_deinit(&c);
            }
        }
    }
    /* Activations of -128, which the quantiser makes by wrapping (quant.c), against
     * weights of both signs including -128. */
    for (uint32_t rows = 1; rows <= 40; rows += 13) {
        Case c;
        if (!case_init(&c, rows, 256, 64, FILL_RANDOM)) {
            CHECK(0, "case_init failed");
            return;
        }
        for (uint32_t i = 0; i < 256; i += 1 + rnd_below(9)) c.xq[i] = -128;
        compare_range(t, &c, 0, rows, "activations of -128");
        case_deinit(&c);
    }
    /* Qwen3-0.6B's shapes (q/k/v/gate/up read 1024 columns, down reads 3072), a slice of
     * rows each, as a thread would get. */
    static const uint32_t real_cols[] = {1024, 3072};
    for (size_t i = 0; i < 2; i++) {
        Case c;
        if (!case_init(&c, 200, real_cols[i], 64, FILL_RANDOM)) {
            CHECK(0, "case_init failed");
            return;
        }
        compare_range(t, &c, 0, 200, "Qwen3-0.6B shape");
        compare_range(t, &c, 37, 163, "Qwen3-0.6B shape");
        case_deinit(&c);
    }
    printf("  %-11s ok: %u comparisons memcmp-equal to scalar%s\n", t->name, compared - compared_before,
           (uint32_t)tu_failures != fails_before ? " (with FAILURES above)" : "");
}

static void test_matmul_tier(const Qwen3KernelTable* t);
static void test_attention_tier(const Qwen3KernelTable* t);
static void test_quantize_tier(const Qwen3KernelTable* t);
static void test_elementwise_tier(const Qwen3KernelTable* t);
static void test_sampler_softmax_tier(const Qwen3KernelTable* t);
static void test_exp_ref(void);
static void test_softmax_exp_order(void);
static void test_fmaf_soft(void);

static void test_all_tiers(void) {
    printf("CPU features: %s\n", qwen3_cpu_features());
    const char* const* names = qwen3_kernels_all_names();
    uint32_t ran = 0;
    for (uint32_t i = 0; names[i]; i++) {
        const Qwen3KernelTable* t = qwen3_kernels_find(names[i]);
        if (t == NULL) {
#if defined(__x86_64__) || defined(_M_X64)
            if (strcmp(names[i], "amx") == 0) continue; /* test_amx prints its one SKIPPED line */
#endif
            printf("  %-11s SKIPPED: not supported by this CPU\n", names[i]);
            continue;
        }
        CHECK(strcmp(t->name, names[i]) == 0, "find(%s) returned tier %s", names[i], t->name);
        /* scalar's batched product is checked too: it is defined through its matvec */
        test_matmul_tier(t);
        if (strcmp(names[i], "scalar") == 0) continue; /* the reference itself */
        test_tier(t);
        test_attention_tier(t);
        test_quantize_tier(t);
        test_elementwise_tier(t);
        test_sampler_softmax_tier(t);
        ran++;
    }
    printf("  SIMD tiers tested: %u\n", ran);
}

/* ---- batched product against per-token scalar matvec ---- */

/* Rows [rb, re) of c's matrix times n_tok activation vectors (quantised from random
 * floats, with some all-zero and some extreme tokens) through fn (the matmul_q8 of tier
 * `name`), each output memcmp-equal to scalar matvec of that token; the gaps between the
 * tokens' outputs (out_stride > re - rb) stay untouched. */
static int compare_matmul(const char* name, Qwen3MatmulQ8Fn fn, const Case* c, uint32_t n_tok, uint32_t rb,
                          uint32_t re, const char* what) {
    const uint32_t cols = c->m.cols, gs = c->m.group_size, ng = cols / gs, n = re - rb;
    const size_t stride = n + 3;
    float* xf = malloc((size_t)cols * sizeof(float));
    Qwen3Q8Batch b = {malloc((size_t)n_tok * cols), malloc((size_t)n_tok * ng * sizeof(float)),
                      malloc((size_t)n_tok * ng * sizeof(int32_t)), cols, n_tok, gs};
    float* want = malloc(((size_t)n_tok * stride + GUARD) * sizeof(float));
    float* got = malloc(((size_t)n_tok * stride + GUARD) * sizeof(float));
    int ok = xf && b.q && b.s && b.sums && want && got;
    CHECK(ok, "out of memory");
    for (uint32_t k = 0; ok && k < n_tok; k++) {
        for (uint32_t i = 0; i < cols; i++) {
            switch (k % 5) {
            case 3: xf[i] = 0.0f; break;
            case 4: xf[i] = (rnd_u32() & 1) ? 3.0f : -3.0f; break;
            default: xf[i] = (rnd_unit() - 0.5f) * (float)(1 + k); break;
            }
        }
        qwen3_quantize_q8_token(xf, &b, k);
        if (k % 7 == 6) {
            /* -128, which the quantiser makes only by wrapping (quant.c): tiers whose
             * products need x > -128 must notice it */
            int8_t* q = b.q + (size_t)k * cols;
            for (uint32_t i = k % 3; i < cols; i += 5) q[i] = -128;
            for (uint32_t g = 0; g < ng; g++) {
                int32_t sum = 0;
                for (uint32_t i = 0; i < gs; i++) sum += q[g * gs + i];
                b.sums[(size_t)k * ng + g] = sum;
            }
        }
    }
    const float sentinel = -12345.678f;
    for (size_t i = 0; ok && i < (size_t)n_tok * stride + GUARD; i++) want[i] = got[i] = sentinel;
    for (uint32_t k = 0; ok && k < n_tok; k++) {
        const Qwen3Q8Vector v = qwen3_q8_batch_row(&b, k);
        qwen3_kernels_scalar.matvec_q8(want + (size_t)k * stride, &c->m, &v, rb, re);
    }
    if (ok) fn(got, stride, &c->m, &b, rb, re);
    compared++;
    if (ok && memcmp(want, got, ((size_t)n_tok * stride + GUARD) * sizeof(float)) != 0) {
        for (size_t i = 0; i < (size_t)n_tok * stride + GUARD; i++) {
            if (memcmp(&want[i], &got[i], sizeof(float)) != 0) {
                const uint32_t k = (uint32_t)(i / stride), r = (uint32_t)(i % stride);
                CHECK(0, "%s matmul: %s (%ux%u, group %u, %u tokens) rows %u..%u: token %u slot %u = %.9g, want %.9g%s",
                      name, what, c->m.rows, cols, gs, n_tok, rb, re, k, r, got[i], want[i],
                      r >= n ? " (outside the output)" : "");
                break;
            }
        }
        ok = 0;
    } else if (!ok) {
        ok = 0;
    }
    free(xf);
    free(b.q);
    free(b.s);
    free(b.sums);
    free(want);
    free(got);
    return ok;
}

static void test_matmul_tier(const Qwen3KernelTable* t) {
    const uint32_t fails_before = (uint32_t)tu_failures, compared_before = compared;
    /* 1024 columns is one packed chunk of the AVX-512 kernel: 1088 and 3072 take several;
     * group sizes 4, 12, 20 are multiples of 4 but not of 16; 8 x 3 = 24 columns is less
     * than one 64-byte piece. */
    static const struct {
        uint32_t gs, cols;
    } shapes[] = {{32, 64}, {64, 1024}, {64, 1088}, {32, 1056}, {128, 3072}, {16, 96}, {4, 40},
                  {12, 36}, {20, 1100}, {8, 24}, {1024, 2048}, {6, 18}};
    static const uint32_t tokens[] = {1, 2, 3, 5, 6, 7, 12, 13, 17, 64};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        for (uint32_t rows = 1; rows <= 100; rows += (rows < 34 ? 1 : 13)) {
            if (shapes[si].cols > 1024 && rows % 5 != 1) continue;
            Case c;
            if (!case_init(&c, rows, shapes[si].cols, shapes[si].gs, FILL_RANDOM)) {
                CHECK(0, "case_init failed");
                return;
            }
            const uint32_t n_tok = tokens[rnd_below(sizeof tokens / sizeof tokens[0])];
            int ok = compare_matmul(t->name, t->matmul_q8, &c, n_tok, 0, rows, "random");
            const uint32_t rb = rnd_below(rows), re = rb + 1 + rnd_below(rows - rb);
            if (ok) ok = compare_matmul(t->name, t->matmul_q8, &c, 1 + rnd_below(20), rb, re, "random sub-range");
            case_deinit(&c);
            if (!ok) return;
        }
    }
    /* Every token count of a batched decode (the small-batch kernels take 2 .. 16 tokens
     * and hand the rest on), on the group sizes they serve (32 with an odd group count,
     * 64, 128) and one they pass on (16), each over all rows and a random sub-range. */
    static const struct {
        uint32_t gs, cols, rows;
    } small[] = {{32, 1056, 37}, {64, 1024, 35}, {128, 512, 16}, {16, 96, 20}};
    for (size_t si = 0; si < sizeof small / sizeof small[0]; si++) {
        Case c;
        if (!case_init(&c, small[si].rows, small[si].cols, small[si].gs, FILL_RANDOM)) {
            CHECK(0, "case_init failed");
            return;
        }
        int ok = 1;
        for (uint32_t n_tok = 1; ok && n_tok <= 20; n_tok++) {
            ok = compare_matmul(t->name, t->matmul_q8, &c, n_tok, 0, c.m.rows, "every token count");
            const uint32_t rb = rnd_below(c.m.rows), re = rb + 1 + rnd_below(c.m.rows - rb);
            if (ok) ok = compare_matmul(t->name, t->matmul_q8, &c, n_tok, rb, re, "every token count, sub-range");
        }
        case_deinit(&c);
        if (!ok) return;
    }
    static const Fill fills[] = {FILL_EXTREME, FILL_SPARSE, FILL_HUGE, FILL_TINY};
    for (size_t fi = 0; fi < 4; fi++) {
        Case c;
        if (!case_init(&c, 45, 1152, 64, fills[fi])) {
            CHECK(0, "case_init failed");
            return;
        }
        compare_matmul(t->name, t->matmul_q8, &c, 9, 0, 45, "extreme fill");
        compare_matmul(t->name, t->matmul_q8, &c, 13, 7, 40, "extreme fill");
        case_deinit(&c);
    }
    printf("  %-11s matmul ok: %u comparisons memcmp-equal to scalar matvec%s\n", t->name,
           compared - compared_before, (uint32_t)tu_failures != fails_before ? " (with FAILURES above)" : "");
}

/* ---- the amx tier's tiling, on emulated tiles everywhere and on real ones where granted ---- */

#if defined(__x86_64__) || defined(_M_X64)
static uint32_t amx_emu_ran, amx_emu_passed_on, amx_emu_faults, amx_emu_misrouted;

/* qwen3_matmul_q8_amx_emulated as a Qwen3MatmulQ8Fn: shapes it passes on (to avx512vnni in
 * the tier) take the scalar product here, so the comparison still checks every output. */
static void amx_emulated_matmul(float* out, size_t ld, const Qwen3Q8Matrix* w, const Qwen3Q8Batch* x, uint32_t rb,
                                uint32_t re) {
    const uint32_t gs = w->group_size;
    const int tiles = x->n_tokens >= AMX_MIN_TOKENS && gs % 64 == 0 && gs <= 1024;
    const int rc = qwen3_matmul_q8_amx_emulated(out, ld, w, x, rb, re);
    if (rc == -1) amx_emu_faults++;
    if ((rc == 1) != tiles) amx_emu_misrouted++;
    if (rc == 1) amx_emu_ran++;
    if (rc == 0) {
        amx_emu_passed_on++;
        qwen3_kernels_scalar.matmul_q8(out, ld, w, x, rb, re);
    }
}

/* Every path of kernels_amx_body.h: group sizes 64 to 1024 (one to sixteen 64-byte steps
 * per group, passes of 1024, 960 or one group of columns), partial 16-row halves, token
 * counts around the 16-token tiles, the 32-token pairs and the 128- or 64-token passes, row
 * ranges split as the thread pool splits them (multiples of 32) and oddly, extreme values. */
static void test_amx_with(const char* name, Qwen3MatmulQ8Fn fn) {
    const uint32_t fails_before = (uint32_t)tu_failures, compared_before = compared;
    static const struct {
        uint32_t gs, cols;
    } shapes[] = {{64, 64},   {64, 128},   {64, 576},    {64, 1088},  {128, 1152}, {192, 1344}, {256, 1536},
                  {512, 1024}, {576, 1152}, {1024, 2048}, {32, 1056}, {16, 96},    {2048, 4096}};
    static const uint32_t tokens[] = {2, 3, 15, 16, 17, 31, 32, 33, 47, 64, 65, 97, 127, 128, 130, 161, 257};
    static const uint32_t row_counts[] = {1, 5, 16, 17, 31, 32, 33, 48, 63, 100};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        for (size_t ri = 0; ri < sizeof row_counts / sizeof row_counts[0]; ri++) {
            const uint32_t rows = row_counts[ri];
            if (shapes[si].cols > 1100 && rows != 17 && rows != 33 && rows != 100) continue;
            Case c;
            if (!case_init(&c, rows, shapes[si].cols, shapes[si].gs, FILL_RANDOM)) {
                CHECK(0, "case_init failed");
                return;
            }
            const uint32_t n_tok = tokens[rnd_below(sizeof tokens / sizeof tokens[0])];
            int ok = compare_matmul(name, fn, &c, n_tok, 0, rows, "random");
            const uint32_t rb = rnd_below(rows), re = rb + 1 + rnd_below(rows - rb);
            if (ok) ok = compare_matmul(name, fn, &c, tokens[rnd_below(9)], rb, re, "random sub-range");
            /* thread splits: 32-row tasks, then three odd pieces */
            for (uint32_t r0 = 0; ok && rows > 32 && r0 < rows; r0 += 32) {
                ok = compare_matmul(name, fn, &c, 19, r0, r0 + 32 < rows ? r0 + 32 : rows, "32-row task");
            }
            if (ok && rows >= 3) {
                const uint32_t a = 1 + rnd_below(rows - 2), b = a + 1 + rnd_below(rows - a - 1);
                ok = compare_matmul(name, fn, &c, 34, 0, a, "odd split") && compare_matmul(name, fn, &c, 34, a, b, "odd split") &&
                     compare_matmul(name, fn, &c, 34, b, rows, "odd split");
            }
            case_deinit(&c);
            if (!ok) return;
        }
    }
    /* every token count from 1 to 70 on one small matrix, rows from 3 */
    Case c;
    if (!case_init(&c, 40, 192, 64, FILL_RANDOM)) {
        CHECK(0, "case_init failed");
        return;
    }
    for (uint32_t n_tok = 1; n_tok <= 70; n_tok++) {
        if (!compare_matmul(name, fn, &c, n_tok, 3, 40, "token sweep")) break;
    }
    case_deinit(&c);
    static const Fill fills[] = {FILL_EXTREME, FILL_SPARSE, FILL_HUGE, FILL_TINY};
    for (size_t fi = 0; fi < 4; fi++) {
        if (!case_init(&c, 45, 1152, 64, fills[fi])) {
            CHECK(0, "case_init failed");
            return;
        }
        compare_matmul(name, fn, &c, 33, 0, 45, "extreme fill");
        compare_matmul(name, fn, &c, 65, 7, 40, "extreme fill");
        case_deinit(&c);
    }
    printf("  %-11s matmul ok: %u comparisons memcmp-equal to scalar matvec%s\n", name, compared - compared_before,
           (uint32_t)tu_failures != fails_before ? " (with FAILURES above)" : "");
}

static void test_amx(void) {
    test_amx_with("amx (emulated tiles)", amx_emulated_matmul);
    CHECK(amx_emu_faults == 0, "the emulated tiles met %u operation(s) the hardware would fault on", amx_emu_faults);
    CHECK(amx_emu_misrouted == 0, "%u call(s) took the wrong path (tiles for group sizes 64k <= 1024 and >= 2 tokens)",
          amx_emu_misrouted);
    CHECK(amx_emu_ran > 100 && amx_emu_passed_on > 10, "tile runs %u, passed on %u", amx_emu_ran, amx_emu_passed_on);
    printf("  amx emulated: %u calls on tiles, %u passed on to avx512vnni's shapes\n", amx_emu_ran, amx_emu_passed_on);
#if defined(__linux__)
    /* The permission request (cpu.c) is harmless without AMX: Linux answers with an error. With
     * AMX-INT8 in CPUID and XCR0, a kernel that enabled XTILEDATA in XCR0 must grant it. */
    const char* permit = qwen3_cpu_amx_permit();
    printf("  amx permission from Linux: %s\n", permit ? permit : "granted");
    if (qwen3_cpu_flags() & QWEN3_CPU_AMX_INT8) {
        CHECK(permit == NULL, "AMX in CPUID and XCR0 but: %s", permit);
    } else {
        CHECK(permit != NULL && strstr(permit, "arch_prctl") != NULL, "no AMX, yet permission: %s",
              permit ? permit : "granted");
    }
#endif
    const Qwen3KernelTable* amx = qwen3_kernels_find("amx");
    if (amx == NULL) {
        printf("  amx (real tiles) SKIPPED: %s\n", qwen3_amx_unavailable());
    } else {
        test_amx_with("amx (real tiles)", amx->matmul_q8);
    }
}
#endif

/* ---- activation quantisation against the scalar reference ---- */

static void test_quantize_tier(const Qwen3KernelTable* t) {
    const uint32_t fails_before = (uint32_t)tu_failures;
    static const uint32_t group_sizes[] = {16, 32, 64, 128, 8, 24, 48};
    uint32_t runs = 0;
    for (size_t gi = 0; gi < sizeof group_sizes / sizeof group_sizes[0]; gi++) {
        const uint32_t gs = group_sizes[gi];
        for (uint32_t trial = 0; trial < 40; trial++) {
            const uint32_t ng = 1 + rnd_below(9), n = gs * ng, tokens = 3, tok = rnd_below(tokens);
            float* x = malloc(n * sizeof(float));
            Qwen3Q8Batch a = {malloc((size_t)n * tokens), malloc((size_t)ng * tokens * sizeof(float)),
                              malloc((size_t)ng * tokens * sizeof(int32_t)), n, tokens, gs};
            Qwen3Q8Batch b = {malloc((size_t)n * tokens), malloc((size_t)ng * tokens * sizeof(float)),
                              malloc((size_t)ng * tokens * sizeof(int32_t)), n, tokens, gs};
            if (!x || !a.q || !a.s || !a.sums || !b.q || !b.s || !b.sums) {
                CHECK(0, "out of memory");
                return;
            }
            memset(a.q, 0x5a, (size_t)n * tokens), memset(b.q, 0x5a, (size_t)n * tokens);
            memset(a.s, 0x5a, (size_t)ng * tokens * 4), memset(b.s, 0x5a, (size_t)ng * tokens * 4);
            memset(a.sums, 0x5a, (size_t)ng * tokens * 4), memset(b.sums, 0x5a, (size_t)ng * tokens * 4);
            for (uint32_t i = 0; i < n; i++) {
                const uint32_t kind = trial < 10 ? 0 : rnd_below(12);
                switch (kind) {
                case 1: x[i] = 0.0f; break;
                case 2: x[i] = -0.0f; break;
                case 3: x[i] = NAN; break;
                case 4: x[i] = (rnd_u32() & 1) ? INFINITY : -INFINITY; break;
                case 5: x[i] = 1e-40f * (rnd_unit() - 0.5f); break; /* subnormal: values past 127 wrap */
                case 6: x[i] = 3e38f * (rnd_unit() - 0.5f); break;
                case 7: x[i] = (float)((int)rnd_below(255) - 127) * 0.5f; break; /* exact halves */
                default: x[i] = (rnd_unit() - 0.5f) * 10.0f; break;
                }
            }
            /* a group of zeros, and one whose only non-zero values are subnormal */
            if (trial % 5 == 1) memset(x, 0, gs * sizeof(float));
            if (trial % 7 == 2) {
                for (uint32_t i = 0; i < gs; i++) x[i] = i % 3 ? 0.0f : 1.4e-45f * (float)(i % 5);
            }
            /* a group whose max is 127, so the scale is 1 and x.5 values are exact ties */
            if (trial % 4 == 3) {
                for (uint32_t i = 0; i < gs; i++) x[gs * (ng - 1) + i] = (float)((int)rnd_below(253) - 126) + 0.5f;
                x[gs * (ng - 1) + rnd_below(gs)] = (rnd_u32() & 1) ? 127.0f : -127.0f;
            }
            qwen3_quantize_q8_token(x, &a, tok);
            t->quantize_row(x, &b, tok);
            const int same = memcmp(a.q, b.q, (size_t)n * tokens) == 0 &&
                             memcmp(a.s, b.s, (size_t)ng * tokens * 4) == 0 &&
                             memcmp(a.sums, b.sums, (size_t)ng * tokens * 4) == 0;
            CHECK(same, "%s quantize_row: group %u, %u values (trial %u) differs from the scalar reference", t->name,
                  gs, n, trial);
            runs++;
            free(x), free(a.q), free(a.s), free(a.sums), free(b.q), free(b.s), free(b.sums);
            if (!same) return;
        }
    }
    printf("  %-11s quantize ok: %u rows memcmp-equal to the scalar reference%s\n", t->name, runs,
           (uint32_t)tu_failures != fails_before ? " (with FAILURES above)" : "");
}

/* ---- exp, softmax, SiLU ---- */

/* qwen3_exp_ref is within about 1 ulp of e^x: against the C library's double exp (its
 * error ~1e-16 is far below an fp32 ulp), over the range where e^x is a nonzero finite
 * fp32 (subnormals included, their ulp being 2^-149), plus underflow to 0 and overflow to
 * inf. docs/numerics.md quotes the bound measured here and the share of results that are
 * not the correctly rounded value. */
static void test_exp_ref(void) {
    uint32_t differ = 0, total = 0;
    double worst = 0.0;
    float worst_x = 0.0f;
    for (uint32_t i = 0; i < 2000000; i++) {
        const float x = i < 1000 ? (float)((int)i - 500) * 0.25f : (rnd_unit() - 0.5386f) * 193.0f;
        const double want = exp((double)x);
        const float got = qwen3_exp_ref(x);
        total++;
        if (got != (float)want) differ++;
        if (isinf((float)want)) {
            CHECK(isinf(got), "qwen3_exp_ref(%.9g) = %.9g, want inf", x, got);
            continue;
        }
        int e;
        frexp(want, &e);
        const double ulp = e - 24 < -149 ? 0x1p-149 : ldexp(1.0, e - 24);
        const double err = fabs((double)got - want) / ulp;
        if (err > worst) {
            worst = err;
            worst_x = x;
        }
    }
    CHECK(worst <= 1.05, "qwen3_exp_ref is %.3f ulp from e^x at x = %.9g", worst, worst_x);
    CHECK(differ <= total / 8, "qwen3_exp_ref differs from (float)exp(double) on %u of %u values", differ, total);
    CHECK(qwen3_exp_ref(0.0f) == 1.0f && qwen3_exp_ref(-200.0f) == 0.0f && isinf(qwen3_exp_ref(89.0f)) &&
              qwen3_exp_ref(-INFINITY) == 0.0f && isinf(qwen3_exp_ref(INFINITY)) && isnan(qwen3_exp_ref(NAN)),
          "qwen3_exp_ref special values");
    printf("exp: at most %.3f ulp from e^x (x = %.9g); %u of %u values differ from (float)exp(double)\n", worst,
           worst_x, differ, total);
}

/* The reference softmax_exp's sum is the documented one (kernels.h): 16 lanes by index
 * mod 16, folded 8, 4, 2, 1, written out here for one length. The values are chosen so
 * that the index-order sum rounds differently (checked), so the test tells them apart. */
static void test_softmax_exp_order(void) {
    enum { N = 101 };
    float x[N], e[N];
    for (uint32_t i = 0; i < N; i++) x[i] = -(float)((i * 37) % 101) * 0.071f;
    x[5] = 0.5f; /* the max */
    for (uint32_t i = 0; i < N; i++) e[i] = qwen3_exp_ref(x[i] - 0.5f);
    float lane[16];
    for (uint32_t l = 0; l < 16; l++) {
        lane[l] = 0.0f;
        for (uint32_t i = l; i < N; i += 16) lane[l] = lane[l] + e[i];
    }
    for (uint32_t w = 8; w >= 1; w /= 2) {
        for (uint32_t l = 0; l < w; l++) lane[l] = lane[l] + lane[l + w];
    }
    float in_order = 0.0f;
    for (uint32_t i = 0; i < N; i++) in_order += e[i];
    const uint32_t n = N;
    float sum;
    qwen3_softmax_exp_rows_ref(x, N, 1, &n, &sum);
    CHECK(in_order != lane[0], "softmax_exp test data: both orders give %a, pick other values", (double)in_order);
    CHECK(memcmp(x, e, sizeof e) == 0, "softmax_exp: the weights are not exp(x - max)");
    CHECK(memcmp(&sum, &lane[0], sizeof sum) == 0, "softmax_exp: sum %a, want the lane order's %a (index order: %a)",
          (double)sum, (double)lane[0], (double)in_order);
}

/* ---- fused multiply-add ---- */

#if defined(__x86_64__) || defined(_M_X64)
#define HW_FMA_AVAILABLE() ((qwen3_cpu_flags() & QWEN3_CPU_FMA) != 0)
__attribute__((target("fma"))) static float hw_fmaf(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#elif defined(__aarch64__) || defined(_M_ARM64)
#define HW_FMA_AVAILABLE() 1
static float hw_fmaf(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
#else
#define HW_FMA_AVAILABLE() 0
static float hw_fmaf(float a, float b, float c) { return qwen3_fmaf_soft(a, b, c); }
#endif

/* qwen3_fmaf_soft, the attention's fused multiply-add where the CPU has no FMA: on cases
 * where rounding the double sum again goes the wrong way (so the test can fail), and
 * against the FMA instruction on random operands where the CPU has one. */
static void test_fmaf_soft(void) {
    uint32_t hard = 0, compared = 0;
    for (uint32_t i = 0; i < 4000; i++) {
        /* c = C * 2^E (C odd, 24 bits), a * b = 2^(E-1) - 2^(E-47): the double sum is the
         * midpoint above c, the exact sum just below it, so the answer is c */
        const int E = (int)rnd_below(60) - 30;
        const float sign = (i & 1) ? -1.0f : 1.0f;
        const float c = sign * ldexpf((float)((1u << 23) + 2u * rnd_below(1u << 22) + 1u), E);
        const float a = sign * ldexpf(1.0f + 0x1p-23f, E - 1), b = 1.0f - 0x1p-23f;
        const float got = qwen3_fmaf_soft(a, b, c);
        if ((float)((double)a * (double)b + (double)c) != c) hard++;
        CHECK(got == c, "qwen3_fmaf_soft(%a, %a, %a) = %a, want %a", a, b, c, got, c);
        if (HW_FMA_AVAILABLE()) CHECK(hw_fmaf(a, b, c) == c, "the FMA instruction disagrees on %a", c);
    }
    CHECK(hard == 4000, "only %u of 4000 cases round twice the wrong way", hard);
    if (HW_FMA_AVAILABLE()) {
        for (uint32_t i = 0; i < 2000000; i++) {
            const float a = (rnd_unit() - 0.5f) * ldexpf(1.0f, (int)rnd_below(40) - 20);
            const float b = (rnd_unit() - 0.5f) * ldexpf(1.0f, (int)rnd_below(40) - 20);
            const float c = (i & 1) ? -(float)((double)a * (double)b) * (1.0f + (rnd_unit() - 0.5f) * 0x1p-18f)
                                    : (rnd_unit() - 0.5f) * ldexpf(1.0f, (int)rnd_below(60) - 30);
            const float want = hw_fmaf(a, b, c), got = qwen3_fmaf_soft(a, b, c);
            compared++;
            if (memcmp(&want, &got, sizeof got) != 0) {
                CHECK(0, "qwen3_fmaf_soft(%a, %a, %a) = %a, the FMA instruction %a", a, b, c, got, want);
                break;
            }
        }
    }
    printf("fmaf: %u double-rounding cases right; %u random operands %s\n", hard, compared,
           HW_FMA_AVAILABLE() ? "equal to the FMA instruction" : "(no FMA instruction here to compare)");
}

/* Equal bits, except that any NaN matches any NaN (which NaN an operation returns when
 * it meets one depends on operand order, which compilers may swap). */
static int same_floats(const float* a, const float* b, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0 && !(isnan(a[i]) && isnan(b[i]))) return 0;
    }
    return 1;
}

static void test_elementwise_tier(const Qwen3KernelTable* t) {
    const uint32_t fails_before = (uint32_t)tu_failures;
    uint32_t runs = 0;
    for (uint32_t trial = 0; trial < 300; trial++) {
        const uint32_t n = 1 + rnd_below(trial < 100 ? 40 : 700);
        float* a = malloc((n + GUARD) * sizeof(float));
        float* b = malloc((n + GUARD) * sizeof(float));
        float* u = malloc(n * sizeof(float));
        if (!a || !b || !u) {
            CHECK(0, "out of memory");
            return;
        }
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t kind = trial % 4 == 3 ? rnd_below(10) : 0;
            switch (kind) {
            case 1: a[i] = -INFINITY; break;
            case 2: a[i] = NAN; break;
            case 3: a[i] = INFINITY; break;
            case 4: a[i] = -1e30f; break;
            case 5: a[i] = -0.0f; break;
            default: a[i] = (rnd_unit() - 0.5f) * (trial % 2 ? 60.0f : 6.0f); break;
            }
            u[i] = (rnd_unit() - 0.5f) * 4.0f;
        }
        for (uint32_t i = n; i < n + GUARD; i++) a[i] = -5.5f;
        memcpy(b, a, (n + GUARD) * sizeof(float));
        float sa = -1.0f, sb = -2.0f;
        qwen3_softmax_exp_rows_ref(a, n, 1, &n, &sa);
        t->softmax_exp(b, n, 1, &n, &sb);
        CHECK(same_floats(a, b, n + GUARD) && same_floats(&sa, &sb, 1),
              "%s softmax_exp of %u values differs from the reference (sum %a, want %a)", t->name, n, (double)sb,
              (double)sa);
        for (uint32_t i = 0; i < n; i++) a[i] = b[i] = (rnd_unit() - 0.5f) * (trial % 2 ? 200.0f : 10.0f);
        if (trial % 5 == 4) a[rnd_below(n)] = NAN;
        memcpy(b, a, n * sizeof(float));
        qwen3_silu_mul_ref(a, u, n);
        t->silu_mul(b, u, n);
        CHECK(same_floats(a, b, n + GUARD), "%s silu_mul of %u values differs from the reference",
              t->name, n);
        runs++;
        free(a), free(b), free(u);
    }
    /* rows of different lengths side by side (causal prefill: lengths go up by one) */
    for (uint32_t trial = 0; trial < 40; trial++) {
        const uint32_t rows = 1 + rnd_below(20), stride = 300 + rnd_below(5);
        float* a = malloc((size_t)rows * stride * sizeof(float));
        float* b = malloc((size_t)rows * stride * sizeof(float));
        uint32_t lens[20];
        if (!a || !b) {
            CHECK(0, "out of memory");
            return;
        }
        uint32_t len = rnd_below(200);
        for (uint32_t r = 0; r < rows; r++) lens[r] = trial % 2 ? len + r : 1 + rnd_below(stride);
        for (size_t i = 0; i < (size_t)rows * stride; i++) a[i] = b[i] = (rnd_unit() - 0.5f) * 30.0f;
        float sa[20], sb[20];
        qwen3_softmax_exp_rows_ref(a, stride, rows, lens, sa);
        t->softmax_exp(b, stride, rows, lens, sb);
        CHECK(same_floats(a, b, rows * stride) && same_floats(sa, sb, rows),
              "%s softmax_exp of %u rows (lengths %u..) differs from the reference", t->name, rows, lens[0]);
        free(a), free(b);
        runs++;
    }
    printf("  %-11s softmax and SiLU ok: %u rows memcmp-equal to the reference%s\n", t->name, runs,
           (uint32_t)tu_failures != fails_before ? " (with FAILURES above)" : "");
}

/* ---- attention against the scalar loops ---- */

/* sampler_softmax against the reference: vocabulary-sized and short rows (every tail
 * length), logits from narrow to wide, temperatures from 0.01 to 7, z given apart and as p
 * itself, and rows with NaN, -inf, +inf, -0, and values that overflow once divided. */
static void test_sampler_softmax_tier(const Qwen3KernelTable* t) {
    const uint32_t fails_before = (uint32_t)tu_failures;
    static const float temps[] = {1.0f, 0.6f, 0.01f, 2.5f, 7.0f, 1e-30f};
    uint32_t simd_rows = 0;
    for (uint32_t trial = 0; trial < 240; trial++) {
        const uint32_t n = trial < 4 ? 151936 - trial : 1 + rnd_below(trial < 120 ? 40 : 1200);
        const float temp = temps[trial % 6 == 5 && trial % 12 != 11 ? 0 : trial % 6];
        float* z = malloc((n + GUARD) * sizeof(float));
        float* a = malloc((n + GUARD) * sizeof(float));
        float* b = malloc((n + GUARD) * sizeof(float));
        if (!z || !a || !b) {
            CHECK(0, "out of memory");
            free(z), free(a), free(b);
            return;
        }
        const float width = trial % 3 == 0 ? 2.0f : trial % 3 == 1 ? 30.0f : 400.0f;
        for (uint32_t i = 0; i < n; i++) {
            const uint32_t kind = trial % 5 == 4 ? rnd_below(12) : 0;
            switch (kind) {
            case 1: z[i] = -INFINITY; break;
            case 2: z[i] = NAN; break;
            case 3: z[i] = trial % 10 == 4 ? INFINITY : -0.0f; break;
            case 4: z[i] = 3e38f; break;
            default: z[i] = (rnd_unit() - 0.5f) * width; break;
            }
        }
        if (trial % 7 == 6) {
            for (uint32_t i = 0; i < n; i++) z[i] = -INFINITY;
            z[rnd_below(n)] = trial % 2 ? NAN : -3.0f;
        }
        for (uint32_t i = n; i < n + GUARD; i++) a[i] = b[i] = -5.5f;
        const int alias = trial % 2;
        memcpy(a, z, n * sizeof(float));
        memcpy(b, z, n * sizeof(float));
        const float ra = qwen3_sampler_softmax_ref(a, alias ? a : z, n, temp);
        const float rb = t->sampler_softmax(b, alias ? b : z, n, temp);
        CHECK(same_floats(a, b, n + GUARD) && same_floats(&ra, &rb, 1),
              "%s sampler_softmax of %u logits (T %g, %s) differs from the reference (max %a, want %a)", t->name,
              n, (double)temp, alias ? "in place" : "apart", (double)rb, (double)ra);
        float zmax = -INFINITY;
        for (uint32_t i = 0; i < n; i++) {
            if (z[i] > zmax) zmax = z[i];
        }
        if (isfinite(zmax / temp)) simd_rows++;
        free(z), free(a), free(b);
    }
    CHECK(simd_rows > 100, "sampler_softmax test: only %u rows had a finite maximum", simd_rows);
    if ((uint32_t)tu_failures == fails_before) printf("  %-11s sampler_softmax: 240 rows match the reference\n", t->name);
}

static void test_attention_tier(const Qwen3KernelTable* t) {
    const uint32_t fails_before = (uint32_t)tu_failures;
    enum { B = QWEN3_KV_BLOCK };
    static const uint32_t head_dims[] = {128, 64, 16, 8, 80, 3};
    uint32_t runs = 0;
    for (size_t hi = 0; hi < sizeof head_dims / sizeof head_dims[0]; hi++) {
        const uint32_t hd = head_dims[hi];
        for (uint32_t trial = 0; trial < 12; trial++) {
            const uint32_t n_q = 1 + rnd_below(trial < 6 ? 6 : 40);
            const uint32_t n_pos = 1 + rnd_below(trial % 3 == 0 ? 20 : 300);
            const uint32_t blocks = (n_pos + B - 1) / B;
            const size_t block_stride = (size_t)B * hd * 2 + 16; /* another head's keys in between */
            const uint32_t q_stride = hd + 5, s_stride = blocks * B + 16, v_stride = hd + 7;
            float* q = malloc((size_t)n_q * q_stride * sizeof(float));
            float* keys = malloc(blocks * block_stride * sizeof(float));
            float* v = malloc((size_t)n_pos * v_stride * sizeof(float));
            float* s_want = malloc((size_t)n_q * s_stride * sizeof(float));
            float* s_got = malloc((size_t)n_q * s_stride * sizeof(float));
            float* o_want = malloc((size_t)n_q * q_stride * sizeof(float));
            float* o_got = malloc((size_t)n_q * q_stride * sizeof(float));
            uint32_t* np = malloc(n_q * sizeof(uint32_t));
            if (!q || !keys || !v || !s_want || !s_got || !o_want || !o_got || !np) {
                CHECK(0, "out of memory");
                return;
            }
            for (size_t i = 0; i < (size_t)n_q * q_stride; i++) q[i] = (rnd_unit() - 0.5f) * 4.0f;
            for (size_t i = 0; i < blocks * block_stride; i++) keys[i] = (rnd_unit() - 0.5f) * 4.0f;
            for (size_t i = 0; i < (size_t)n_pos * v_stride; i++) v[i] = (rnd_unit() - 0.5f) * 4.0f;
            for (size_t i = 0; i < (size_t)n_q * s_stride; i++) s_want[i] = s_got[i] = -7.0f;
            qwen3_attn_scores_ref(s_want, s_stride, q, q_stride, n_q, keys, block_stride, n_pos, hd, 0.125f);
            t->attn_scores(s_got, s_stride, q, q_stride, n_q, keys, block_stride, n_pos, hd, 0.125f);
            int bad = 0;
            for (uint32_t j = 0; j < n_q && !bad; j++) {
                bad = memcmp(s_want + (size_t)j * s_stride, s_got + (size_t)j * s_stride, s_stride * sizeof(float)) != 0;
                if (bad) CHECK(0, "%s attn_scores: head_dim %u, %u queries, %u positions: query %u differs", t->name, hd, n_q, n_pos, j);
            }
            /* the scalar loops (register-tiled) against the definition in kernels.h written
             * plainly with qwen3_fmaf_soft, one score and one output at a time */
            for (uint32_t j = 0; j < n_q && !bad; j++) {
                for (uint32_t p = 0; p < n_pos && !bad; p++) {
                    float acc = 0.0f;
                    for (uint32_t i = 0; i < hd; i++) {
                        acc = qwen3_fmaf_soft(q[(size_t)j * q_stride + i], keys[(p / B) * block_stride + (size_t)i * B + p % B], acc);
                    }
                    acc = acc * 0.125f;
                    bad = memcmp(&acc, s_want + (size_t)j * s_stride + p, sizeof acc) != 0;
                    if (bad) CHECK(0, "scalar attn_scores: head_dim %u, %u queries: score (%u, %u) is not the plain sum", hd, n_q, j, p);
                }
            }
            /* lengths: causal (non-decreasing), some equal, the scores reused as weights */
            uint32_t len = 1 + rnd_below(n_pos);
            for (uint32_t j = 0; j < n_q; j++) {
                if (rnd_below(3) == 0 && len < n_pos) len += 1 + rnd_below(n_pos - len);
                np[j] = len;
            }
            for (size_t i = 0; i < (size_t)n_q * q_stride; i++) o_want[i] = o_got[i] = -7.0f;
            qwen3_attn_values_ref(o_want, q_stride, s_want, s_stride, np, n_q, v, v_stride, hd, 0);
            t->attn_values(o_got, q_stride, s_want, s_stride, np, n_q, v, v_stride, hd, 0);
            if (!bad && memcmp(o_want, o_got, (size_t)n_q * q_stride * sizeof(float)) != 0) {
                CHECK(0, "%s attn_values: head_dim %u, %u queries, lengths %u..%u differ (or wrote between rows)", t->name,
                      hd, n_q, np[0], np[n_q - 1]);
            }
            for (uint32_t j = 0; j < n_q && !bad; j++) {
                for (uint32_t i = 0; i < hd && !bad; i++) {
                    float acc = 0.0f;
                    for (uint32_t p = 0; p < np[j]; p++) acc = qwen3_fmaf_soft(s_want[(size_t)j * s_stride + p], v[(size_t)p * v_stride + i], acc);
                    bad = memcmp(&acc, o_want + (size_t)j * q_stride + i, sizeof acc) != 0;
                    if (bad) CHECK(0, "scalar attn_values: head_dim %u, %u queries: output (%u, %u) is not the plain sum", hd, n_q, j, i);
                }
            }
            /* the same sums over consecutive position ranges, each call continuing the last
             * (accumulate), as transformer.c's tiled attention makes them: the same bits,
             * including queries whose range is empty (length 0) */
            for (size_t i = 0; i < (size_t)n_q * q_stride; i++) o_got[i] = -7.0f;
            uint32_t p0 = 0, ranges = 0;
            while (p0 < np[n_q - 1] || ranges == 0) {
                const uint32_t p1 = p0 + 1 + rnd_below(trial % 2 ? 40 : 200);
                uint32_t lens[40];
                for (uint32_t j = 0; j < n_q; j++) {
                    lens[j] = np[j] <= p0 ? 0 : (np[j] < p1 ? np[j] : p1) - p0;
                }
                t->attn_values(o_got, q_stride, s_want + p0, s_stride, lens, n_q, v + (size_t)p0 * v_stride, v_stride,
                               hd, ranges > 0);
                p0 = p1;
                ranges++;
            }
            if (!bad && memcmp(o_want, o_got, (size_t)n_q * q_stride * sizeof(float)) != 0) {
                CHECK(0, "%s attn_values in %u ranges: head_dim %u, %u queries, lengths %u..%u differ", t->name, ranges,
                      hd, n_q, np[0], np[n_q - 1]);
            }
            runs++;
            free(q), free(keys), free(v), free(s_want), free(s_got), free(o_want), free(o_got), free(np);
        }
    }
    printf("  %-11s attention ok: %u cases memcmp-equal to the scalar loops%s\n", t->name, runs,
           (uint32_t)tu_failures != fails_before ? " (with FAILURES above)" : "");
}

/* ---- quantiser ---- */

static void test_quantize(void) {
    /* max |x| = 127 makes the scale exactly 1, so x / scale is x and the halves are exact. */
    enum { GS = 16 };
    float x[2 * GS] = {127.0f, 2.5f, -2.5f, 0.5f, -0.5f, 1.4999f, -1.5f, 126.5f,
                       -126.5f, 3.5f, 0.0f, -0.0f, 100.49f, -100.51f, 64.5f, -64.5f};
    const int8_t want[GS] = {127, 3, -3, 1, -1, 1, -2, 127, -127, 4, 0, 0, 100, -101, 65, -65};
    /* second group: all zeros */
    int8_t q[2 * GS];
    float s[2];
    memset(q, 0x55, sizeof q);
    Qwen3Q8Vector v = {.q = q, .s = s, .n = 2 * GS, .group_size = GS};
    qwen3_quantize_q8(x, &v);
    CHECK(s[0] == 1.0f, "scale of a group with max 127 = %.9g, want 1", s[0]);
    for (int i = 0; i < GS; i++) {
        CHECK(q[i] == want[i], "quantize(%.5g) = %d, want %d (half away from zero)", x[i], q[i], want[i]);
    }
    CHECK(s[1] == 0.0f, "an all-zero group has scale %.9g, want 0", s[1]);
    for (int i = GS; i < 2 * GS; i++) CHECK(q[i] == 0, "zero group q[%d] = %d, want 0", i, q[i]);

    /* Random data: in [-127, 127], the max element hits +-127, error at most half a step. */
    enum { N = 4096, G = 64 };
    static float xf[N];
    static int8_t xq[N];
    static float xs[N / G];
    for (int i = 0; i < N; i++) xf[i] = (rnd_unit() - 0.5f) * (i % 7 == 0 ? 1e3f : 1.0f);
    Qwen3Q8Vector r = {.q = xq, .s = xs, .n = N, .group_size = G};
    qwen3_quantize_q8(xf, &r);
    int bad = 0;
    for (int g = 0; g < N / G; g++) {
        float amax = 0.0f;
        int qmax = 0;
        for (int i = g * G; i < (g + 1) * G; i++) {
            if (fabsf(xf[i]) > amax) amax = fabsf(xf[i]);
            if (abs(xq[i]) > qmax) qmax = abs(xq[i]);
            if (xq[i] < -127 || fabsf(xf[i] - xq[i] * xs[g]) > 0.5001f * xs[g]) bad++;
        }
        if (xs[g] != amax / 127.0f || qmax != 127) bad++;
    }
    CHECK(bad == 0, "%d random quantisation checks failed", bad);
}

/* ---- dispatcher ---- */

/* The best tier this CPU supports, judged from the built list (best first). */
static const char* best_supported(void) {
    const char* const* names = qwen3_kernels_all_names();
    for (uint32_t i = 0; names[i]; i++) {
        if (qwen3_kernels_find(names[i]) == NULL) continue;
#if defined(__aarch64__) && defined(__linux__)
        /* At 128-bit vectors SVE is not preferred over NEON (kernels.c). */
        if (strcmp(names[i], "sve") == 0 && (prctl(51 /* PR_SVE_GET_VL */, 0, 0, 0, 0) & 0xffff) <= 16) continue;
#endif
        return names[i];
    }
    return "scalar";
}

/* What the first use must have chosen, given $QWEN3_KERNEL. Run before any select. */
static void test_env_choice(void) {
    const char* env = getenv("QWEN3_KERNEL");
    const char* active = qwen3_kernel_name();
    const char* note = qwen3_kernels_note();
    printf("kernel: %s (%s)\n", active, note);
    CHECK(qwen3_kernels_active() != NULL && strcmp(qwen3_kernels_active()->name, active) == 0,
          "qwen3_kernels_active and qwen3_kernel_name disagree");
    if (env == NULL || env[0] == '\0') {
        CHECK(strcmp(active, best_supported()) == 0, "no QWEN3_KERNEL: active %s, best supported %s", active,
              best_supported());
    } else if (qwen3_kernels_find(env) != NULL) {
        CHECK(strcmp(active, env) == 0, "QWEN3_KERNEL=%s is supported but %s is active", env, active);
        CHECK(strstr(note, "forced") != NULL, "note for a forced tier: '%s'", note);
    } else {
        CHECK(strcmp(active, best_supported()) == 0, "QWEN3_KERNEL=%s unusable: active %s, want best %s", env,
              active, best_supported());
        CHECK(strstr(note, "ignored") != NULL && strstr(note, env) != NULL,
              "note must say QWEN3_KERNEL=%s was ignored: '%s'", env, note);
    }
}

static void test_select(void) {
    const char* const* names = qwen3_kernels_all_names();
    for (uint32_t i = 0; names[i]; i++) {
        qwen3_error_clear();
        const int32_t rc = qwen3_kernel_select(names[i]);
        if (qwen3_kernels_find(names[i]) != NULL) {
            CHECK(rc == QWEN3_OK, "select(%s) = %d: %s", names[i], rc, qwen3_get_last_error());
            CHECK(strcmp(qwen3_kernel_name(), names[i]) == 0, "after select(%s) the name is %s", names[i],
                  qwen3_kernel_name());
        } else {
            CHECK(rc == QWEN3_ERR_UNSUPPORTED, "select(%s) on a CPU without it = %d", names[i], rc);
            CHECK(strstr(qwen3_get_last_error(), names[i]) &&
                      (strstr(qwen3_get_last_error(), "lacks") || strstr(qwen3_get_last_error(), "unavailable")),
                  "message names the tier and the missing feature or the reason: '%s'", qwen3_get_last_error());
            printf("  select(%s) refused as expected: %s\n", names[i], qwen3_get_last_error());
        }
    }
    qwen3_error_clear();
    CHECK(qwen3_kernel_select("avx9000") == QWEN3_ERR_UNSUPPORTED, "unknown tier must be refused");
    CHECK(strstr(qwen3_get_last_error(), "avx9000") != NULL, "message names the tier: '%s'",
          qwen3_get_last_error());
    CHECK(qwen3_kernel_select(NULL) == QWEN3_ERR_INVALID_ARGUMENT, "NULL name must be refused");
#if defined(__x86_64__)
    CHECK(qwen3_kernel_select("neon") == QWEN3_ERR_UNSUPPORTED, "a tier of another architecture is refused");
#elif defined(__aarch64__)
    CHECK(qwen3_kernel_select("avx2") == QWEN3_ERR_UNSUPPORTED, "a tier of another architecture is refused");
#endif
    CHECK(qwen3_kernel_select("scalar") == QWEN3_OK, "scalar always selectable");
}

#if !defined(_WIN32)
/* Re-runs this binary with QWEN3_KERNEL=value; returns its exit status (-1: no spawn). */
static int run_self_with(const char* self, const char* value) {
    char assignment[128];
    snprintf(assignment, sizeof assignment, "QWEN3_KERNEL=%s", value);
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char** env = calloc(n_env + 2, sizeof *env);
    if (!env) return -1;
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        if (strncmp(environ[i], "QWEN3_KERNEL=", 13) != 0) env[k++] = environ[i];
    }
    env[k++] = assignment;
    env[k] = NULL;
    char* argv[] = {(char*)self, (char*)"--env-only", NULL};
    pid_t pid;
    const int rc = posix_spawn(&pid, self, NULL, NULL, argv, env);
    free(env);
    if (rc != 0) return -1;
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_env_children(const char* self) {
    const char* const* names = qwen3_kernels_all_names();
    for (uint32_t i = 0; names[i]; i++) {
        const int rc = run_self_with(self, names[i]);
        CHECK(rc == 0 || rc == -1, "child with QWEN3_KERNEL=%s failed (status %d)", names[i], rc);
        if (rc == -1) printf("  QWEN3_KERNEL child runs SKIPPED: cannot spawn %s\n", self);
        if (rc == -1) return;
    }
    const int rc = run_self_with(self, "no-such-tier");
    CHECK(rc == 0 || rc == -1, "child with an unknown QWEN3_KERNEL failed (status %d)", rc);
    printf("  QWEN3_KERNEL forced to each tier and to an unknown name in child processes: %s\n",
           rc == 0 ? "ok" : "see above");
}
#endif

int main(int argc, char** argv) {
    test_env_choice();
    if (argc > 1 && strcmp(argv[1], "--env-only") == 0) return tu_failures ? 1 : 0;
    test_quantize();
    test_exp_ref();
    test_softmax_exp_order();
    test_fmaf_soft();
    test_all_tiers();
#if defined(__x86_64__) || defined(_M_X64)
    test_amx();
#endif
    test_select();
#if !defined(_WIN32)
    /* Only when the caller did not force a tier itself (the qemu runner does). */
    if (getenv("QWEN3_KERNEL") == NULL) {
        fflush(stdout); /* keep our lines ahead of the children's */
        test_env_children(argv[0]);
    }
#endif
    if (tu_failures) {
        fprintf(stderr, "test_kernels: %d failure(s)\n", tu_failures);
        return 1;
    }
    printf("test_kernels: ok\n");
    return 0;
}
