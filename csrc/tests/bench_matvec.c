/* bench_matvec.c - how fast the int8 matvec kernels stream weights, in GB/s.
 *
 *   zig build bench-matvec && zig-out/bin/bench-matvec [--tier NAME] [--threads N]
 *       [--rows R --cols C] [--group G] [--iters K] [--tasks-per-thread T] [--misalign B]
 *       [--tokens N]
 *
 * Without --rows it runs Qwen3-0.6B's classifier (151936 x 1024) and an FFN matrix
 * (3072 x 1024) on 1 and 2 threads. A decode step reads each matrix once, from DRAM,
 * so the small matrix is measured "cold": enough copies to overflow the last-level
 * cache are used in turn. GB/s counts int8 weights plus fp32 scales actually read.
 * --tokens N (N > 1) runs the batched product (matmul_q8) of N tokens instead, as a
 * batched decode step of N sequences does: GB/s still counts each weight once, so it
 * compares with the one-token rate directly.
 * Not a test: `zig build test` builds it but does not run it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"
#include "qwen3_inference.h"
#include "read_probe.h"
#include "threadpool.h"

static double now_s(void) {
#if defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
#endif
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545F4914F6CDD1Dull;
static uint32_t rnd(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}

typedef struct {
    const Qwen3KernelTable* k;
    const Qwen3Q8Matrix* w;
    const Qwen3Q8Vector* x;
    const Qwen3Q8Batch* xb; /* n_tokens > 1: the batched product */
    float* out;
    uint32_t rows_per_task; /* a multiple of 16, so SIMD blocks never straddle tasks */
} Job;

static void task(void* arg, uint32_t t, uint32_t n_tasks) {
    (void)n_tasks;
    const Job* job = arg;
    const uint32_t rb = t * job->rows_per_task;
    if (rb >= job->w->rows) return;
    const uint32_t re = rb + job->rows_per_task < job->w->rows ? rb + job->rows_per_task : job->w->rows;
    if (job->xb) {
        job->k->matmul_q8(job->out + rb, job->w->rows, job->w, job->xb, rb, re);
    } else {
        job->k->matvec_q8(job->out + rb, job->w, job->x, rb, re);
    }
}

/* The read-bandwidth probe: the same rows' bytes read with the widest loads the CPU has
 * (read_probe.h), so the kernel can be reported as a fraction of what plain reading
 * reaches. Tasks hold whole 16-row blocks of 64-byte aligned rows (cols a multiple of
 * 64 here), so every slice is 256-byte aligned in size; the scales are read plainly. */
static void read_rows(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x, uint32_t rb, uint32_t re) {
    (void)x;
    const size_t ng = w->cols / w->group_size;
    const size_t bytes = (size_t)(re - rb) * w->cols;
    uint64_t acc = read_probe((const uint8_t*)(w->q + (size_t)rb * w->cols), bytes / 256 * 256);
    const uint32_t* s = (const uint32_t*)(w->s + (size_t)rb * ng);
    for (size_t i = 0; i < (size_t)(re - rb) * ng; i++) acc ^= s[i];
    out[0] = (float)(acc & 0xff);
}

static const Qwen3KernelTable read_table = {.name = "read-probe", .matvec_q8 = read_rows};

