/* quant.c - activation quantisation, shared by every kernel tier
 * (docs/numerics.md#activations). */
#include <math.h>
#include <stddef.h>

#include "kernels.h"

/* A rounded quotient as int8, the way the TypeScript engine's Int8Array store converts it
 * (src/reference/quant.ts), so both engines keep the same bits on any input: NaN (from NaN or
 * infinite activations, which a corrupt checkpoint can produce) becomes 0, and a value
 * past +-127 wraps modulo 256 (only reachable with subnormal activations, whose scale
 * rounds coarsely). A plain (int8_t) cast of NaN or of a value out of range is
 * undefined behaviour in C. */
static int8_t to_int8(float r) {
    if (!(fabsf(r) < 1e9f)) return 0;
    uint8_t low = (uint8_t)((uint32_t)(int32_t)r & 0xFFu);
    return (int8_t)(low >= 128u ? (int32_t)low - 256 : (int32_t)low);
}

void qwen3_quantize_q8(const float* x, Qwen3Q8Vector* out) {
    const uint32_t gs = out->group_size;
    const uint32_t n_groups = out->n / gs;
    for (uint32_t g = 0; g < n_groups; g++) {
        const float* xg = x + (size_t)g * gs;
        int8_t* qg = out->q + (size_t)g * gs;
        float wmax = 0.0f;
        for (uint32_t i = 0; i < gs; i++) {
            float a = fabsf(xg[i]);
            if (a > wmax) wmax = a;
        }
        float scale = wmax / 127.0f;
        out->s[g] = scale;
        if (scale == 0.0f) {
            for (uint32_t i = 0; i < gs; i++) qg[i] = 0;
            continue;
        }
        for (uint32_t i = 0; i < gs; i++) {
            /* roundf rounds half away from zero, as
             * docs/numerics.md#rounding-and-the-all-zero-group requires. */
            qg[i] = to_int8(roundf(xg[i] / scale));
        }
    }
}
