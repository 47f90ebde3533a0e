/* quant.c - activation quantisation, shared by every kernel tier (SPEC section 4). */
#include <math.h>
#include <stddef.h>

#include "kernels.h"

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
            /* roundf rounds half away from zero, as SPEC section 4 requires. */
            qg[i] = (int8_t)roundf(xg[i] / scale);
        }
    }
}
