/* kernels_scalar.c - the reference tier: plain C, the numerics every other tier must
 * reproduce bit for bit (see kernels.h). */
#include <stddef.h>

#include "kernels.h"

static void matvec_q8_scalar(float* out, const Qwen3Q8Matrix* w, const Qwen3Q8Vector* x,
                             uint32_t row_begin, uint32_t row_end) {
    const uint32_t n = w->cols;
    const uint32_t gs = w->group_size;
    const uint32_t n_groups = n / gs;
    for (uint32_t r = row_begin; r < row_end; r++) {
        const int8_t* wq = w->q + (size_t)r * n;
        const float* ws = w->s + (size_t)r * n_groups;
        float acc = 0.0f;
        for (uint32_t g = 0; g < n_groups; g++) {
            int32_t isum = 0;
            const int8_t* wg = wq + (size_t)g * gs;
            const int8_t* xg = x->q + (size_t)g * gs;
            for (uint32_t k = 0; k < gs; k++) isum += (int32_t)wg[k] * (int32_t)xg[k];
            acc = acc + ((float)isum * ws[g]) * x->s[g];
        }
        out[r - row_begin] = acc;
    }
}

const Qwen3KernelTable qwen3_kernels_scalar = {
    .name = "scalar",
    .matvec_q8 = matvec_q8_scalar,
};
