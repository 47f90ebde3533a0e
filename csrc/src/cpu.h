/* cpu.h - run-time CPU feature detection (hand-written CPUID/XGETBV on x86_64,
 * getauxval on Linux/aarch64, sysctlbyname on macOS). */
#ifndef QWEN3_CPU_H
#define QWEN3_CPU_H

#include <stdint.h>

enum {
    QWEN3_CPU_SSE42 = 1u << 0,
    QWEN3_CPU_AVX2 = 1u << 1,      /* with FMA and OS-enabled YMM state */
    QWEN3_CPU_FMA = 1u << 2,
    QWEN3_CPU_F16C = 1u << 3,
    QWEN3_CPU_AVX512F = 1u << 4,   /* with OS-enabled ZMM state */
    QWEN3_CPU_AVX512BW = 1u << 5,
    QWEN3_CPU_AVX512VL = 1u << 6,
    QWEN3_CPU_AVX512VNNI = 1u << 7,
    QWEN3_CPU_AVXVNNI = 1u << 8,
    QWEN3_CPU_AVX512BF16 = 1u << 9,
    QWEN3_CPU_AMX_INT8 = 1u << 10, /* CPU support; OS permission is requested separately */
    QWEN3_CPU_NEON = 1u << 16,
    QWEN3_CPU_DOTPROD = 1u << 17,
    QWEN3_CPU_SVE = 1u << 18,
    QWEN3_CPU_I8MM = 1u << 19
};

/* Bit set of QWEN3_CPU_* found on this machine (computed once, thread-safe). */
uint32_t qwen3_cpu_flags(void);

/* The name qwen3_cpu_features() uses for one QWEN3_CPU_* bit ("avx512vnni"), or "?". */
const char* qwen3_cpu_flag_name(uint32_t flag);

/* Asks the OS, once per process, for the AMX tile data state (Linux: arch_prctl
 * ARCH_REQ_XCOMP_PERM for XTILEDATA). NULL when granted, else why not; on other systems
 * always a reason (the amx tier is Linux-only). Call only when QWEN3_CPU_AMX_INT8 is set. */
const char* qwen3_cpu_amx_permit(void);

/* Number of online CPUs (>= 1). */
uint32_t qwen3_cpu_count(void);

#endif
