/* threadpool.c - a persistent pool of workers for splitting one matmul into row tasks.
 *
 * A forward pass runs many short jobs (a prefill block one or more per stage, a decode
 * step one phased run per layer: see below), so the cost that matters is the hand-off,
 * not the work: threads are created once; a job is published by bumping an atomic
 * generation counter that idle workers spin on for a while (a wake-up through the kernel
 * costs tens of microseconds, a spinning worker sees the bump within ~100 ns) and only
 * then sleep on a condition variable; tasks are claimed from one atomic ticket, never
 * under a lock; the calling thread works too.
 *
 * The ticket packs (generation, task count, next index) into 64 bits, so a claim is one
 * compare-and-swap that succeeds only for the job the worker woke up for. That lets the
 * caller return as soon as every task is DONE, without waiting for workers that never
 * got a core (on a busy machine a descheduled worker would otherwise stall each of the
 * jobs of a token by a scheduler time slice): a latecomer finds a newer generation
 * in the ticket and claims nothing. A claimed task pins its job (the caller waits for
 * it), so the job fields read after a successful claim are the right ones.
 *
 * What the ticket cannot fix: a worker preempted in the middle of a task it claimed.
 * The caller must wait for that task, and on a machine with more runnable threads than
 * cores the worker gets a core back only after other processes' time slices (many
 * milliseconds) - on the shared 2-core box two threads then decoded 3x SLOWER than one.
 * So the caller times every run: how long it waited for others after running out of
 * tasks, beyond the time it worked itself (in a healthy run the others finish within one
 * task of the caller). When that excess is more than a fifth of the time of a window of
 * runs, the pool runs the next runs on the caller alone (the workers spin out and sleep,
 * which also leaves the busy cores to the other processes), then tries the workers again;
 * each failed try doubles the solo stretch, each clean window halves it. A quiet machine
 * never leaves parallel mode; a busy one costs at most about one window of stalls per
 * stretch. Only runs with more tasks than threads are judged: with at most one task per
 * thread the caller's one task says nothing about the others' (a prefill's per-token runs
 * hand 16 threads 8 tasks, and a worker whose task first touches new KV cache pages takes
 * several times longer). On a 16-core Xeon those runs alone sent q8 and f32 prefills of
 * 2048 tokens solo for 256-512 runs, at 1088-1270 tok/s against 1600-1686 without.
 *
 * Phased runs (qwen3_pool_run_phases): the stages of a decode layer (Q/K/V matvecs,
 * attention, a norm, more matvecs) depend on each other, and as separate runs they cost
 * one publication and one end-of-run wait each (~141 per token of Qwen3-0.6B). One
 * window then holds all phases' tasks back to back; a thread that claims a task of phase
 * p first waits until the window's `done` count reaches the number of tasks before phase
 * p. Nobody waits for a thread, only for tasks, so the latecomer rule above still holds:
 * a worker that never got a core claims nothing, and the others run its share. A thread
 * waiting so knows its next task, so qwen3_pool_run_phases_warm lets it prefetch that
 * task's data meanwhile (a decode layer warms its matvec rows: transformer.c).
 *
 * The pool's own caller (qwen3_pool_call): Deno's nonblocking FFI calls run on whichever
 * of its worker threads is free, so each decode step used to start on a thread that had
 * slept since the step before last, on a vCPU that had gone idle. On the busy 2-vCPU
 * Xeon VM of bench/RESULTS.md that cost 10-12% of decode speed (bench/handoff_bench.ts:
 * 14.87 against 16.93 tok/s at 1 thread, some steps twice as long), and a plain C program
 * that handed steps to a sleeping thread lost the same, while one whose other thread kept
 * its core busy did not; on a quiet host the loss was 1.4%. So the forward passes of a
 * model run on one thread of the pool, the runner, that spins for RUNNER_SPIN_SECONDS after
 * each call of 2 ms or more before it sleeps: steps that follow each other closely (a
 * decode loop) find it on a core that never went idle, and the thread that asked only
 * waits. The caller posts a call as the workers' jobs are posted (a counter the runner
 * spins on, a sleeper hand-shake) and sleeps on a condition variable until the runner says
 * it is done. A call that follows one of under 2 ms (a tiny model's decode steps) runs on
 * the calling thread instead: the caller's wake-up would cost such a step more than it
 * saves (CALL_INLINE_MAX); so after a short call the runner does not spin, as its next
 * call will not come to it.
 */
