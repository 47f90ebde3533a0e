/* cpu.c - run-time CPU feature detection.
 *
 * x86_64: CPUID leaves 1 and 7 (sub-leaves 0 and 1) read by hand-written inline asm,
 * because a Zig-built shared library cannot link the compiler runtime behind
 * __builtin_cpu_supports. A CPUID bit only says the silicon has a unit; XGETBV(0) says
 * whether the OS saves its registers on a context switch, so a YMM/ZMM/tile feature
 * counts only when both agree.
 * aarch64: getauxval(AT_HWCAP/AT_HWCAP2) on Linux, sysctlbyname on macOS,
 * IsProcessorFeaturePresent on Windows.
 */
#include "cpu.h"

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "qwen3_inference.h"

#if defined(_WIN32)
#include <windows.h>
#else
#include <sched.h>
#include <unistd.h>
#endif

#if defined(__APPLE__)
#include <sys/sysctl.h>
#include <sys/types.h>
#endif

#if (defined(__aarch64__) || defined(_M_ARM64)) && defined(__linux__)
#include <sys/auxv.h>
#endif

/* ------------------------------------------------------------------------------------
 * x86_64
 * ---------------------------------------------------------------------------------- */
#if defined(__x86_64__) || defined(_M_X64)

typedef struct {
    uint32_t eax, ebx, ecx, edx;
} CpuidRegs;

static CpuidRegs cpuid(uint32_t leaf, uint32_t subleaf) {
    CpuidRegs r;
#if defined(_MSC_VER) && !defined(__clang__)
    int v[4];
    __cpuidex(v, (int)leaf, (int)subleaf);
    r.eax = (uint32_t)v[0];
    r.ebx = (uint32_t)v[1];
    r.ecx = (uint32_t)v[2];
    r.edx = (uint32_t)v[3];
#else
    __asm__ __volatile__("cpuid"
                         : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx)
                         : "a"(leaf), "c"(subleaf));
#endif
    return r;
}

/* XCR0: the register-state components the OS has enabled. Only valid to execute when
 * CPUID.1:ECX.OSXSAVE says so (it faults otherwise). */
