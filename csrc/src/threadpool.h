/* threadpool.h - a persistent pool of worker threads (pthreads; Windows threads on
 * Windows) that splits one job into tasks; the calling thread takes part. The pool also
 * has a thread of its own to be that calling thread (qwen3_pool_call). */
#ifndef QWEN3_THREADPOOL_H
#define QWEN3_THREADPOOL_H

#include <stdint.h>

typedef struct Qwen3ThreadPool Qwen3ThreadPool;

/* fn(arg, task, n_tasks) is called once for every task in [0, n_tasks). */
typedef void (*Qwen3TaskFn)(void* arg, uint32_t task, uint32_t n_tasks);

/* n_threads counts the caller: 1 = no worker threads (the pool's own caller thread of
 * qwen3_pool_call is there at any count). NULL on failure (error set). In a child of
 * fork(), which keeps none of the pool's threads, the first qwen3_pool_call finds so and
 * the pool runs everything on the calling thread from then on (a run made there outside a
 * call would wait for the lost workers); its free releases memory only. */
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

/* qwen3_pool_run_phases with a use for the waits: a thread that has claimed task `task` of
 * phase `phase` and waits for the phases before it calls warm(arg, phase, task, n_tasks[phase],
 * step) with step 0, 1, 2, ... between its checks, until the wait is over or warm returns 0.
 * warm must only prepare (prefetch the task's data): whether and how often it runs depends
 * on timing, so it may change speed, never results. */
typedef int (*Qwen3PhaseWarmFn)(void* arg, uint32_t phase, uint32_t task, uint32_t n_tasks, uint32_t step);
void qwen3_pool_run_phases_warm(Qwen3ThreadPool* pool, Qwen3PhaseFn fn, Qwen3PhaseWarmFn warm, void* arg,
                                const uint32_t* n_tasks, uint32_t n_phases);

/* Runs fn(arg) on the pool's own thread and returns when it is done; the runs fn makes
 * have that thread as their calling thread. That thread stays hot between calls (spins for
 * a while before it sleeps, as the workers do), so a caller that is a different thread each
 * time (Deno's FFI worker threads) does not start each call on a core that went idle: on a
 * busy virtual machine that cost a decode step 10-20% (threadpool.c). A call that follows a
 * short one (fn under 2 ms: a tiny model's decode steps, where the caller's wake-up would
 * cost more than the hand-off saves) runs on the calling thread instead. One call at a time
 * per pool, as runs; called from inside a call, fn runs at once on the pool's thread. fn's
 * writes are visible to the caller when this returns. A NULL pool runs fn here. */
typedef void (*Qwen3CallFn)(void* arg);
void qwen3_pool_call(Qwen3ThreadPool* pool, Qwen3CallFn fn, void* arg);

/* What the pool did so far, for tests and measurements. */
typedef struct {
    uint64_t parallel_runs;  /* runs offered to the workers (a phased run counts once) */
    uint64_t solo_runs;      /* runs kept on the caller by the stall detector */
    uint64_t solo_stretches; /* times the stall detector switched to solo runs */
    uint64_t calls;          /* qwen3_pool_call calls run on the pool's own thread */
} Qwen3PoolStats;
Qwen3PoolStats qwen3_pool_stats(const Qwen3ThreadPool* pool);

#endif