#include "threadpool.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "platform.h"

#if defined(_WIN32)
#include <windows.h>
#else
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#endif

/* A worker polls this many times (each a pause/yield hint of ~10-150 cycles) after its
 * last job before it goes to sleep: long enough to bridge the gap between two matmuls of
 * a forward pass, short enough not to burn a core while the model sits idle. */
#define SPIN_ROUNDS 20000
/* The caller polls this many times for tasks still running on workers before yielding
 * its core, which matters when threads outnumber free cores. */
#define WAIT_ROUNDS 2000
/* More threads than this is a caller bug, not a machine. */
#define MAX_THREADS 1024
/* Tasks per ticket window (16-bit count and index fields, headroom for one empty claim
 * per thread); longer runs go out in several windows. */
#define WINDOW_TASKS 32768u
/* Parallel runs judged together, and the bounds of a solo stretch (in runs; a decode
 * step of Qwen3-0.6B makes about 30, one phased run per layer; a prefill block a few
 * hundred). */
#define JUDGE_RUNS 32u
#define SOLO_MIN 256u
#define SOLO_MAX 16384u
/* The runner spins this long after a call before it sleeps: longer than what a decode
 * loop does between two steps (sampling, a Deno promise), short enough that an idle model
 * does not burn a core. */
#define RUNNER_SPIN_SECONDS 0.004
/* A call that follows one shorter than this runs on the calling thread: a tiny model's
 * step takes a tenth of a millisecond, of which the caller's wake-up through the kernel
 * would be a large share (the demo model decoded 25% slower handed off), while what the
 * runner saves is a share of long steps. */
#define CALL_INLINE_MAX 0.002
/* Stack of the runner: what a main thread gets, as forward passes used to run there. */
#define RUNNER_STACK_BYTES ((size_t)8 << 20)

/* ------------------------------------------------------------------------------------
 * platform layer
 * ---------------------------------------------------------------------------------- */
#if defined(_WIN32)
typedef HANDLE Thread;
typedef SRWLOCK Mutex;
typedef CONDITION_VARIABLE Cond;
static void mutex_init(Mutex* m) { InitializeSRWLock(m); }
static void mutex_deinit(Mutex* m) { (void)m; }
static void mutex_lock(Mutex* m) { AcquireSRWLockExclusive(m); }
static void mutex_unlock(Mutex* m) { ReleaseSRWLockExclusive(m); }
static void cond_init(Cond* c) { InitializeConditionVariable(c); }
static void cond_deinit(Cond* c) { (void)c; }
static void cond_wait(Cond* c, Mutex* m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
static void cond_broadcast(Cond* c) { WakeAllConditionVariable(c); }
static void yield_core(void) { SwitchToThread(); }
static int is_current(HANDLE thread) { return GetThreadId(thread) == GetCurrentThreadId(); }
static long process_id(void) { return 0; } /* no fork() */
#else
typedef pthread_t Thread;
typedef pthread_mutex_t Mutex;
typedef pthread_cond_t Cond;
static void mutex_init(Mutex* m) { pthread_mutex_init(m, NULL); }
static void mutex_deinit(Mutex* m) { pthread_mutex_destroy(m); }
static void mutex_lock(Mutex* m) { pthread_mutex_lock(m); }
static void mutex_unlock(Mutex* m) { pthread_mutex_unlock(m); }
static void cond_init(Cond* c) { pthread_cond_init(c, NULL); }
static void cond_deinit(Cond* c) { pthread_cond_destroy(c); }
static void cond_wait(Cond* c, Mutex* m) { pthread_cond_wait(c, m); }
static void cond_broadcast(Cond* c) { pthread_cond_broadcast(c); }
static void yield_core(void) { sched_yield(); }
static int is_current(pthread_t thread) { return pthread_equal(thread, pthread_self()); }
static long process_id(void) { return (long)getpid(); }
#endif

/* Tells the core this is a spin loop: saves power and, on SMT cores, yields issue
 * slots to the sibling thread. */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield");
#endif
}

