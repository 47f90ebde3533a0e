/* test_threadpool.c - the pool runs every task exactly once, run after run, for 1..8
 * threads and for runs longer than one ticket window; workers that went to sleep wake up; tasks really run in parallel;
 * phased runs keep their phases apart and in order (1..4 threads, many runs); calls run
 * on the pool's own thread, with runs inside them, awake or asleep, the pool's thread rests
 * after a short call, and calls run on the calling thread in a child of fork(); freeing
 * an idle pool returns. A watchdog turns a deadlock into a failure instead of a hang. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if !defined(_WIN32)
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "error.h"
#include "qwen3_inference.h"
#include "test_util.h"
#include "threadpool.h"

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A pool of `threads` threads, or NULL with the failure counted. */
static Qwen3ThreadPool* new_pool(uint32_t threads) {
    Qwen3ThreadPool* pool = qwen3_pool_new(threads);
    CHECK(pool != NULL, "qwen3_pool_new(%u): %s", threads, qwen3_get_last_error());
    return pool;
}

/* ---- every task exactly once ---- */

#define MAX_TASKS 5000

typedef struct {
    _Atomic uint32_t hits[MAX_TASKS];
    _Atomic uint32_t bad_n; /* calls that saw a wrong n_tasks */
    uint32_t expect_n;
} CountJob;

static void count_task(void* arg, uint32_t task, uint32_t n_tasks) {
    CountJob* job = arg;
    if (n_tasks != job->expect_n || task >= n_tasks) {
        atomic_fetch_add(&job->bad_n, 1);
        return;
    }
    atomic_fetch_add(&job->hits[task], 1);
}

static void test_exactly_once(void) {
    static CountJob job;
    static const uint32_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 64, 1000, MAX_TASKS};
    for (uint32_t threads = 1; threads <= 8; threads++) {
        Qwen3ThreadPool* pool = new_pool(threads);
        if (!pool) continue;
        CHECK(qwen3_pool_threads(pool) == threads, "qwen3_pool_threads = %u, want %u", qwen3_pool_threads(pool),
              threads);
        /* Many runs in a row: a generation counter that skips or repeats a job, or a
         * worker still busy with the previous job, shows up as a wrong hit count. */
        for (uint32_t run = 0; run < 300; run++) {
            const uint32_t n = sizes[run % (sizeof sizes / sizeof sizes[0])];
            memset(&job, 0, sizeof job);
            job.expect_n = n;
            qwen3_pool_run(pool, count_task, &job, n);
            uint32_t wrong = 0;
            for (uint32_t t = 0; t < MAX_TASKS; t++) {
                const uint32_t want = t < n ? 1u : 0u;
                if (atomic_load(&job.hits[t]) != want) wrong++;
            }
            CHECK(wrong == 0 && atomic_load(&job.bad_n) == 0,
                  "threads=%u run=%u n_tasks=%u: %u tasks ran a wrong number of times, %u calls saw a bad n_tasks",
                  threads, run, n, wrong, atomic_load(&job.bad_n));
            if (wrong) break;
        }
        qwen3_pool_free(pool);
    }
}

/* ---- runs longer than one ticket window (32768 tasks) ---- */

#define BIG_TASKS 70001u /* two full windows and a partial one */

typedef struct {
    _Atomic uint32_t hits[BIG_TASKS];
    _Atomic uint32_t bad_n;
} BigJob;

static void big_task(void* arg, uint32_t task, uint32_t n_tasks) {
    BigJob* job = arg;
    if (n_tasks != BIG_TASKS || task >= n_tasks) {
        atomic_fetch_add(&job->bad_n, 1);
        return;
    }
    atomic_fetch_add(&job->hits[task], 1);
}

static void test_many_tasks(void) {
    static BigJob job;
    for (uint32_t threads = 1; threads <= 4; threads++) {
        Qwen3ThreadPool* pool = new_pool(threads);
        if (!pool) continue;
        for (int run = 0; run < 3; run++) {
            memset(&job, 0, sizeof job);
            qwen3_pool_run(pool, big_task, &job, BIG_TASKS);
            uint32_t wrong = 0;
            for (uint32_t t = 0; t < BIG_TASKS; t++) wrong += atomic_load(&job.hits[t]) != 1;
            CHECK(wrong == 0 && atomic_load(&job.bad_n) == 0,
                  "threads=%u: %u of %u tasks ran a wrong number of times, %u calls saw a bad index/count", threads,
                  wrong, BIG_TASKS, atomic_load(&job.bad_n));
        }
        qwen3_pool_free(pool);
    }
}

