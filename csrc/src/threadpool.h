/* threadpool.h - a persistent pool of worker threads (pthreads; Windows threads on
 * Windows) that splits one job into tasks; the calling thread takes part. */
#ifndef QWEN3_THREADPOOL_H
#define QWEN3_THREADPOOL_H

#include <stdint.h>

typedef struct Qwen3ThreadPool Qwen3ThreadPool;

/* fn(arg, task, n_tasks) is called once for every task in [0, n_tasks). */
typedef void (*Qwen3TaskFn)(void* arg, uint32_t task, uint32_t n_tasks);

/* n_threads counts the caller: 1 = no worker threads. NULL on failure (error set). */
Qwen3ThreadPool* qwen3_pool_new(uint32_t n_threads);
void qwen3_pool_free(Qwen3ThreadPool* pool);
uint32_t qwen3_pool_threads(const Qwen3ThreadPool* pool);

/* Runs every task and returns when all are done. Not reentrant: one run at a time per
 * pool (the model serialises forward passes around it). When workers keep stalling
 * runs (preempted on a busy machine), runs go to the calling thread alone for a while
 * (threadpool.c); tasks must not depend on running concurrently. */
void qwen3_pool_run(Qwen3ThreadPool* pool, Qwen3TaskFn fn, void* arg, uint32_t n_tasks);

/* A run in phases: phase p has n_tasks[p] tasks (0 allowed), fn(arg, p, task,
 * n_tasks[p]) is called once for each, and no task of phase p starts before every task of
 * the phases before it has finished (their writes visible to it). One hand-off to the
 * workers covers all phases, so a decode step's stages (matvec -> elementwise -> matvec)
 * cost one publication per layer instead of one per stage; a phase of one task is a
 * serial step that the thread reaching it runs while the others wait. Same rules as
 * qwen3_pool_run otherwise (at most QWEN3_POOL_MAX_PHASES phases). */
#define QWEN3_POOL_MAX_PHASES 16u
typedef void (*Qwen3PhaseFn)(void* arg, uint32_t phase, uint32_t task, uint32_t n_tasks);
void qwen3_pool_run_phases(Qwen3ThreadPool* pool, Qwen3PhaseFn fn, void* arg, const uint32_t* n_tasks,
                           uint32_t n_phases);

/* What the pool did so far, for tests and measurements. */
typedef struct {
    uint64_t parallel_runs;  /* runs offered to the workers (a phased run counts once) */
    uint64_t solo_runs;      /* runs kept on the caller by the stall detector */
    uint64_t solo_stretches; /* times the stall detector switched to solo runs */
} Qwen3PoolStats;
Qwen3PoolStats qwen3_pool_stats(const Qwen3ThreadPool* pool);

#endif