/* ------------------------------------------------------------------------------------
 * pool
 * ---------------------------------------------------------------------------------- */

/* Fields written by different threads sit on different cache lines, so claiming a task
 * does not bounce the line the sleepers poll. */
#define PAD(name) char name[64]

struct Qwen3ThreadPool {
    uint32_t n_threads; /* counts the caller */
    Thread* workers;    /* (n_threads - 1) */
    uint32_t n_started; /* workers actually running (< n_threads - 1 only while failing) */
    long pid;           /* the process the threads run in: a fork()ed child has none of them */

    /* The job: written by the caller before the ticket is published, stable while any
     * of its tasks is claimed and not done. */
    Qwen3TaskFn fn;
    void* arg;
    uint32_t first_task; /* task index of the window's index 0 */
    uint32_t n_tasks;    /* of the whole run, passed to fn */
    /* A phased run (qwen3_pool_run_phases; n_phases 0 otherwise): one window whose
     * indices [phase_start[p], phase_start[p + 1]) are phase p's tasks. */
    Qwen3PhaseFn phase_fn;
    Qwen3PhaseWarmFn phase_warm; /* NULL, or what a thread does while its phase waits */
    uint32_t n_phases;
    uint32_t phase_start[QWEN3_POOL_MAX_PHASES + 1];
    PAD(pad0);
    /* generation (32) | tasks in window (16) | next index (16) */
    _Atomic uint64_t ticket;
    PAD(pad1);
    _Atomic uint32_t done; /* tasks of the current window finished */
    PAD(pad2);
    _Atomic uint32_t generation; /* bumped once per window (and once to stop) */
    _Atomic uint32_t sleepers;   /* workers blocked (or about to block) on `wake` */
    _Atomic int stop;
    PAD(pad3);
    Mutex lock;
    Cond wake;

    /* The runner (qwen3_pool_call; see the top of this file). call_fn / call_arg are
     * written by the caller before it bumps `posted`. */
    Thread runner;
    int runner_started;
    Qwen3CallFn call_fn;
    void* call_arg;
    PAD(pad4);
    _Atomic uint32_t posted;          /* calls posted (and one more to stop) */
    _Atomic uint32_t runner_sleeping; /* 1 while the runner blocks (or is about to) on call_wake */
    _Atomic int runner_stop;
    PAD(pad5);
    uint32_t finished; /* calls done; under call_lock */
    double last_call;  /* seconds the last call's fn ran, without the hand-off (set by whoever ran it) */
    Mutex call_lock;
    Cond call_wake;     /* the runner sleeps on it */
    Cond call_finished; /* callers sleep on it */

    /* Caller-only bookkeeping of the stall detector (see the top of this file). */
    uint32_t solo_left;  /* runs still to do on the caller alone */
    uint32_t solo_next;  /* length of the next solo stretch */
    uint32_t judged;     /* parallel runs in the current window */
    double window_time;  /* seconds the window's runs took */
    double window_stall; /* seconds of waiting beyond the caller's own work */
    Qwen3PoolStats stats;
};

static uint64_t make_ticket(uint32_t generation, uint32_t n) { return ((uint64_t)generation << 32) | ((uint64_t)n << 16); }

/* Waits until `target` tasks of the current window are done (acquire: their writes are
 * visible after it): spins, then yields the core to whoever runs them. */
static void wait_done(Qwen3ThreadPool* pool, uint32_t target) {
    for (uint32_t i = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < target; i++) {
        if (i < WAIT_ROUNDS) {
            cpu_relax();
        } else {
            yield_core();
        }
    }
}