/* ---- sleeping workers wake up ---- */

static void test_wake_after_sleep(void) {
    static CountJob job;
    Qwen3ThreadPool* pool = new_pool(4);
    if (!pool) return;
    for (int round = 0; round < 3; round++) {
        /* Long past the spin phase: the workers are blocked on the condition variable. */
        sleep_ms(60);
        memset(&job, 0, sizeof job);
        job.expect_n = 999;
        qwen3_pool_run(pool, count_task, &job, 999);
        uint32_t wrong = 0;
        for (uint32_t t = 0; t < 999; t++) wrong += atomic_load(&job.hits[t]) != 1;
        CHECK(wrong == 0, "round %d after sleeping: %u tasks ran a wrong number of times", round, wrong);
    }
    qwen3_pool_free(pool);
}

/* ---- tasks run in parallel ---- */

typedef struct {
    _Atomic uint32_t arrived;
    _Atomic uint32_t timed_out;
} MeetJob;

/* Every task waits (bounded) until all tasks have started: only possible when each
 * runs on its own thread at the same time. */
static void meet_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)task;
    MeetJob* job = arg;
    atomic_fetch_add(&job->arrived, 1);
    const double deadline = now_s() + 10.0;
    while (atomic_load(&job->arrived) < n_tasks) {
        if (now_s() > deadline) {
            atomic_fetch_add(&job->timed_out, 1);
            return;
        }
    }
}

static void test_parallel(void) {
    for (uint32_t threads = 2; threads <= 4; threads++) {
        Qwen3ThreadPool* pool = new_pool(threads);
        if (!pool) continue;
        for (int run = 0; run < 5; run++) {
            MeetJob job;
            atomic_init(&job.arrived, 0);
            atomic_init(&job.timed_out, 0);
            qwen3_pool_run(pool, meet_task, &job, threads);
            CHECK(atomic_load(&job.timed_out) == 0,
                  "threads=%u: %u tasks never met the others: tasks did not run concurrently", threads,
                  atomic_load(&job.timed_out));
        }
        qwen3_pool_free(pool);
    }
}

/* ---- phased runs: each phase starts after the last one ended ---- */

#define PH_MAX 20 /* past QWEN3_POOL_MAX_PHASES: longer runs go out phase by phase */
#define PH_TASKS 40

typedef struct {
    uint32_t n[PH_MAX];
    uint32_t n_phases;
    _Atomic uint32_t hits[PH_MAX][PH_TASKS];
    _Atomic uint32_t started[PH_MAX];
    _Atomic uint32_t finished[PH_MAX];
    _Atomic uint32_t bad_order; /* a task that saw an earlier phase unfinished or a later one started */
    _Atomic uint32_t bad_n;
    uint32_t data[PH_MAX][PH_TASKS]; /* plain writes of phase p, read by phase p + 1 */
    _Atomic uint32_t bad_data;
    _Atomic uint32_t spin_sink; /* keeps the busy loop */
    _Atomic uint32_t bad_warm;   /* warm steps for a task that is not waiting */
    _Atomic uint32_t warm_steps;
} PhaseJob;

static void phase_task(void* arg, uint32_t phase, uint32_t task, uint32_t n_tasks) {
    PhaseJob* job = arg;
    if (phase >= job->n_phases || n_tasks != job->n[phase] || task >= n_tasks) {
        atomic_fetch_add(&job->bad_n, 1);
        return;
    }
    atomic_fetch_add(&job->started[phase], 1);
    for (uint32_t q = 0; q < job->n_phases; q++) {
        if (q < phase && atomic_load(&job->finished[q]) != job->n[q]) atomic_fetch_add(&job->bad_order, 1);
        if (q > phase && atomic_load(&job->started[q]) != 0) atomic_fetch_add(&job->bad_order, 1);
    }
    /* The previous phase's plain (non-atomic) writes are visible: the pool's ordering. */
    if (phase > 0) {
        uint32_t p = phase - 1;
        while (p > 0 && job->n[p] == 0) p--;
        for (uint32_t t = 0; t < job->n[p]; t++) {
            if (job->data[p][t] != p * 1000 + t + 1) atomic_fetch_add(&job->bad_data, 1);
        }
    }
    /* Uneven work, so phases overlap in time unless the pool keeps them apart. */
    uint32_t sink = 0;
    for (uint32_t i = 0; i < (task * 7919u + phase * 104729u) % 3000u; i++) sink = sink * 31u + i;
    atomic_fetch_add(&job->spin_sink, sink);
    job->data[phase][task] = phase * 1000 + task + 1;
    atomic_fetch_add(&job->hits[phase][task], 1);
    atomic_fetch_add(&job->finished[phase], 1);
}

