/* kernels.c - picks the int8 kernel tier at run time.
 *
 * The tiers built for this architecture are listed best first with the CPU features
 * each needs; the first one the CPU has wins, unless $QWEN3_KERNEL names another
 * supported tier. Every tier returns the same bits (kernels.h), so the choice changes
 * speed only, and tests can force each tier in turn.
 */
#include "kernels.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "error.h"
#include "qwen3_inference.h"

#if defined(__linux__) && (defined(__aarch64__) || defined(_M_ARM64))
#include <sys/prctl.h>
#endif

typedef struct {
    const Qwen3KernelTable* table;
    uint32_t needs; /* QWEN3_CPU_* bits that must all be present */
    /* With all of them: NULL when the tier may run, else why not (OS permission, a
     * self-check); NULL for tiers that need nothing beyond the CPU bits. */
    const char* (*unavailable)(void);
} Tier;

/* Best first. */
static const Tier tiers[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {&qwen3_kernels_amx,
     QWEN3_CPU_AVX512F | QWEN3_CPU_AVX512BW | QWEN3_CPU_AVX512VL | QWEN3_CPU_AVX512VNNI | QWEN3_CPU_AMX_INT8,
     qwen3_amx_unavailable},
    {&qwen3_kernels_avx512vnni,
     QWEN3_CPU_AVX512F | QWEN3_CPU_AVX512BW | QWEN3_CPU_AVX512VL | QWEN3_CPU_AVX512VNNI, NULL},
    {&qwen3_kernels_avxvnni, QWEN3_CPU_AVX2 | QWEN3_CPU_AVXVNNI, NULL},
    {&qwen3_kernels_avx2, QWEN3_CPU_AVX2, NULL},
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
    {&qwen3_kernels_sve, QWEN3_CPU_SVE, NULL},
    {&qwen3_kernels_neondot, QWEN3_CPU_NEON | QWEN3_CPU_DOTPROD, NULL},
    {&qwen3_kernels_neon, QWEN3_CPU_NEON, NULL},
#endif
    {&qwen3_kernels_scalar, 0, NULL},
};
#define N_TIERS (sizeof tiers / sizeof tiers[0])

static const char* tier_names[N_TIERS + 1];

static int has_features(const Tier* t) { return (qwen3_cpu_flags() & t->needs) == t->needs; }

/* The CPU has the tier's features and nothing else stands in the way. */
static int supported(const Tier* t) {
    return has_features(t) && (t->unavailable == NULL || t->unavailable() == NULL);
}

static const Tier* tier_by_name(const char* name) {
    for (size_t i = 0; i < N_TIERS; i++) {
        if (strcmp(tiers[i].table->name, name) == 0) return &tiers[i];
    }
    return NULL;
}

/* Writes "avx512vnni avx512bw" (the features t needs that this CPU lacks) into buf. */
static void missing_features(const Tier* t, char* buf, size_t size) {
    const uint32_t missing = t->needs & ~qwen3_cpu_flags();
    size_t len = 0;
    buf[0] = '\0';
    for (uint32_t bit = 1; bit != 0 && len < size; bit <<= 1) {
        if (!(missing & bit)) continue;
        const int n = snprintf(buf + len, size - len, "%s%s", len ? " " : "", qwen3_cpu_flag_name(bit));
        if (n < 0) break;
        len += (size_t)n;
    }
}

/* Writes the space-separated names of all built tiers into buf. */
static void list_names(char* buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < N_TIERS && len < size; i++) {
        const int n = snprintf(buf + len, size - len, "%s%s", len ? " " : "", tiers[i].table->name);
        if (n < 0) break;
        len += (size_t)n;
    }
}

#if defined(__aarch64__) || defined(_M_ARM64)
/* SVE registers are 128 to 2048 bits. At 128 bits SVE does the same work per
 * instruction as NEON sdot, and the NEON kernel reduces across rows more cheaply, so SVE
 * is only preferred when its vectors are wider. */
static int sve_is_wider_than_neon(void) {
#if defined(__linux__)
#ifndef PR_SVE_GET_VL
#define PR_SVE_GET_VL 51
#endif
    const int vl = prctl(PR_SVE_GET_VL, 0, 0, 0, 0);
    return vl > 0 && (vl & 0xffff) > 16;
#else
    return 0;
#endif
}
#endif

static const Tier* best_tier(void) {
    for (size_t i = 0; i < N_TIERS; i++) {
        if (!supported(&tiers[i])) continue;
#if defined(__aarch64__) || defined(_M_ARM64)
        if (tiers[i].table == &qwen3_kernels_sve && !sve_is_wider_than_neon()) continue;
#endif
        return &tiers[i];
    }
    return &tiers[N_TIERS - 1];
}

static _Atomic(const Qwen3KernelTable*) active;
/* 0 = not chosen, 1 = a thread is choosing, 2 = chosen (note written). */
static _Atomic int choose_state;
/* Written once by the choosing thread; the pointer moves to a constant when a caller
 * selects a tier, so the note read by others is never rewritten under them. */