/* Runs window index `index` of a phased run. Its phase p waits for every task of the
 * phases before it. Counting alone says so: indices are claimed in order, and a task of
 * phase q >= p starts only once `done` >= phase_start[q] >= phase_start[p], so when
 * `done` first reaches phase_start[p], the tasks that finished are exactly the
 * phase_start[p] tasks of phases 0 .. p-1. */
static void run_phase_task(Qwen3ThreadPool* pool, uint32_t index, double* work) {
    uint32_t p = 0;
    while (index >= pool->phase_start[p + 1]) p++;
    const uint32_t task = index - pool->phase_start[p], n = pool->phase_start[p + 1] - pool->phase_start[p];
    if (pool->phase_warm) {
        /* Warm this task's data while the phases before it finish: each step a small
         * piece, so the end of the wait is seen soon after it comes. */
        for (uint32_t step = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < pool->phase_start[p];) {
            if (!pool->phase_warm(pool->arg, p, task, n, step++)) break;
        }
    }
    wait_done(pool, pool->phase_start[p]);
    const double w0 = work ? qwen3_time_seconds() : 0;
    pool->phase_fn(pool->arg, p, task, n);
    if (work) *work += qwen3_time_seconds() - w0;
}

/* Claims and runs tasks of window `generation` until none is left or a newer window
 * replaced it. In a phased run, `work` (the caller's, else NULL) adds the seconds spent
 * inside tasks, not waiting for earlier phases. */
static void run_tasks(Qwen3ThreadPool* pool, uint32_t generation, double* work) {
    uint64_t t = atomic_load_explicit(&pool->ticket, memory_order_relaxed);
    for (;;) {
        if ((uint32_t)(t >> 32) != generation) return;
        const uint32_t n = (uint32_t)(t >> 16) & 0xffff;
        const uint32_t index = (uint32_t)t & 0xffff;
        if (index >= n) return;
        /* Acquire: pairs with the release store that published this window, so the job
         * fields below are this window's. On failure t is reloaded and rechecked. */
        if (atomic_compare_exchange_weak_explicit(&pool->ticket, &t, t + 1, memory_order_acquire,
                                                  memory_order_relaxed)) {
            if (pool->n_phases) {
                run_phase_task(pool, index, work);
            } else {
                pool->fn(pool->arg, pool->first_task + index, pool->n_tasks);
            }
            atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
            t = atomic_load_explicit(&pool->ticket, memory_order_relaxed);
        }
    }
}

/* Blocks until *counter is no longer `seen` and returns its value. Dekker-style hand-shake
 * with wake_sleepers(): we announce ourselves in *sleepers (seq_cst) before re-reading the
 * counter (seq_cst), the publisher stores the counter before reading *sleepers; one of us
 * sees the other, so a bump made now is never missed while we block. */
static uint32_t sleep_while(Mutex* lock, Cond* wake, _Atomic uint32_t* sleepers, _Atomic uint32_t* counter,
                            uint32_t seen) {
    uint32_t g;
    mutex_lock(lock);
    atomic_fetch_add(sleepers, 1);
    while ((g = atomic_load(counter)) == seen) cond_wait(wake, lock);
    atomic_fetch_sub(sleepers, 1);
    mutex_unlock(lock);
    return g;
}

/* Stores g into *counter and wakes whoever sleep_while() blocks on it. */
static void wake_sleepers(Mutex* lock, Cond* wake, _Atomic uint32_t* sleepers, _Atomic uint32_t* counter,
                          uint32_t g) {
    atomic_store(counter, g);
    if (atomic_load(sleepers) > 0) {
        mutex_lock(lock);
        cond_broadcast(wake);
        mutex_unlock(lock);
    }
}