/* A warm step (qwen3_pool_run_phases_warm): only for a claimed task of a real phase that
 * has not run yet, steps counting up from 0 within one wait. */
static int phase_warm(void* arg, uint32_t phase, uint32_t task, uint32_t n_tasks, uint32_t step) {
    PhaseJob* job = arg;
    if (phase >= job->n_phases || n_tasks != job->n[phase] || task >= n_tasks ||
        atomic_load(&job->hits[phase][task]) != 0 || phase == 0) {
        atomic_fetch_add(&job->bad_warm, 1);
        return 0;
    }
    atomic_fetch_add(&job->warm_steps, 1);
    return step < 3;
}

static void test_phases(void) {
    static PhaseJob job;
    uint64_t rng = 12345;
    uint64_t warm_steps = 0;
    for (uint32_t threads = 1; threads <= 4; threads++) {
        Qwen3ThreadPool* pool = new_pool(threads);
        if (!pool) continue;
        static CountJob plain;
        for (uint32_t run = 0; run < 400; run++) {
            memset(&job, 0, sizeof job);
            /* Phase shapes as a decode layer has them (many tasks, one serial task, none)
             * and random ones; every third run a plain run in between, so the two kinds
             * of window follow each other. */
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            job.n_phases = 1 + (uint32_t)(rng >> 56) % PH_MAX;
            for (uint32_t p = 0; p < job.n_phases; p++) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                const uint32_t kind = (uint32_t)(rng >> 59) % 4;
                job.n[p] = kind == 0 ? 1 : kind == 1 ? 0 : 1 + (uint32_t)(rng >> 33) % PH_TASKS;
            }
            if (run % 2) {
                qwen3_pool_run_phases_warm(pool, phase_task, phase_warm, &job, job.n, job.n_phases);
            } else {
                qwen3_pool_run_phases(pool, phase_task, &job, job.n, job.n_phases);
            }
            warm_steps += atomic_load(&job.warm_steps);
            CHECK(atomic_load(&job.bad_warm) == 0, "threads=%u run=%u: %u warm steps for a task not waiting",
                  threads, run, atomic_load(&job.bad_warm));
            uint32_t wrong = 0;
            for (uint32_t p = 0; p < PH_MAX; p++) {
                for (uint32_t t = 0; t < PH_TASKS; t++) {
                    const uint32_t want = p < job.n_phases && t < job.n[p] ? 1u : 0u;
                    wrong += atomic_load(&job.hits[p][t]) != want;
                }
            }
            CHECK(wrong == 0 && atomic_load(&job.bad_n) == 0 && atomic_load(&job.bad_order) == 0 &&
                      atomic_load(&job.bad_data) == 0,
                  "threads=%u run=%u (%u phases): %u tasks ran a wrong number of times, %u bad counts, %u out of "
                  "order, %u stale reads",
                  threads, run, job.n_phases, wrong, atomic_load(&job.bad_n), atomic_load(&job.bad_order),
                  atomic_load(&job.bad_data));
            if (wrong || atomic_load(&job.bad_order)) break;
            if (run % 3 == 0) {
                memset(&plain, 0, sizeof plain);
                plain.expect_n = 9;
                qwen3_pool_run(pool, count_task, &plain, 9);
                uint32_t bad = 0;
                for (uint32_t t = 0; t < MAX_TASKS; t++) bad += atomic_load(&plain.hits[t]) != (t < 9 ? 1u : 0u);
                CHECK(bad == 0, "threads=%u: a plain run after a phased one ran %u tasks wrongly", threads, bad);
            }
        }
        /* No tasks at all, and an empty phase list. */
        const uint32_t none[3] = {0, 0, 0};
        qwen3_pool_run_phases(pool, phase_task, &job, none, 3);
        qwen3_pool_run_phases(pool, phase_task, &job, none, 0);
        qwen3_pool_free(pool);
    }
    printf("phased runs: %llu warm steps while tasks waited for earlier phases\n", (unsigned long long)warm_steps);
}

/* ---- a worker that stalls every run sends the pool solo, and it comes back ---- */

static _Thread_local int on_caller; /* set on the thread that calls qwen3_pool_run */

