/* bench_blocks.c - how fast each tier's block-weight product (kernels.h, matmul_blocks) runs
 * against the scalar reference, per ggml block type, on one thread.
 *
 *   zig build bench-blocks && zig-out/bin/bench-blocks [--rows R] [--cols C]
 *       [--tokens T] [--rounds K] [--type Q4_K] [--tier avx512vnni]
 *
 * Defaults: a 1024 x 1024 matrix (cache-resident: this measures the kernels, not memory),
 * 1 and 8 tokens, 5 rounds. Each round times every tier once per type, tiers alternating,
 * and the medians are printed as ms per call and as a speedup over "scalar". Under qemu
 * (tools/test_aarch64.ts builds for aarch64) only the ratios mean anything, and only
 * roughly: emulation costs differ per instruction. Not a test: `zig build test` builds it
 * but does not run it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}

static int cmp_double(const void* a, const void* b) {
    const double x = *(const double*)a, y = *(const double*)b;
    return x < y ? -1 : x > y;
}

#define MAX_TIERS 8
#define MAX_ROUNDS 64

int main(int argc, char** argv) {
    uint32_t rows = 1024, cols = 1024, tokens = 0, rounds = 5;
    const char* only_type = NULL; /* --type NAME: one block type */
    const char* only_tier = NULL; /* --tier NAME: one kernel tier (and scalar) */
    for (int i = 1; i + 1 < argc; i += 2) {
        const char* a = argv[i];
        const uint32_t v = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        if (strcmp(a, "--type") == 0) only_type = argv[i + 1];
        else if (strcmp(a, "--tier") == 0) only_tier = argv[i + 1];
        else if (strcmp(a, "--rows") == 0) rows = v;
        else if (strcmp(a, "--cols") == 0) cols = v;
        else if (strcmp(a, "--tokens") == 0) tokens = v;
        else if (strcmp(a, "--rounds") == 0) rounds = v;
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (rows == 0 || cols == 0 || cols % 256 != 0 || rounds == 0 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "--rows >= 1, --cols a multiple of 256, --rounds 1..%d\n", MAX_ROUNDS);
        return 2;
    }
    const char* const* names = qwen3_kernels_all_names();
    const Qwen3KernelTable* tiers[MAX_TIERS];
    uint32_t n_tiers = 0;
    for (uint32_t k = 0; names[k] && n_tiers < MAX_TIERS; k++) {
        const Qwen3KernelTable* t = qwen3_kernels_find(names[k]);
        if (only_tier && strcmp(names[k], only_tier) != 0 && strcmp(names[k], "scalar") != 0) continue;
        if (t) tiers[n_tiers++] = t;
    }
    static const uint32_t types[] = {QWEN3_BLOCK_Q4_0, QWEN3_BLOCK_Q4_1, QWEN3_BLOCK_Q5_0, QWEN3_BLOCK_Q5_1,
                                     QWEN3_BLOCK_Q8_0, QWEN3_BLOCK_Q4_K, QWEN3_BLOCK_Q5_K, QWEN3_BLOCK_Q6_K};
    const uint32_t token_counts[2] = {tokens ? tokens : 1, 8};
    const uint32_t n_counts = tokens ? 1 : 2;
    const uint32_t max_tok = token_counts[n_counts - 1] > token_counts[0] ? token_counts[n_counts - 1] : token_counts[0];
    int8_t* xq = malloc((size_t)cols * max_tok);
    float* xs = malloc((size_t)cols / 32 * max_tok * sizeof(float));
    int32_t* sums = malloc((size_t)cols / 32 * max_tok * sizeof(int32_t));
    float* out = malloc((size_t)rows * max_tok * sizeof(float));
    uint8_t* data = malloc((size_t)rows * (cols / 32) * 34); /* the largest: Q8_0's 34 bytes per 32 */
    if (!xq || !xs || !sums || !out || !data) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)cols * max_tok; i++) xq[i] = (int8_t)(rnd() % 255 - 127);
    for (size_t g = 0; g < (size_t)cols / 32 * max_tok; g++) {
        xs[g] = 1.0f / (float)(1 + rnd() % 100);
        int32_t s = 0;
        for (int i = 0; i < 32; i++) s += xq[g * 32 + i];
        sums[g] = s;
    }
    printf("%u x %u, one thread, medians of %u rounds (ms per call; speedup over scalar)\n", rows, cols, rounds);
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const uint32_t type = types[ti], bv = qwen3_block_values(type), bb = qwen3_block_bytes(type);
        if (only_type && strcmp(qwen3_block_name(type), only_type) != 0) continue;
        const size_t row_bytes = (size_t)(cols / bv) * bb;
        for (size_t i = 0; i < row_bytes * rows; i++) data[i] = (uint8_t)rnd();
        for (size_t b = 0; b < (size_t)rows * (cols / bv); b++) { /* finite scales: fp16 about 2^-8 */
            uint8_t* blk = data + b * bb;
            const size_t at = type == QWEN3_BLOCK_Q6_K ? 208 : 0;
            blk[at] = (uint8_t)rnd();
            blk[at + 1] = 0x1C;
            if (qwen3_block_has_offset(type)) {
                blk[2] = (uint8_t)rnd();
                blk[3] = 0x1C;
            }
        }
        const Qwen3BlockMatrix w = {data, row_bytes, type, rows, cols};
        for (uint32_t ci = 0; ci < n_counts; ci++) {
            const Qwen3Q8Batch x = {xq, xs, sums, cols, token_counts[ci], 32};
            double times[MAX_TIERS][MAX_ROUNDS];
            for (uint32_t r = 0; r < rounds; r++) {
                for (uint32_t k = 0; k < n_tiers; k++) {
                    /* at least 0.05 s per timing, in whole calls */
                    uint32_t calls = 0;
                    const double t0 = now_s();
                    double t1 = t0;
                    while (t1 - t0 < 0.05 || calls == 0) {
                        tiers[k]->matmul_blocks(out, rows, &w, &x, 0, rows);
                        calls++;
                        t1 = now_s();
                    }
                    times[k][r] = (t1 - t0) / calls;
                }
            }
            double med[MAX_TIERS];
            for (uint32_t k = 0; k < n_tiers; k++) {
                qsort(times[k], rounds, sizeof(double), cmp_double);
                med[k] = times[k][rounds / 2];
            }
            double scalar = 0.0;
            for (uint32_t k = 0; k < n_tiers; k++) {
                if (strcmp(tiers[k]->name, "scalar") == 0) scalar = med[k];
            }
            printf("%-5s %2u token(s):", qwen3_block_name(type), token_counts[ci]);
            for (uint32_t k = 0; k < n_tiers; k++) {
                printf("  %s %.3f ms", tiers[k]->name, med[k] * 1e3);
                if (scalar > 0.0 && strcmp(tiers[k]->name, "scalar") != 0) printf(" (%.1fx)", scalar / med[k]);
            }
            printf("\n");
        }
    }
    free(xq);
    free(xs);
    free(sums);
    free(out);
    free(data);
    return 0;
}