static void worker_loop(Qwen3ThreadPool* pool) {
    uint32_t seen = 0; /* the pool starts at generation 0 */
    for (;;) {
        uint32_t g = seen;
        for (int i = 0; i < SPIN_ROUNDS; i++) {
            g = atomic_load_explicit(&pool->generation, memory_order_acquire);
            if (g != seen) break;
            cpu_relax();
        }
        if (g == seen) g = sleep_while(&pool->lock, &pool->wake, &pool->sleepers, &pool->generation, seen);
        seen = g;
        if (atomic_load_explicit(&pool->stop, memory_order_relaxed)) return;
        run_tasks(pool, g, NULL);
    }
}

/* fn(arg), and how many seconds it ran: what decides where the next call runs. */
static double run_timed(Qwen3CallFn fn, void* arg) {
    const double t0 = qwen3_time_seconds();
    fn(arg);
    return qwen3_time_seconds() - t0;
}

static void runner_loop(Qwen3ThreadPool* pool) {
    uint32_t seen = 0;
    /* Spin only after a call that the next one will follow onto this thread: after a short
     * one it runs on its caller (qwen3_pool_call), and a spinning runner would only take a
     * core from the caller and the workers (a tiny model's steps after each prefill). */
    int spin = 0;
    for (;;) {
        uint32_t g = atomic_load_explicit(&pool->posted, memory_order_acquire);
        if (g == seen && spin) {
            const double until = qwen3_time_seconds() + RUNNER_SPIN_SECONDS;
            for (uint32_t i = 1; (g = atomic_load_explicit(&pool->posted, memory_order_acquire)) == seen; i++) {
                cpu_relax();
                if (i % 256 == 0 && qwen3_time_seconds() > until) break;
            }
        }
        if (g == seen) g = sleep_while(&pool->call_lock, &pool->call_wake, &pool->runner_sleeping, &pool->posted, seen);
        seen = g;
        if (atomic_load_explicit(&pool->runner_stop, memory_order_relaxed)) return;
        const double took = run_timed(pool->call_fn, pool->call_arg);
        spin = took >= CALL_INLINE_MAX;
        pool->stats.calls++;
        /* the lock orders fn's writes before the caller's wake-up */
        mutex_lock(&pool->call_lock);
        pool->last_call = took;
        pool->finished = g;
        cond_broadcast(&pool->call_finished);
        mutex_unlock(&pool->call_lock);
    }
}

#if defined(_WIN32)
static DWORD WINAPI worker_main(LPVOID p) {
    worker_loop((Qwen3ThreadPool*)p);
    return 0;
}
static DWORD WINAPI runner_main(LPVOID p) {
    runner_loop((Qwen3ThreadPool*)p);
    return 0;
}
#else
static void* worker_main(void* p) {
    worker_loop((Qwen3ThreadPool*)p);
    return NULL;
}
static void* runner_main(void* p) {
    runner_loop((Qwen3ThreadPool*)p);
    return NULL;
}
#endif

/* Publishes generation g and wakes any sleeper. */
static void publish(Qwen3ThreadPool* pool, uint32_t g) {
    wake_sleepers(&pool->lock, &pool->wake, &pool->sleepers, &pool->generation, g);
}

/* Posts call number g to the runner and wakes it if it sleeps. */
static void post_call(Qwen3ThreadPool* pool, uint32_t g) {
    wake_sleepers(&pool->call_lock, &pool->call_wake, &pool->runner_sleeping, &pool->posted, g);
}

/* In a child of fork(), which has only the thread that forked: the pool's threads are not
 * there to run anything (test_api's loops run in a child). qwen3_pool_call looks once per
 * call (a getpid, not one per run) and then forgets them, so runs take the paths of a pool
 * without workers. */
static int forked(const Qwen3ThreadPool* pool) { return process_id() != pool->pid; }

static void stop_runner(Qwen3ThreadPool* pool) {
    if (!pool->runner_started) return;
    atomic_store_explicit(&pool->runner_stop, 1, memory_order_relaxed);
    post_call(pool, atomic_load_explicit(&pool->posted, memory_order_relaxed) + 1);
#if defined(_WIN32)
    WaitForSingleObject(pool->runner, INFINITE);
    CloseHandle(pool->runner);
#else
    pthread_join(pool->runner, NULL);
#endif
    pool->runner_started = 0;
}