typedef struct {
    _Atomic uint32_t hits[16];
    _Atomic uint32_t on_workers;
} StallJob;

/* Tasks on a worker take 10 ms, as if the worker lost its core in the middle of them;
 * on the caller 100 us of spinning, so a spinning worker gets to claim some. One worker
 * task then outlasts twice everything the caller does in a run (16 x 100 us), which is
 * what the detector counts as a stall, however the tasks happen to be shared out. */
static void stall_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    StallJob* job = arg;
    atomic_fetch_add(&job->hits[task], 1);
    if (!on_caller) {
        atomic_fetch_add(&job->on_workers, 1);
        sleep_ms(10);
    } else {
        const double until = now_s() + 100e-6;
        while (now_s() < until) {
        }
    }
}

/* `runs` runs of stall_task over n_tasks tasks; adds tasks that ran other than once to
 * *wrong and returns how many ran on workers. */
static uint32_t stall_runs(Qwen3ThreadPool* pool, StallJob* job, int runs, uint32_t n_tasks, uint32_t* wrong) {
    uint32_t on_workers = 0;
    for (int r = 0; r < runs; r++) {
        memset(job, 0, sizeof *job);
        qwen3_pool_run(pool, stall_task, job, n_tasks);
        for (uint32_t t = 0; t < n_tasks; t++) *wrong += atomic_load(&job->hits[t]) != 1;
        on_workers += atomic_load(&job->on_workers);
    }
    return on_workers;
}

static void test_stall_fallback(void) {
    on_caller = 1;
    Qwen3ThreadPool* pool = new_pool(2);
    if (!pool) return;
    static StallJob job;
    uint32_t runs = 0, wrong = 0, stalled_tasks = 0;
    /* Until the detector reacts (one window of 32 runs, with slack for a slow box). */
    while (qwen3_pool_stats(pool).solo_stretches == 0 && runs < 1000) {
        memset(&job, 0, sizeof job);
        qwen3_pool_run(pool, stall_task, &job, 16);
        for (int t = 0; t < 16; t++) wrong += atomic_load(&job.hits[t]) != 1;
        stalled_tasks += atomic_load(&job.on_workers);
        runs++;
    }
    const Qwen3PoolStats s1 = qwen3_pool_stats(pool);
    if (s1.solo_stretches == 0 && stalled_tasks < 64) {
        /* On a saturated machine the worker may never get a core to claim (and stall) a
         * task: then there is nothing to detect, and the scheduler, not the pool, decided. */
        printf("stall fallback SKIPPED: the worker claimed only %u tasks in %u runs (no core)\n",
               stalled_tasks, runs);
        CHECK(wrong == 0, "%u tasks ran a wrong number of times", wrong);
        qwen3_pool_free(pool);
        return;
    }
    CHECK(s1.solo_stretches == 1, "after %u runs whose worker tasks stall, no solo stretch (%llu)", runs,
          (unsigned long long)s1.solo_stretches);
    /* Solo runs: every task on the caller, still exactly once. */
    const uint32_t on_workers = stall_runs(pool, &job, 100, 16, &wrong);
    const Qwen3PoolStats s2 = qwen3_pool_stats(pool);
    CHECK(on_workers == 0 && s2.solo_runs == 100, "solo stretch: %u tasks ran on workers, %llu solo runs", on_workers,
          (unsigned long long)s2.solo_runs);
    CHECK(wrong == 0, "%u tasks ran a wrong number of times", wrong);
    /* After the stretch (256 runs) the workers get runs again. */
    for (int r = 0; r < 300; r++) {
        memset(&job, 0, sizeof job);
        qwen3_pool_run(pool, stall_task, &job, 2);
    }
    CHECK(qwen3_pool_stats(pool).parallel_runs > s2.parallel_runs, "the workers never got a run back");
    qwen3_pool_free(pool);
}

/* ---- runs of at most one task per thread are not judged ---- */

/* The same tasks (10 ms on a worker, 100 us on the caller) in runs of 3 tasks on a
 * 4-thread pool: each thread runs at most one, so a long worker task is not evidence of a
 * stalled worker (a prefill's per-token runs on 16 threads look like this when a task first
 * touches new cache pages) and must not send the pool solo. The old rule went solo within
 * one window of 32 such runs. */