static int cmp_double(const void* a, const void* b) {
    const double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

/* Median GB/s of `iters` passes over `copies` matrices of rows x cols used in turn. */
static double measure(const Qwen3KernelTable* k, Qwen3ThreadPool* pool, uint32_t rows, uint32_t cols, uint32_t gs,
                      uint32_t copies, uint32_t iters, uint32_t tasks_per_thread, uint32_t misalign,
                      uint32_t tokens) {
    const uint32_t ng = cols / gs;
    const size_t wbytes = (size_t)rows * cols;
    const size_t sbytes = (size_t)rows * ng * sizeof(float);
    /* 64-byte aligned plus `misalign` bytes: a qwen3.c checkpoint's tensors start 64-byte
     * aligned in the mapping (header 256 bytes, every section a multiple of 64), while a
     * plain malloc would split every 64-byte load across two cache lines. */
    int8_t* q_alloc = malloc(wbytes * copies + 128);
    float* s_alloc = malloc(sbytes * copies + 64);
    int8_t* q = q_alloc ? (int8_t*)(((uintptr_t)q_alloc + 63) & ~(uintptr_t)63) + misalign : NULL;
    float* s = s_alloc ? (float*)(((uintptr_t)s_alloc + 63) & ~(uintptr_t)63) : NULL;
    int8_t* xq = malloc((size_t)cols * tokens);
    float* xs = malloc((size_t)ng * tokens * sizeof(float));
    int32_t* sums = malloc((size_t)ng * tokens * sizeof(int32_t));
    float* out = malloc((size_t)rows * tokens * sizeof(float));
    if (!q || !s || !xq || !xs || !sums || !out) {
        fprintf(stderr, "out of memory for %u copies of %ux%u\n", copies, rows, cols);
        exit(1);
    }
    for (size_t i = 0; i < wbytes * copies; i += 4) {
        const uint32_t r = rnd();
        memcpy(q + i, &r, wbytes * copies - i < 4 ? wbytes * copies - i : 4);
    }
    for (size_t i = 0; i < (size_t)rows * ng * copies; i++) s[i] = (float)(rnd() >> 8) * 1e-9f;
    for (size_t i = 0; i < (size_t)cols * tokens; i++) xq[i] = (int8_t)((int)(rnd() % 255) - 127);
    for (size_t i = 0; i < (size_t)ng * tokens; i++) {
        xs[i] = 0.01f;
        sums[i] = 0;
        for (uint32_t j = 0; j < gs; j++) sums[i] += xq[i * gs + j];
    }
    Qwen3Q8Vector x = {.q = xq, .s = xs, .n = cols, .group_size = gs};
    Qwen3Q8Batch xb = {.q = xq, .s = xs, .sums = sums, .n = cols, .n_tokens = tokens, .group_size = gs};

    const uint32_t n_tasks = qwen3_pool_threads(pool) * tasks_per_thread;
    uint32_t per = (rows + n_tasks - 1) / n_tasks;
    per = (per + 15) / 16 * 16;
    double* gbs = malloc(iters * sizeof(double));
    const uint32_t warmup = copies > 2 ? copies : 2;
    for (uint32_t it = 0; it < warmup + iters; it++) {
        const uint32_t c = it % copies;
        Qwen3Q8Matrix w = {.q = q + wbytes * c, .s = s + (size_t)rows * ng * c, .rows = rows, .cols = cols,
                           .group_size = gs};
        Job job = {.k = k, .w = &w, .x = &x, .xb = tokens > 1 ? &xb : NULL, .out = out, .rows_per_task = per};
        const double t0 = now_s();
        qwen3_pool_run(pool, task, &job, n_tasks);
        const double dt = now_s() - t0;
        if (it >= warmup) gbs[it - warmup] = (double)(wbytes + sbytes) / dt / 1e9;
    }
    qsort(gbs, iters, sizeof(double), cmp_double);
    const double median = gbs[iters / 2];
    free(gbs);
    free(q_alloc);
    free(s_alloc);
    free(xq);
    free(xs);
    free(sums);
    free(out);
    return median;
}

int main(int argc, char** argv) {
    const char* tier = NULL;
    uint32_t threads = 0, rows = 0, cols = 1024, gs = 64, iters = 0, tpt = 1, misalign = 0, tokens = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char* a = argv[i];
        const uint32_t v = (uint32_t)strtoul(argv[i + 1], NULL, 10);
        if (strcmp(a, "--tier") == 0) tier = argv[i + 1];
        else if (strcmp(a, "--threads") == 0) threads = v;
        else if (strcmp(a, "--rows") == 0) rows = v;
        else if (strcmp(a, "--cols") == 0) cols = v;
        else if (strcmp(a, "--group") == 0) gs = v;
        else if (strcmp(a, "--iters") == 0) iters = v;
        else if (strcmp(a, "--tasks-per-thread") == 0) tpt = v;
        else if (strcmp(a, "--misalign") == 0) misalign = v % 64;
        else if (strcmp(a, "--tokens") == 0) tokens = v;
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
    }
    if (tier && qwen3_kernel_select(tier) != QWEN3_OK) {
        fprintf(stderr, "%s\n", qwen3_get_last_error());
        return 1;
    }
    if (gs == 0 || cols % gs != 0 || tpt == 0 || tokens == 0 || tokens > 256) {
        fprintf(stderr, "--cols must be a multiple of --group, --tasks-per-thread >= 1, --tokens 1..256\n");
        return 2;
    }
    const Qwen3KernelTable* k = qwen3_kernels_active();
    printf("kernel %s, CPU: %s%s\n", k->name, qwen3_cpu_features(), tokens > 1 ? ", batched product" : "");

    const struct {
        uint32_t rows, cols;
        const char* what;
    } defaults[] = {{151936, 1024, "classifier"}, {3072, 1024, "ffn up/gate"}};
    const uint32_t n_shapes = rows ? 1 : 2;
    for (uint32_t threads_i = 1; threads_i <= 2; threads_i++) {
        const uint32_t nt = threads ? threads : threads_i;
        if (threads && threads_i > 1) break;
        Qwen3ThreadPool* pool = qwen3_pool_new(nt);
        if (!pool) {
            fprintf(stderr, "%s\n", qwen3_get_last_error());
            return 1;
        }
        for (uint32_t si = 0; si < n_shapes; si++) {
            const uint32_t r = rows ? rows : defaults[si].rows;
            const uint32_t c = rows ? cols : defaults[si].cols;
            const size_t bytes = (size_t)r * c;
            /* Enough copies for >= 1 GiB, several times any last-level cache (a 2-vCPU
             * Sapphire Rapids guest reports 260 MiB of L3, so 256 MB was not enough). */
            const size_t cold_bytes = (size_t)1 << 30;
            const uint32_t copies = bytes >= cold_bytes ? 1 : (uint32_t)(cold_bytes / bytes + 1);
            const uint32_t n_iters = iters ? iters : (copies > 1 ? copies * 3 : 15);
            const double cold = measure(k, pool, r, c, gs, copies, n_iters, tpt, misalign, tokens);
            const double probe = measure(&read_table, pool, r, c, gs, copies, n_iters, tpt, misalign, 1);
            printf("%-12s %6ux%-5u group %-3u tokens %u threads %u: %6.2f GB/s (cold, %u copies; plain read %.2f GB/s: %.0f%%)",
                   rows ? "custom" : defaults[si].what, r, c, gs, tokens, nt, cold, copies, probe, 100.0 * cold / probe);
            if (copies > 1) {
                const double hot = measure(k, pool, r, c, gs, 1, 200, tpt, misalign, tokens);
                printf(", %6.2f GB/s (hot, cache-resident)", hot);
            }
            printf("\n");
        }
        qwen3_pool_free(pool);
    }
    return 0;
}
