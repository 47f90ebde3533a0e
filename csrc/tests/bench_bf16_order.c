/* bench_bf16_order.c - which fp32 rounding order the CPU's bf16 dot products follow, the
 * question a bf16 attention contract hangs on (docs/numerics.md#lower-precision-attention).
 *
 * Random bf16 operands (exponents over 2^-20 .. 2^19, both signs, so that the order of two
 * additions shows in the last bit), accumulators 0 or random; each result compared bit for
 * bit with four models built from fp32 fmaf and exact double sums:
 *
 *   even first   acc = fma(a[2i], b[2i], acc); acc = fma(a[2i+1], b[2i+1], acc)   (each pair i in turn)
 *   odd first    the same with the pair's odd element first (Intel SDM pseudo-code)
 *   exact once   the whole sum in double (exact for these ranges at the small size), rounded once
 *   pair sums    each pair's two products added in fp32, then added to acc
 *
 * VDPBF16PS (AVX512-BF16): one pair per lane, 16 lanes. TDPBF16PS (AMX-BF16): a 16 x 16 tile
 * from 16 rows of 32 bf16 by 16 pairs-rows (K = 32), the pairs in index order. Prints one line
 * per instruction with the count of results each model misses; "missing" where the CPU or OS
 * lacks the instruction. Then the time per VDPBF16PS against per VFMADD231PS (16 independent
 * sums each, so throughput, not latency): one does 32 multiply-adds, the other 16. x86_64 only
 * (elsewhere it says so).
 *
 *   zig build bench-tools && zig-out/bin/bench-bf16_order [ROUNDS]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

#include "cpu.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float from_bf16(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* A random bf16: 8 significant bits, exponent in [-20, 19], either sign. */
static uint16_t random_bf16(void) {
    const float v = ldexpf(1.0f + (float)(next() % 128) / 128.0f, (int)(next() % 40) - 20);
    uint32_t u;
    memcpy(&u, &v, 4);
    return (uint16_t)((u >> 16) | (next() & 1 ? 0x8000u : 0u));
}

enum { EVEN_FIRST, ODD_FIRST, EXACT_ONCE, PAIR_SUMS, MODELS };
static const char* const MODEL_NAMES[MODELS] = {"even first", "odd first", "exact once", "pair sums"};

/* Counts, per model, the results of acc + sum over pairs of a[2i]b[2i] + a[2i+1]b[2i+1] that differ. */
static void check(const uint16_t* a, const uint16_t* b, size_t b_step, uint32_t pairs, float acc, float got,
                  long* miss) {
    float m[MODELS] = {acc, acc, acc, acc};
    double exact = acc;
    for (uint32_t i = 0; i < pairs; i++) {
        const float x0 = from_bf16(a[2 * i]), x1 = from_bf16(a[2 * i + 1]);
        const float y0 = from_bf16(b[i * b_step]), y1 = from_bf16(b[i * b_step + 1]);
        m[EVEN_FIRST] = fmaf(x1, y1, fmaf(x0, y0, m[EVEN_FIRST]));
        m[ODD_FIRST] = fmaf(x0, y0, fmaf(x1, y1, m[ODD_FIRST]));
        m[PAIR_SUMS] = m[PAIR_SUMS] + (x0 * y0 + x1 * y1);
        exact += (double)x0 * y0 + (double)x1 * y1;
    }
    m[EXACT_ONCE] = (float)exact;
    for (int k = 0; k < MODELS; k++) miss[k] += memcmp(&m[k], &got, 4) != 0;
}

static void report(const char* name, long n, const long* miss) {
    printf("%s: %ld results;", name, n);
    for (int k = 0; k < MODELS; k++) printf(" %s misses %ld%s", MODEL_NAMES[k], miss[k], k + 1 < MODELS ? "," : "\n");
}