static char choose_note[512];
static _Atomic(const char*) note = choose_note;

static void choose(void) {
    for (size_t i = 0; i < N_TIERS; i++) tier_names[i] = tiers[i].table->name;
    tier_names[N_TIERS] = NULL;
    const Tier* best = best_tier();
    const Tier* pick = best;
    const char* env = getenv("QWEN3_KERNEL");
    if (env == NULL || env[0] == '\0') {
        int len = snprintf(choose_note, sizeof choose_note, "%s: the best tier this CPU supports", best->table->name);
        /* A better tier whose features the CPU has but which may not run: say why. */
        for (const Tier* t = tiers; t != best && len >= 0 && (size_t)len < sizeof choose_note; t++) {
            if (!has_features(t) || t->unavailable == NULL) continue;
            const int n = snprintf(choose_note + len, sizeof choose_note - (size_t)len, "; %s unavailable: %s",
                                   t->table->name, t->unavailable());
            if (n < 0) break;
            len += n;
        }
    } else {
        const Tier* want = tier_by_name(env);
        if (want == NULL) {
            char names[256];
            list_names(names, sizeof names);
            snprintf(choose_note, sizeof choose_note, "QWEN3_KERNEL=%.64s ignored: no such kernel tier in this build (%s); using %s",
                     env, names, best->table->name);
        } else if (!has_features(want)) {
            char lacks[128];
            missing_features(want, lacks, sizeof lacks);
            snprintf(choose_note, sizeof choose_note, "QWEN3_KERNEL=%s ignored: this CPU lacks %s; using %s", env, lacks,
                     best->table->name);
        } else if (!supported(want)) {
            snprintf(choose_note, sizeof choose_note, "QWEN3_KERNEL=%s ignored: %s; using %s", env,
                     want->unavailable(), best->table->name);
        } else {
            pick = want;
            snprintf(choose_note, sizeof choose_note, "%s: forced by QWEN3_KERNEL", want->table->name);
        }
    }
    atomic_store_explicit(&active, pick->table, memory_order_release);
}

static void ensure_chosen(void) {
    if (atomic_load_explicit(&choose_state, memory_order_acquire) == 2) return;
    int expected = 0;
    if (atomic_compare_exchange_strong(&choose_state, &expected, 1)) {
        choose();
        atomic_store_explicit(&choose_state, 2, memory_order_release);
        return;
    }
    while (atomic_load_explicit(&choose_state, memory_order_acquire) != 2) {
    }
}

const Qwen3KernelTable* qwen3_kernels_active(void) {
    ensure_chosen();
    return atomic_load_explicit(&active, memory_order_acquire);
}

const Qwen3KernelTable* qwen3_kernels_find(const char* name) {
    if (name == NULL) return NULL;
    const Tier* t = tier_by_name(name);
    return (t != NULL && supported(t)) ? t->table : NULL;
}

const char* const* qwen3_kernels_all_names(void) {
    ensure_chosen(); /* which fills tier_names, once */
    return tier_names;
}

const char* qwen3_kernels_note(void) {
    ensure_chosen();
    return atomic_load_explicit(&note, memory_order_acquire);
}

QWEN3_API const char* qwen3_kernel_name(void) { return qwen3_kernels_active()->name; }

QWEN3_API int32_t qwen3_kernel_select(const char* name) {
    if (name == NULL) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "%s: name is NULL", __func__);
    const Tier* t = tier_by_name(name);
    if (t == NULL) {
        char names[256];
        list_names(names, sizeof names);
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "kernel tier '%.64s' is not built into this library (available: %s)",
                          name, names);
    }
    if (!has_features(t)) {
        char lacks[128];
        missing_features(t, lacks, sizeof lacks);
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "kernel tier '%s' needs CPU feature(s) this CPU lacks: %s (found: %s)",
                          name, lacks, qwen3_cpu_features());
    }
    if (!supported(t)) {
        return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "kernel tier '%s' is unavailable: %s", name, t->unavailable());
    }
    /* Choose first so a later first use cannot overwrite this selection. */
    ensure_chosen();
    atomic_store_explicit(&active, t->table, memory_order_release);
    atomic_store_explicit(&note, "selected by qwen3_kernel_select()", memory_order_release);
    return QWEN3_OK;
}

void qwen3_quantize_q8_token(const float* x, Qwen3Q8Batch* out, uint32_t t) {
    Qwen3Q8Vector v = qwen3_q8_batch_row(out, t);
    qwen3_quantize_q8(x, &v);
    const uint32_t gs = out->group_size, ng = out->n / gs;
    int32_t* sums = out->sums + (size_t)t * ng;
    for (uint32_t g = 0; g < ng; g++) {
        int32_t sum = 0;
        for (uint32_t i = 0; i < gs; i++) sum += v.q[(size_t)g * gs + i];
        sums[g] = sum;
    }
}