static void test_few_tasks_not_judged(void) {
    on_caller = 1;
    Qwen3ThreadPool* pool = new_pool(4);
    if (!pool) return;
    static StallJob job;
    uint32_t wrong = 0;
    const uint32_t slow_tasks = stall_runs(pool, &job, 100, 3, &wrong);
    const Qwen3PoolStats s = qwen3_pool_stats(pool);
    printf("few tasks: %u of 300 tasks ran on workers, %llu solo stretches\n", slow_tasks,
           (unsigned long long)s.solo_stretches);
    CHECK(s.solo_stretches == 0 && s.solo_runs == 0, "runs of 3 tasks on 4 threads went solo (%llu stretches)",
          (unsigned long long)s.solo_stretches);
    CHECK(wrong == 0, "%u tasks ran a wrong number of times", wrong);
    qwen3_pool_free(pool);
}

/* ---- calls run on the pool's own thread ---- */

static _Thread_local int on_test_thread; /* set on the thread that calls qwen3_pool_call */

typedef struct {
    Qwen3ThreadPool* pool;
    CountJob* count;
    uint32_t n_tasks;
    int ran_here;   /* fn saw on_test_thread set */
    int nested_ran; /* a qwen3_pool_call from inside fn ran */
    uint32_t value; /* a plain write the caller reads after the call */
    double busy_s;  /* how long fn works (calls under 2 ms go inline after the first) */
} CallJob;

static void nested_fn(void* arg) { ((CallJob*)arg)->nested_ran = 1; }

static void call_fn(void* arg) {
    CallJob* job = arg;
    job->ran_here = on_test_thread;
    if (job->pool) {
        qwen3_pool_run(job->pool, count_task, job->count, job->n_tasks);
        qwen3_pool_call(job->pool, nested_fn, job); /* inline: must not wait for itself */
    } else {
        nested_fn(job);
    }
    job->value = job->n_tasks * 3u + 1u;
    const double until = now_s() + job->busy_s;
    while (now_s() < until) {
    }
}

static void test_calls(void) {
    on_test_thread = 1;
    static CountJob count;
    for (uint32_t threads = 1; threads <= 4; threads++) {
        Qwen3ThreadPool* pool = new_pool(threads);
        if (!pool) continue;
        uint32_t wrong_place = 0, wrong_tasks = 0, stale = 0, no_nested = 0, short_here = 0;
        const uint32_t calls = 120;
        for (uint32_t i = 0; i < calls; i++) {
            /* now and then the pool's thread has spun out and sleeps */
            if (i % 40 == 39) sleep_ms(30);
            memset(&count, 0, sizeof count);
            count.expect_n = 1 + i % 37;
            /* calls 0-79 long (the runner's), 80-119 short (the caller's after the first) */
            CallJob job = {.pool = pool, .count = &count, .n_tasks = count.expect_n, .busy_s = i < 80 ? 0.003 : 0};
            qwen3_pool_call(pool, call_fn, &job);
            if (i < 80) {
                wrong_place += job.ran_here;
            } else {
                short_here += job.ran_here;
            }
            no_nested += !job.nested_ran;
            stale += job.value != job.n_tasks * 3u + 1u;
            for (uint32_t t = 0; t < MAX_TASKS; t++) {
                wrong_tasks += atomic_load(&count.hits[t]) != (t < job.n_tasks ? 1u : 0u);
            }
        }
        CHECK(wrong_place == 0, "threads=%u: %u of 80 long calls ran on the calling thread", threads, wrong_place);
        /* 39 when no short call was preempted past 2 ms (which sends the next one over) */
        CHECK(short_here >= 20, "threads=%u: %u of the 39 short calls after a short one ran on the calling thread",
              threads, short_here);
        CHECK(wrong_tasks == 0 && atomic_load(&count.bad_n) == 0,
              "threads=%u: runs inside calls ran %u tasks wrongly", threads, wrong_tasks);
        CHECK(no_nested == 0, "threads=%u: a call from inside a call did not run (%u times)", threads, no_nested);
        CHECK(stale == 0, "threads=%u: %u calls' writes were not visible after they returned", threads, stale);
        CHECK(qwen3_pool_stats(pool).calls == calls - short_here,
              "threads=%u: stats count %llu calls on the pool's thread, want %u", threads,
              (unsigned long long)qwen3_pool_stats(pool).calls, calls - short_here);
        qwen3_pool_free(pool);
    }
    /* No pool: fn runs on the calling thread. */
    CallJob job = {.n_tasks = 5};
    qwen3_pool_call(NULL, call_fn, &job);
    CHECK(job.ran_here == 1 && job.nested_ran && job.value == 16, "qwen3_pool_call(NULL) did not run fn here");
}