/* Starts the runner; 0 and the error set when the system refuses. */
static int start_runner(Qwen3ThreadPool* pool) {
#if defined(_WIN32)
    HANDLE h = CreateThread(NULL, RUNNER_STACK_BYTES, runner_main, pool, 0, NULL);
    if (!h) {
        qwen3_error_set("thread pool: CreateThread failed for the pool's own thread (error %lu)",
                        (unsigned long)GetLastError());
        return 0;
    }
    pool->runner = h;
#else
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        rc = pthread_attr_setstacksize(&attr, RUNNER_STACK_BYTES);
        if (rc == 0) rc = pthread_create(&pool->runner, &attr, runner_main, pool);
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        qwen3_error_set("thread pool: pthread_create failed for the pool's own thread (%s)", strerror(rc));
        return 0;
    }
#endif
    pool->runner_started = 1;
    return 1;
}

static void stop_and_join(Qwen3ThreadPool* pool) {
    atomic_store_explicit(&pool->stop, 1, memory_order_relaxed);
    /* The seq_cst store also releases the store to `stop`. */
    publish(pool, atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1);
    for (uint32_t i = 0; i < pool->n_started; i++) {
#if defined(_WIN32)
        WaitForSingleObject(pool->workers[i], INFINITE);
        CloseHandle(pool->workers[i]);
#else
        pthread_join(pool->workers[i], NULL);
#endif
    }
    pool->n_started = 0;
}

Qwen3ThreadPool* qwen3_pool_new(uint32_t n_threads) {
    if (n_threads == 0 || n_threads > MAX_THREADS) {
        qwen3_error_set("thread pool: n_threads = %u is out of range (1..%u)", n_threads, MAX_THREADS);
        return NULL;
    }
    Qwen3ThreadPool* pool = calloc(1, sizeof *pool);
    if (!pool) {
        qwen3_error_set("thread pool: out of memory allocating the pool (%zu bytes)", sizeof *pool);
        return NULL;
    }
    pool->n_threads = n_threads;
    pool->pid = process_id();
    atomic_init(&pool->ticket, 0);
    atomic_init(&pool->done, 0);
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->sleepers, 0);
    atomic_init(&pool->stop, 0);
    mutex_init(&pool->lock);
    cond_init(&pool->wake);
    atomic_init(&pool->posted, 0);
    atomic_init(&pool->runner_sleeping, 0);
    atomic_init(&pool->runner_stop, 0);
    pool->last_call = 1.0; /* the runner, until a call has shown itself short */
    mutex_init(&pool->call_lock);
    cond_init(&pool->call_wake);
    cond_init(&pool->call_finished);
    pool->solo_next = SOLO_MIN;
    qwen3_library_pin(); /* the threads below run our code until they are joined */
    if (!start_runner(pool)) {
        qwen3_pool_free(pool);
        return NULL;
    }
    if (n_threads == 1) return pool;

    pool->workers = calloc(n_threads - 1, sizeof *pool->workers);
    if (!pool->workers) {
        qwen3_error_set("thread pool: out of memory allocating %u worker handles", n_threads - 1);
        qwen3_pool_free(pool);
        return NULL;
    }
    for (uint32_t i = 0; i < n_threads - 1; i++) {
#if defined(_WIN32)
        HANDLE h = CreateThread(NULL, 0, worker_main, pool, 0, NULL);
        if (!h) {
            qwen3_error_set("thread pool: CreateThread failed for worker %u of %u (error %lu)", i + 1,
                            n_threads - 1, (unsigned long)GetLastError());
            qwen3_pool_free(pool);
            return NULL;
        }
        pool->workers[i] = h;
#else
        const int rc = pthread_create(&pool->workers[i], NULL, worker_main, pool);
        if (rc != 0) {
            qwen3_error_set("thread pool: pthread_create failed for worker %u of %u (%s)", i + 1,
                            n_threads - 1, strerror(rc));
            qwen3_pool_free(pool);
            return NULL;
        }
#endif
        pool->n_started++;
    }
    return pool;
}

