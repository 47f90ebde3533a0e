/* bench_bandwidth.c - the machine's memory read bandwidth, the ceiling of a decode step.
 *
 *   zig-out/bin/bench-bandwidth [--threads N] [--mib SIZE]
 *
 * Streams a buffer far larger than the caches with N threads (the engine's thread pool),
 * each reading its own slice with the widest loads the CPU has (read_probe.h), and prints
 * {"threads":N,"gbPerSecond":X,"loads":"..."} for the best of several passes. Decode tok/s times bytes of weights per token, divided by this, is the
 * fraction of the hardware limit an engine reaches. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "platform.h"
#include "read_probe.h"
#include "threadpool.h"

typedef struct {
    const uint8_t* data; /* (bytes), 64-byte aligned */
    size_t bytes;        /* a multiple of 256 */
    uint64_t sums[64];   /* one per task, so the reads cannot be optimised away */
} Job;

static void read_slice(void* arg, uint32_t task, uint32_t n_tasks) {
    Job* job = arg;
    const size_t chunks = job->bytes / 256;
    const size_t begin = chunks * task / n_tasks * 256, end = chunks * (task + 1) / n_tasks * 256;
    job->sums[task] = read_probe(job->data + begin, end - begin);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char** argv) {
    uint32_t threads = 1;
    size_t mib = 1024;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--threads") == 0) threads = (uint32_t)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--mib") == 0) mib = (size_t)atol(argv[i + 1]);
    }
    if (threads < 1 || threads > 64 || mib < 64) {
        fprintf(stderr, "usage: bench-bandwidth [--threads 1..64] [--mib >= 64]\n");
        return 2;
    }
    size_t bytes = mib << 20;
    uint8_t* data = qwen3_aligned_alloc(bytes);
    Qwen3ThreadPool* pool = qwen3_pool_new(threads);
    if (!data || !pool) {
        fprintf(stderr, "bench-bandwidth: cannot allocate %zu MiB or %u threads\n", mib, threads);
        return 1;
    }
    memset(data, 1, bytes);
    Job job = {.data = data, .bytes = bytes};
    double best = 1e30;
    for (int pass = 0; pass < 6; pass++) {
        double t0 = now_seconds();
        qwen3_pool_run(pool, read_slice, &job, threads);
        double dt = now_seconds() - t0;
        if (pass > 0 && dt < best) best = dt; /* pass 0 warms the pool and the TLB */
    }
    uint64_t check = 0;
    for (uint32_t t = 0; t < threads; t++) check ^= job.sums[t];
    printf("{\"threads\":%u,\"gbPerSecond\":%.3f,\"loads\":\"%s\",\"check\":%llu}\n", threads,
           (double)bytes / best / 1e9, read_probe_name(), (unsigned long long)(check & 1));
    qwen3_pool_free(pool);
    qwen3_aligned_free(data);
    return 0;
}