static uint64_t xgetbv0(void) {
#if defined(_MSC_VER) && !defined(__clang__)
    return _xgetbv(0);
#else
    uint32_t lo, hi;
    /* The raw opcode keeps assemblers that lack the mnemonic happy. */
    __asm__ __volatile__(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
#endif
}

#if defined(__APPLE__)
/* macOS turns on AVX-512 state lazily, on a thread's first AVX-512 instruction, so
 * XCR0 lacks the ZMM bits until then; the kernel publishes its support here instead. */
static int macos_sysctl_flag(const char* name) {
    int value = 0;
    size_t size = sizeof value;
    if (sysctlbyname(name, &value, &size, NULL, 0) != 0) return 0;
    return value != 0;
}
#endif

static uint32_t detect(void) {
    uint32_t flags = 0;
    const uint32_t max_leaf = cpuid(0, 0).eax;
    if (max_leaf < 1) return 0;
    const CpuidRegs l1 = cpuid(1, 0);
    const CpuidRegs l7 = max_leaf >= 7 ? cpuid(7, 0) : (CpuidRegs){0, 0, 0, 0};
    const CpuidRegs l7s1 = (max_leaf >= 7 && l7.eax >= 1) ? cpuid(7, 1) : (CpuidRegs){0, 0, 0, 0};

    if (l1.ecx & (1u << 20)) flags |= QWEN3_CPU_SSE42;

    const int osxsave = (l1.ecx >> 27) & 1;
    const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    /* Bits 1 (SSE) and 2 (AVX upper halves): the OS saves YMM registers. */
    const int ymm_ok = (xcr0 & 0x6) == 0x6;
    /* Bits 5..7 (opmask, ZMM0-15 upper halves, ZMM16-31) on top of YMM. */
    int zmm_ok = ymm_ok && (xcr0 & 0xe0) == 0xe0;
    /* Bits 17 (XTILECFG) and 18 (XTILEDATA). Linux additionally wants a per-process
     * arch_prctl request before the first tile instruction; the AMX code does that. */
    const int tile_ok = (xcr0 & 0x60000) == 0x60000;
#if defined(__APPLE__)
    if (!zmm_ok && ymm_ok && ((l7.ebx >> 16) & 1)) zmm_ok = macos_sysctl_flag("hw.optional.avx512f");
#endif

    const int avx = ymm_ok && ((l1.ecx >> 28) & 1);
    if (avx) {
        if ((l1.ecx >> 12) & 1) flags |= QWEN3_CPU_FMA;
        if ((l1.ecx >> 29) & 1) flags |= QWEN3_CPU_F16C;
        /* AVX2 is promised "with FMA" by cpu.h so callers test one bit. */
        if (((l7.ebx >> 5) & 1) && ((l1.ecx >> 12) & 1)) flags |= QWEN3_CPU_AVX2;
        if ((l7s1.eax >> 4) & 1) flags |= QWEN3_CPU_AVXVNNI;
    }
    if (avx && zmm_ok && ((l7.ebx >> 16) & 1)) {
        flags |= QWEN3_CPU_AVX512F;
        if ((l7.ebx >> 30) & 1) flags |= QWEN3_CPU_AVX512BW;
        if ((l7.ebx >> 31) & 1) flags |= QWEN3_CPU_AVX512VL;
        if ((l7.ecx >> 11) & 1) flags |= QWEN3_CPU_AVX512VNNI;
        if ((l7s1.eax >> 5) & 1) flags |= QWEN3_CPU_AVX512BF16;
    }
    /* CPUID.7.0:EDX bit 24 AMX-TILE, bit 25 AMX-INT8. */
    if (tile_ok && ((l7.edx >> 24) & 1) && ((l7.edx >> 25) & 1)) flags |= QWEN3_CPU_AMX_INT8;
    return flags;
}

/* ------------------------------------------------------------------------------------
 * aarch64
 * ---------------------------------------------------------------------------------- */
#elif defined(__aarch64__) || defined(_M_ARM64)

#if defined(__linux__)
/* Values from the Linux uapi <asm/hwcap.h>, repeated so old or musl headers suffice. */
#ifndef AT_HWCAP
#define AT_HWCAP 16
#endif
#ifndef AT_HWCAP2
#define AT_HWCAP2 26
#endif
#define Q3_HWCAP_ASIMD (1ul << 1)
#define Q3_HWCAP_ASIMDDP (1ul << 20)
#define Q3_HWCAP_SVE (1ul << 22)
#define Q3_HWCAP2_I8MM (1ul << 13)

static uint32_t detect(void) {
    const unsigned long hwcap = getauxval(AT_HWCAP);
    const unsigned long hwcap2 = getauxval(AT_HWCAP2);
    uint32_t flags = 0;
    if (hwcap & Q3_HWCAP_ASIMD) flags |= QWEN3_CPU_NEON;
    if (hwcap & Q3_HWCAP_ASIMDDP) flags |= QWEN3_CPU_DOTPROD;
    if (hwcap & Q3_HWCAP_SVE) flags |= QWEN3_CPU_SVE;
    if (hwcap2 & Q3_HWCAP2_I8MM) flags |= QWEN3_CPU_I8MM;
    return flags;
}

#elif defined(__APPLE__)
static int sysctl_flag(const char* name) {
    int value = 0;
    size_t size = sizeof value;
    if (sysctlbyname(name, &value, &size, NULL, 0) != 0) return 0;
    return value != 0;
}

/* Apple cores have no SVE outside SME streaming mode, which plain kernels cannot use. */
static uint32_t detect(void) {
    uint32_t flags = QWEN3_CPU_NEON; /* AdvSIMD is mandatory on every Apple arm64 core */
    if (sysctl_flag("hw.optional.arm.FEAT_DotProd")) flags |= QWEN3_CPU_DOTPROD;
    if (sysctl_flag("hw.optional.arm.FEAT_I8MM")) flags |= QWEN3_CPU_I8MM;
    return flags;
}

#elif defined(_WIN32)
#ifndef PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE
#define PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE 43
#endif
#ifndef PF_ARM_SVE_INSTRUCTIONS_AVAILABLE
#define PF_ARM_SVE_INSTRUCTIONS_AVAILABLE 46
#endif

static uint32_t detect(void) {
    uint32_t flags = QWEN3_CPU_NEON;
    if (IsProcessorFeaturePresent(PF_ARM_V82_DP_INSTRUCTIONS_AVAILABLE)) flags |= QWEN3_CPU_DOTPROD;
    if (IsProcessorFeaturePresent(PF_ARM_SVE_INSTRUCTIONS_AVAILABLE)) flags |= QWEN3_CPU_SVE;
    return flags;
}

#else
/* Another OS: AdvSIMD is part of the aarch64 base architecture; nothing else is known. */
static uint32_t detect(void) { return QWEN3_CPU_NEON; }
#endif

/* ------------------------------------------------------------------------------------
 * anything else: no SIMD tier exists, the scalar kernels run
 * ---------------------------------------------------------------------------------- */
#else
static uint32_t detect(void) { return 0; }
#endif

/* ------------------------------------------------------------------------------------
 * public
 * ---------------------------------------------------------------------------------- */

/* Bit 31 marks "computed": no real flag uses it, and it lets 0 mean "not yet". Racing
 * first callers compute the same value, so a plain atomic store suffices. */
#define FLAGS_KNOWN (1u << 31)
static _Atomic uint32_t cached_flags;

uint32_t qwen3_cpu_flags(void) {
    uint32_t f = atomic_load_explicit(&cached_flags, memory_order_acquire);
    if (!(f & FLAGS_KNOWN)) {
        f = detect() | FLAGS_KNOWN;
        atomic_store_explicit(&cached_flags, f, memory_order_release);
    }
    return f & ~FLAGS_KNOWN;
}

/* AMX tile data (XTILEDATA, XSAVE component 18) is off for a Linux process until it asks:
 * arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), Linux 5.16 and later (the kernel's
 * Documentation/arch/x86/xstate.rst gives the numbers). The permission covers every thread
 * of the process, so one request suffices; a tile instruction without it is a SIGILL. */
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
#define Q3_SYS_ARCH_PRCTL 158 /* x86_64 syscall number */
#define Q3_ARCH_GET_XCOMP_PERM 0x1022
#define Q3_ARCH_REQ_XCOMP_PERM 0x1023
#define Q3_XFEATURE_XTILEDATA 18

/* 0 = not asked, 1 = a thread is asking, 2 = answered. */
static _Atomic int amx_permit_state;
static const char* amx_permit_reason;
static char amx_permit_text[160];

static const char* amx_request(void) {
    if (syscall(Q3_SYS_ARCH_PRCTL, Q3_ARCH_REQ_XCOMP_PERM, Q3_XFEATURE_XTILEDATA) != 0) {
        const int err = errno;
        snprintf(amx_permit_text, sizeof amx_permit_text,
                 "Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM: errno %d%s)", err,
                 err == EINVAL       ? ", a kernel before 5.16"
                 : err == EOPNOTSUPP ? ", the tile state is not supported by this kernel and CPU"
                                     : "");
        return amx_permit_text;
    }
    unsigned long granted = 0;
    if (syscall(Q3_SYS_ARCH_PRCTL, Q3_ARCH_GET_XCOMP_PERM, &granted) != 0 ||
        !((granted >> Q3_XFEATURE_XTILEDATA) & 1)) {
        return "Linux accepted the AMX tile state request but does not list it as granted";
    }
    return NULL;
}

const char* qwen3_cpu_amx_permit(void) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&amx_permit_state, &expected, 1)) {
        amx_permit_reason = amx_request();
        atomic_store_explicit(&amx_permit_state, 2, memory_order_release);
    } else {
        while (atomic_load_explicit(&amx_permit_state, memory_order_acquire) != 2) {
        }
    }
    return amx_permit_reason;
}
#elif defined(__x86_64__) || defined(_M_X64)
const char* qwen3_cpu_amx_permit(void) {
    return "the amx tier is enabled on Linux only (it asks Linux for the tile state; this system is untested)";
}
#else
const char* qwen3_cpu_amx_permit(void) { return "AMX is an x86_64 feature"; }
#endif

