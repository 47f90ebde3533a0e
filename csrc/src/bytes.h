/*
 * bytes.h - reading numbers out of untrusted file bytes, for the file parsers (gguf.c,
 * model_checkpoint.c, model_gguf.c, tokenizer.c): little-endian loads at any alignment,
 * and 64-bit size arithmetic that reports overflow instead of wrapping around, so a
 * hostile count or dimension fails a check instead of sizing a buffer.
 */
#ifndef QWEN3_BYTES_H
#define QWEN3_BYTES_H

#include <stdint.h>
#include <string.h>

static inline uint16_t qwen3_read_u16le(const uint8_t* p) { return (uint16_t)(p[0] | p[1] << 8); }

static inline uint32_t qwen3_read_u32le(const uint8_t* p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t qwen3_read_u64le(const uint8_t* p) {
    return (uint64_t)qwen3_read_u32le(p) | (uint64_t)qwen3_read_u32le(p + 4) << 32;
}

static inline float qwen3_read_f32le(const uint8_t* p) {
    const uint32_t bits = qwen3_read_u32le(p);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline double qwen3_read_f64le(const uint8_t* p) {
    const uint64_t bits = qwen3_read_u64le(p);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* *out = a * b; 0 (and *out untouched) when the product overflows 64 bits. */
static inline int qwen3_mul_u64_ok(uint64_t a, uint64_t b, uint64_t* out) {
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* *out = a + b; 0 (and *out untouched) when the sum overflows 64 bits. */
static inline int qwen3_add_u64_ok(uint64_t a, uint64_t b, uint64_t* out) {
    if (b > UINT64_MAX - a) return 0;
    *out = a + b;
    return 1;
}

#endif