void qwen3_pool_free(Qwen3ThreadPool* pool) {
    if (!pool) return;
    /* In a child of fork() the threads are gone, and the condition variables they slept
     * on still count them as waiters (destroying one would wait for them): memory only. */
    if (!forked(pool)) {
        stop_runner(pool);
        stop_and_join(pool);
        cond_deinit(&pool->call_finished);
        cond_deinit(&pool->call_wake);
        mutex_deinit(&pool->call_lock);
        cond_deinit(&pool->wake);
        mutex_deinit(&pool->lock);
    }
    free(pool->workers);
    free(pool);
}

uint32_t qwen3_pool_threads(const Qwen3ThreadPool* pool) { return pool ? pool->n_threads : 1; }

/* Books one parallel run of n_tasks tasks: `work` seconds until the caller ran out of
 * tasks, `total` until all were done. A run of at most one task per thread is not judged
 * (see the top of this file). */
static void judge_run(Qwen3ThreadPool* pool, uint32_t n_tasks, double work, double total) {
    if (n_tasks <= pool->n_threads) return;
    const double stall = total - 2.0 * work;
    pool->window_time += total;
    if (stall > 0) pool->window_stall += stall;
    if (++pool->judged < JUDGE_RUNS) return;
    if (pool->window_stall > 0.2 * pool->window_time) {
        pool->solo_left = pool->solo_next;
        pool->stats.solo_stretches++;
        if (pool->solo_next < SOLO_MAX) pool->solo_next *= 2;
    } else if (pool->solo_next > SOLO_MIN) {
        pool->solo_next /= 2;
    }
    pool->judged = 0;
    pool->window_time = pool->window_stall = 0;
}

/* Publishes a window of n tasks (the job fields already set), runs tasks on the calling
 * thread too and waits until all n are done. Returns the caller's seconds in tasks (a
 * phased run's waits for earlier phases not counted), for judge_run. */
static double run_window(Qwen3ThreadPool* pool, uint32_t n) {
    /* Only this thread writes the generation, so a relaxed read is current. */
    const uint32_t g = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    /* Release: a worker whose claim reads this ticket sees the job fields above. */
    atomic_store_explicit(&pool->ticket, make_ticket(g, n), memory_order_release);
    publish(pool, g);
    double work = 0;
    if (pool->n_phases) {
        run_tasks(pool, g, &work);
    } else {
        const double w0 = qwen3_time_seconds();
        run_tasks(pool, g, NULL);
        work = qwen3_time_seconds() - w0;
    }
    /* Every task is claimed now; wait for the ones still running elsewhere. */
    wait_done(pool, n);
    return work;
}

void qwen3_pool_run(Qwen3ThreadPool* pool, Qwen3TaskFn fn, void* arg, uint32_t n_tasks) {
    if (n_tasks == 0) return;
    /* One task, or no workers: waking anybody would only add latency. */
    if (!pool || pool->n_started == 0 || n_tasks == 1) {
        for (uint32_t t = 0; t < n_tasks; t++) fn(arg, t, n_tasks);
        return;
    }
    if (pool->solo_left > 0) {
        pool->solo_left--;
        pool->stats.solo_runs++;
        for (uint32_t t = 0; t < n_tasks; t++) fn(arg, t, n_tasks);
        return;
    }
    pool->stats.parallel_runs++;
    const double t0 = qwen3_time_seconds();
    double work = 0;
    pool->fn = fn;
    pool->arg = arg;
    pool->n_tasks = n_tasks;
    for (uint32_t first = 0; first < n_tasks; first += WINDOW_TASKS) {
        const uint32_t n = n_tasks - first < WINDOW_TASKS ? n_tasks - first : WINDOW_TASKS;
        pool->first_task = first;
        work += run_window(pool, n);
    }
    judge_run(pool, n_tasks, work, qwen3_time_seconds() - t0);
}