__attribute__((target("avx512f,avx512bf16,evex512"))) static void run_vdpbf16ps(long rounds) {
    long miss[MODELS] = {0}, n = 0;
    for (long r = 0; r < rounds; r++) {
        uint16_t a[32], b[32];
        float c[16], out[16];
        for (int i = 0; i < 32; i++) a[i] = random_bf16(), b[i] = random_bf16();
        for (int i = 0; i < 16; i++) c[i] = r & 1 ? from_bf16(random_bf16()) * 1000.0f : 0.0f;
        const __m512 sum = _mm512_dpbf16_ps(_mm512_loadu_ps(c), (__m512bh)_mm512_loadu_si512(a),
                                            (__m512bh)_mm512_loadu_si512(b));
        _mm512_storeu_ps(out, sum);
        for (int i = 0; i < 16; i++, n++) check(a + 2 * i, b + 2 * i, 2, 1, c[i], out[i], miss);
    }
    report("VDPBF16PS (AVX512-BF16)", n, miss);
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Sixteen independent sums (the instructions' latency is 4 and ~8 cycles at two a cycle),
 * written in assembly so that the compiler's register choices cannot add loads. */
#define SIXTEEN(OP)                                                                              \
    OP " %[y], %[x], %%zmm16\n\t" OP " %[y], %[x], %%zmm17\n\t" OP " %[y], %[x], %%zmm18\n\t"  \
    OP " %[y], %[x], %%zmm19\n\t" OP " %[y], %[x], %%zmm20\n\t" OP " %[y], %[x], %%zmm21\n\t"  \
    OP " %[y], %[x], %%zmm22\n\t" OP " %[y], %[x], %%zmm23\n\t" OP " %[y], %[x], %%zmm24\n\t"  \
    OP " %[y], %[x], %%zmm25\n\t" OP " %[y], %[x], %%zmm26\n\t" OP " %[y], %[x], %%zmm27\n\t"  \
    OP " %[y], %[x], %%zmm28\n\t" OP " %[y], %[x], %%zmm29\n\t" OP " %[y], %[x], %%zmm30\n\t"  \
    OP " %[y], %[x], %%zmm31\n\t"
#define ACCUMULATORS                                                                                         \
    "zmm16", "zmm17", "zmm18", "zmm19", "zmm20", "zmm21", "zmm22", "zmm23", "zmm24", "zmm25", "zmm26", "zmm27", \
        "zmm28", "zmm29", "zmm30", "zmm31"

/* ns per instruction of VFMADD231PS, then of VDPBF16PS, sixteen sums in flight. */
__attribute__((target("avx512f,avx512bf16,evex512"))) static void time_vdpbf16ps(void) {
    const long n = 20000000;
    const __m512 x = _mm512_set1_ps(0.5f), y = _mm512_set1_ps(0.25f);
    const double t0 = seconds();
    for (long i = 0; i < n; i++) __asm__ __volatile__(SIXTEEN("vfmadd231ps") : : [x] "v"(x), [y] "v"(y) : ACCUMULATORS);
    const double t1 = seconds();
    for (long i = 0; i < n; i++) __asm__ __volatile__(SIXTEEN("vdpbf16ps") : : [x] "v"(x), [y] "v"(y) : ACCUMULATORS);
    const double t2 = seconds();
    const double fma = (t1 - t0) / (double)(n * 16) * 1e9, dp = (t2 - t1) / (double)(n * 16) * 1e9;
    printf("time per instruction: VFMADD231PS %.3f ns (16 multiply-adds), VDPBF16PS %.3f ns (32): bf16 %.2fx "
           "the fp32 multiply-adds per second\n",
           fma, dp, 2.0 * fma / dp);
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

__attribute__((target("amx-tile,amx-bf16"))) static void run_tdpbf16ps(long rounds) {
    TileConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 3; t++) cfg.rows[t] = 16, cfg.colsb[t] = 64;
    _tile_loadconfig(&cfg);
    static uint16_t a[16][32], b[16][32], a_row[32], b_col[32];
    static float c[16][16], c0[16][16];
    long miss[MODELS] = {0}, n = 0;
    for (long r = 0; r < rounds / 16 + 1; r++) {
        for (int m = 0; m < 16; m++) {
            for (int k = 0; k < 32; k++) a[m][k] = random_bf16(), b[m][k] = random_bf16();
        }
        for (int m = 0; m < 16; m++) {
            for (int j = 0; j < 16; j++) c[m][j] = c0[m][j] = r & 1 ? from_bf16(random_bf16()) * 1000.0f : 0.0f;
        }
        _tile_loadd(0, c, 64);
        _tile_loadd(1, a, 64);
        _tile_loadd(2, b, 64);
        _tile_dpbf16ps(0, 1, 2);
        _tile_stored(0, c, 64);
        for (int m = 0; m < 16; m++) {
            for (int j = 0; j < 16; j++, n++) {
                /* row m of A against column pair j of B: pair k is B[k][2j], B[k][2j + 1] */
                for (int k = 0; k < 16; k++) b_col[2 * k] = b[k][2 * j], b_col[2 * k + 1] = b[k][2 * j + 1];
                memcpy(a_row, a[m], sizeof a_row);
                check(a_row, b_col, 2, 16, c0[m][j], c[m][j], miss);
            }
        }
    }
    _tile_release();
    report("TDPBF16PS (AMX-BF16)", n, miss);
}

int main(int argc, char** argv) {
    const long rounds = argc > 1 ? atol(argv[1]) : 200000;
    if (rounds <= 0) {
        fprintf(stderr, "usage: bench-bf16_order [ROUNDS > 0]\n");
        return 2;
    }
    unsigned eax, ebx, ecx, edx;
    const int leaf7 = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx);
    const int amx_bf16 = leaf7 && (edx >> 22 & 1) && (qwen3_cpu_flags() & QWEN3_CPU_AMX_INT8);
    if (qwen3_cpu_flags() & QWEN3_CPU_AVX512BF16) {
        run_vdpbf16ps(rounds);
        time_vdpbf16ps();
    } else {
        printf("VDPBF16PS (AVX512-BF16): missing on this CPU\n");
    }
    const char* why = amx_bf16 ? qwen3_cpu_amx_permit() : "not on this CPU";
    if (why == NULL) {
        run_tdpbf16ps(rounds);
    } else {
        printf("TDPBF16PS (AMX-BF16): missing (%s)\n", why);
    }
    return 0;
}

#else
int main(void) {
    printf("bench-bf16_order: x86_64 only (VDPBF16PS and TDPBF16PS)\n");
    return 0;
}
#endif
