/* read_probe.h - the fastest plain read of a byte range this CPU does, for the measuring
 * tools (bench_bandwidth.c, bench_matvec.c): the denominator of "fraction of the read
 * bandwidth" that decode is judged by.
 *
 * The tools are built for the baseline CPU (SSE2 on x86-64), and a loop of 16-byte loads
 * reads DRAM markedly slower than the 64-byte loads the avx512vnni kernel streams with:
 * on the 2-core Sapphire Rapids guest of bench/RESULTS.md the baseline loop read ~6.7
 * GB/s and a 512-bit one ~10.3 GB/s from the same 1 GiB buffer, so decode showed as 114%
 * and 142% "of the read bandwidth". A ceiling the engine beats measures nothing, so on
 * x86-64 the probe reads with the widest loads the CPU has (AVX-512, else AVX2, chosen at
 * run time as the kernels are), four independent accumulators per 256 bytes. On other
 * CPUs the plain loop stays (aarch64's baseline already vectorises it to 16-byte NEON
 * loads, the width its kernels use). Returns a value that depends on every byte read, so
 * the loads cannot be dropped. `bytes` must be a multiple of 256 (64-byte aligned p reads
 * fastest). */
#ifndef QWEN3_READ_PROBE_H
#define QWEN3_READ_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "cpu.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

__attribute__((target("avx512f,evex512"))) static inline uint64_t read_probe_avx512(const uint8_t* p, size_t bytes) {
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i < bytes; i += 256) {
        a = _mm512_xor_si512(a, _mm512_loadu_si512((const void*)(p + i)));
        b = _mm512_xor_si512(b, _mm512_loadu_si512((const void*)(p + i + 64)));
        c = _mm512_xor_si512(c, _mm512_loadu_si512((const void*)(p + i + 128)));
        d = _mm512_xor_si512(d, _mm512_loadu_si512((const void*)(p + i + 192)));
    }
    a = _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
    uint64_t lanes[8];
    _mm512_storeu_si512((void*)lanes, a);
    return lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3] ^ lanes[4] ^ lanes[5] ^ lanes[6] ^ lanes[7];
}

__attribute__((target("avx2"))) static inline uint64_t read_probe_avx2(const uint8_t* p, size_t bytes) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i < bytes; i += 128) {
        a = _mm256_xor_si256(a, _mm256_loadu_si256((const __m256i*)(p + i)));
        b = _mm256_xor_si256(b, _mm256_loadu_si256((const __m256i*)(p + i + 32)));
        c = _mm256_xor_si256(c, _mm256_loadu_si256((const __m256i*)(p + i + 64)));
        d = _mm256_xor_si256(d, _mm256_loadu_si256((const __m256i*)(p + i + 96)));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i*)lanes, a);
    return lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
}
#endif

static inline uint64_t read_probe_plain(const uint8_t* p, size_t bytes) {
    const uint64_t* w = (const uint64_t*)(const void*)p;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= bytes / 8; i += 4) {
        a ^= w[i];
        b ^= w[i + 1];
        c ^= w[i + 2];
        d ^= w[i + 3];
    }
    return a ^ b ^ c ^ d;
}

/* The loads read_probe uses, for the tools' output. */
static inline const char* read_probe_name(void) {
#if defined(__x86_64__) || defined(_M_X64)
    const uint32_t f = qwen3_cpu_flags();
    if (f & QWEN3_CPU_AVX512F) return "avx512 loads";
    if (f & QWEN3_CPU_AVX2) return "avx2 loads";
#endif
    return "plain loads";
}

static inline uint64_t read_probe(const uint8_t* p, size_t bytes) {
#if defined(__x86_64__) || defined(_M_X64)
    const uint32_t f = qwen3_cpu_flags();
    if (f & QWEN3_CPU_AVX512F) return read_probe_avx512(p, bytes);
    if (f & QWEN3_CPU_AVX2) return read_probe_avx2(p, bytes);
#endif
    return read_probe_plain(p, bytes);
}

#endif