/* Phase p of a phased run that went out as separate plain runs (solo, or too many tasks
 * for one window). */
typedef struct {
    Qwen3PhaseFn fn;
    void* arg;
    uint32_t phase;
} PhaseRun;

static void phase_as_run(void* arg, uint32_t task, uint32_t n_tasks) {
    const PhaseRun* r = (const PhaseRun*)arg;
    r->fn(r->arg, r->phase, task, n_tasks);
}

void qwen3_pool_run_phases(Qwen3ThreadPool* pool, Qwen3PhaseFn fn, void* arg, const uint32_t* n_tasks,
                           uint32_t n_phases) {
    qwen3_pool_run_phases_warm(pool, fn, NULL, arg, n_tasks, n_phases);
}

void qwen3_pool_run_phases_warm(Qwen3ThreadPool* pool, Qwen3PhaseFn fn, Qwen3PhaseWarmFn warm, void* arg,
                                const uint32_t* n_tasks, uint32_t n_phases) {
    uint64_t total = 0;
    for (uint32_t p = 0; p < n_phases; p++) total += n_tasks[p];
    if (total == 0) return;
    if (!pool || pool->n_started == 0 || pool->solo_left > 0) {
        /* The caller alone, in order; a solo stretch counts this as one run. */
        if (pool && pool->solo_left > 0) {
            pool->solo_left--;
            pool->stats.solo_runs++;
        }
        for (uint32_t p = 0; p < n_phases; p++) {
            for (uint32_t t = 0; t < n_tasks[p]; t++) fn(arg, p, t, n_tasks[p]);
        }
        return;
    }
    if (n_phases > QWEN3_POOL_MAX_PHASES || total > WINDOW_TASKS) {
        /* In order, each phase a plain run. */
        for (uint32_t p = 0; p < n_phases; p++) {
            PhaseRun r = {fn, arg, p};
            qwen3_pool_run(pool, phase_as_run, &r, n_tasks[p]);
        }
        return;
    }
    pool->stats.parallel_runs++;
    const double t0 = qwen3_time_seconds();
    pool->phase_fn = fn;
    pool->phase_warm = warm;
    pool->arg = arg;
    pool->n_phases = n_phases;
    pool->phase_start[0] = 0;
    for (uint32_t p = 0; p < n_phases; p++) pool->phase_start[p + 1] = pool->phase_start[p] + n_tasks[p];
    const double work = run_window(pool, (uint32_t)total);
    /* Only the caller reads n_phases to pick the kind of the next run it publishes; a
     * worker reads it after a claim, which pins this run until its task is done. */
    pool->n_phases = 0;
    judge_run(pool, (uint32_t)total, work, qwen3_time_seconds() - t0);
}

void qwen3_pool_call(Qwen3ThreadPool* pool, Qwen3CallFn fn, void* arg) {
    if (pool && pool->runner_started && forked(pool)) pool->runner_started = pool->n_started = 0;
    if (!pool || !pool->runner_started || is_current(pool->runner)) {
        fn(arg);
        return;
    }
    /* fn's own time decides, not the round trip: a busy machine's slow wake-ups would
     * otherwise keep short calls on the runner */
    if (pool->last_call < CALL_INLINE_MAX) {
        pool->last_call = run_timed(fn, arg);
        return;
    }
    pool->call_fn = fn;
    pool->call_arg = arg;
    /* only callers write `posted`, one at a time: a relaxed read is current */
    const uint32_t g = atomic_load_explicit(&pool->posted, memory_order_relaxed) + 1;
    post_call(pool, g); /* seq_cst: the runner that sees g sees fn and arg */
    mutex_lock(&pool->call_lock);
    while (pool->finished != g) cond_wait(&pool->call_finished, &pool->call_lock);
    mutex_unlock(&pool->call_lock);
}

Qwen3PoolStats qwen3_pool_stats(const Qwen3ThreadPool* pool) {
    Qwen3PoolStats none = {0, 0, 0, 0};
    return pool ? pool->stats : none;
}