/* ---- after a short call the runner sleeps at once: the next call runs on its caller ---- */

#if !defined(_WIN32)
static double cpu_seconds(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

static void test_runner_rests(void) {
    on_test_thread = 1;
    Qwen3ThreadPool* pool = new_pool(1); /* the runner and no workers */
    if (!pool) return;
    static CountJob count;
    uint32_t not_runner = 0, busy = 0;
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        memset(&count, 0, sizeof count);
        count.expect_n = 1;
        CallJob long_call = {.pool = pool, .count = &count, .n_tasks = 1, .busy_s = 0.003};
        qwen3_pool_call(pool, call_fn, &long_call); /* on the runner, which then spins */
        memset(&count, 0, sizeof count);
        CallJob short_call = {.pool = pool, .count = &count, .n_tasks = 1};
        qwen3_pool_call(pool, call_fn, &short_call); /* still the runner's: the last call was long */
        not_runner += short_call.ran_here;
        const double c0 = cpu_seconds();
        sleep_ms(10);
        const double used = cpu_seconds() - c0;
        busy += used > 0.002;
        if (used > worst) worst = used;
    }
    CHECK(not_runner == 0, "%u of 5 short calls after a long one ran on the calling thread", not_runner);
    /* spinning after it would burn RUNNER_SPIN_SECONDS (4 ms) of CPU in those 10 ms */
    CHECK(busy == 0, "the runner kept a core busy after %u of 5 short calls (up to %.1f ms of CPU in 10 ms)", busy,
          worst * 1e3);
    qwen3_pool_free(pool);
}
#endif

/* ---- a child of fork() has none of the pool's threads: it runs alone ---- */

#if !defined(_WIN32)
static void test_fork(void) {
    on_test_thread = 1;
    Qwen3ThreadPool* pool = new_pool(3);
    if (!pool) return;
    static CountJob count;
    count.expect_n = 20;
    CallJob job = {.pool = pool, .count = &count, .n_tasks = 20};
    qwen3_pool_call(pool, call_fn, &job); /* the threads exist and ran once */
    fflush(stdout);
    const pid_t pid = fork();
    if (pid == 0) {
        alarm(30); /* a child does not inherit the parent's alarm */
        memset(&count, 0, sizeof count);
        count.expect_n = 20;
        CallJob child = {.pool = pool, .count = &count, .n_tasks = 20};
        qwen3_pool_call(pool, call_fn, &child);
        uint32_t wrong = 0;
        for (uint32_t t = 0; t < 20; t++) wrong += atomic_load(&count.hits[t]) != 1;
        const int ok = child.ran_here == 1 && child.nested_ran && wrong == 0;
        qwen3_pool_free(pool);
        _exit(ok ? 0 : 1);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "a child of fork() could not run a call and its tasks on its own thread (status %d)", status);
    qwen3_pool_free(pool);
}
#endif

/* ---- lifecycle ---- */

static void test_lifecycle(void) {
    /* Freed at once (workers maybe not even started), and freed after they fell asleep. */
    for (uint32_t threads = 1; threads <= 8; threads++) {
        Qwen3ThreadPool* pool = new_pool(threads);
        qwen3_pool_free(pool);
    }
    Qwen3ThreadPool* pool = new_pool(3);
    sleep_ms(60);
    qwen3_pool_free(pool);
    qwen3_pool_free(NULL);

    qwen3_error_clear();
    CHECK(qwen3_pool_new(0) == NULL, "qwen3_pool_new(0) must fail");
    CHECK(strstr(qwen3_get_last_error(), "n_threads") != NULL, "error names the field: '%s'",
          qwen3_get_last_error());
    CHECK(qwen3_pool_new(100000) == NULL, "qwen3_pool_new(100000) must fail");
}

int main(void) {
#if !defined(_WIN32)
    /* A deadlocked pool would hang `zig build test`; SIGALRM's default action ends the
     * process with a failure status instead. */
    alarm(60);
#endif
    const double t0 = now_s();
    test_exactly_once();
    test_many_tasks();
    test_wake_after_sleep();
    test_parallel();
    test_phases();
    test_stall_fallback();
    test_few_tasks_not_judged();
    test_calls();
#if !defined(_WIN32)
    test_runner_rests();
    test_fork();
#endif
    test_lifecycle();
    if (tu_failures) {
        fprintf(stderr, "test_threadpool: %d failure(s)\n", tu_failures);
        return 1;
    }
    printf("test_threadpool: ok (%.2f s)\n", now_s() - t0);
    return 0;
}