uint32_t qwen3_cpu_count(void) {
#if defined(_WIN32)
    SYSTEM_INFO info;
    GetSystemInfo(&info);
    return info.dwNumberOfProcessors > 0 ? (uint32_t)info.dwNumberOfProcessors : 1;
#else
#if defined(__linux__)
    /* The affinity mask, not the machine: taskset and container cpusets shrink it. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) return (uint32_t)n;
    }
#endif
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1;
#endif
}

static const struct {
    uint32_t flag;
    const char* name;
} feature_names[] = {
    {QWEN3_CPU_SSE42, "sse4.2"},         {QWEN3_CPU_AVX2, "avx2"},
    {QWEN3_CPU_FMA, "fma"},              {QWEN3_CPU_F16C, "f16c"},
    {QWEN3_CPU_AVX512F, "avx512f"},      {QWEN3_CPU_AVX512BW, "avx512bw"},
    {QWEN3_CPU_AVX512VL, "avx512vl"},    {QWEN3_CPU_AVX512VNNI, "avx512vnni"},
    {QWEN3_CPU_AVXVNNI, "avxvnni"},      {QWEN3_CPU_AVX512BF16, "avx512bf16"},
    {QWEN3_CPU_AMX_INT8, "amx-int8"},    {QWEN3_CPU_NEON, "neon"},
    {QWEN3_CPU_DOTPROD, "dotprod"},      {QWEN3_CPU_SVE, "sve"},
    {QWEN3_CPU_I8MM, "i8mm"},
};

const char* qwen3_cpu_flag_name(uint32_t flag) {
    for (size_t i = 0; i < sizeof feature_names / sizeof feature_names[0]; i++) {
        if (feature_names[i].flag == flag) return feature_names[i].name;
    }
    return "?";
}

/* 0 = not built, 1 = a thread is building it, 2 = ready. The text is written once by
 * the thread that wins 0 -> 1; others wait for 2, so nobody reads a half-written string. */
static _Atomic int features_state;
static char features_text[256];

QWEN3_API const char* qwen3_cpu_features(void) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&features_state, &expected, 1)) {
        const uint32_t flags = qwen3_cpu_flags();
        size_t len = 0;
        features_text[0] = '\0';
        for (size_t i = 0; i < sizeof feature_names / sizeof feature_names[0]; i++) {
            if (!(flags & feature_names[i].flag)) continue;
            const int n = snprintf(features_text + len, sizeof features_text - len, "%s%s",
                                   len ? " " : "", feature_names[i].name);
            if (n < 0 || (size_t)n >= sizeof features_text - len) break;
            len += (size_t)n;
        }
        atomic_store_explicit(&features_state, 2, memory_order_release);
    } else {
        while (atomic_load_explicit(&features_state, memory_order_acquire) != 2) {
        }
    }
    return features_text;
}
