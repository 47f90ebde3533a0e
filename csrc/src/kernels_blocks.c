/*
 * kernels_blocks.c - weights in ggml's block layouts (kernels.h, docs/formats.md#ggml-block-layouts):
 * the unpacker every tier shares, the dequantised row (embedding lookups) and the reference
 * batched product (docs/numerics.md#ggml-block-weights).
 *
 * The block formats are llama.cpp's (ggml-common.h `block_q4_0` ... `block_q6_K`, decoded as
 * ggml-quants.c's `dequantize_row_*` decodes them), written here from that description.
 */
#include <stddef.h>
#include <stdint.h>

#include "bytes.h"
#include "kernels.h"
#include "kernels_float.h"

typedef struct {
    uint32_t type;
    const char* name;
    uint32_t values;
    uint32_t bytes;
    int has_offset;
} BlockInfo;

static const BlockInfo block_infos[] = {
    {QWEN3_BLOCK_Q4_0, "Q4_0", 32, 18, 0},  {QWEN3_BLOCK_Q4_1, "Q4_1", 32, 20, 1},
    {QWEN3_BLOCK_Q5_0, "Q5_0", 32, 22, 0},  {QWEN3_BLOCK_Q5_1, "Q5_1", 32, 24, 1},
    {QWEN3_BLOCK_Q8_0, "Q8_0", 32, 34, 0},  {QWEN3_BLOCK_Q4_K, "Q4_K", 256, 144, 1},
    {QWEN3_BLOCK_Q5_K, "Q5_K", 256, 176, 1}, {QWEN3_BLOCK_Q6_K, "Q6_K", 256, 210, 0},
};

static const BlockInfo* block_info(uint32_t type) {
    for (size_t i = 0; i < sizeof block_infos / sizeof block_infos[0]; i++) {
        if (block_infos[i].type == type) return &block_infos[i];
    }
    return NULL;
}

uint32_t qwen3_block_values(uint32_t type) {
    const BlockInfo* b = block_info(type);
    return b ? b->values : 0;
}

uint32_t qwen3_block_bytes(uint32_t type) {
    const BlockInfo* b = block_info(type);
    return b ? b->bytes : 0;
}

const char* qwen3_block_name(uint32_t type) {
    const BlockInfo* b = block_info(type);
    return b ? b->name : "?";
}

int qwen3_block_has_offset(uint32_t type) {
    const BlockInfo* b = block_info(type);
    return b ? b->has_offset : 0;
}

static float f16_at(const uint8_t* p) { return qwen3_f16_to_f32(qwen3_read_u16le(p)); }

/* The 32-value types: d (fp16), then for Q4_1 / Q5_1 m (fp16), for Q5_0 / Q5_1 qh (u32:
 * bit i is the fifth bit of value i), then 16 bytes of nibbles (value i low, value i + 16
 * high), or Q8_0's 32 int8 values. */
static void unpack_32(uint32_t type, const uint8_t* blk, Qwen3UnpackedBlock* u) {
    u->scale[0] = f16_at(blk);
    u->offset[0] = 0.0f;
    u->m16[0] = u->m16[1] = 1;
    if (type == QWEN3_BLOCK_Q8_0) {
        for (int i = 0; i < 32; i++) u->q[i] = (int8_t)blk[2 + i];
        return;
    }
    const int has_m = type == QWEN3_BLOCK_Q4_1 || type == QWEN3_BLOCK_Q5_1;
    const int five = type == QWEN3_BLOCK_Q5_0 || type == QWEN3_BLOCK_Q5_1;
    const uint8_t* p = blk + 2;
    if (has_m) {
        u->offset[0] = f16_at(p);
        p += 2;
    }
    uint32_t qh = 0;
    if (five) {
        qh = qwen3_read_u32le(p);
        p += 4;
    }
    const int bias = type == QWEN3_BLOCK_Q4_0 ? 8 : type == QWEN3_BLOCK_Q5_0 ? 16 : 0;
    for (int i = 0; i < 16; i++) {
        const int h0 = five ? (int)((qh >> i) & 1u) << 4 : 0;
        const int h1 = five ? (int)((qh >> (i + 16)) & 1u) << 4 : 0;
        u->q[i] = (int8_t)(((p[i] & 0x0F) | h0) - bias);
        u->q[i + 16] = (int8_t)(((p[i] >> 4) | h1) - bias);
    }
}

/* Scale and min j (0..7) of Q4_K / Q5_K's 12 bytes: j < 4 in the low 6 bits of bytes j and
 * j + 4; j >= 4 in the nibbles of byte j + 4 plus the top two bits of bytes j - 4 and j. */
static void scale_min_k4(const uint8_t* s, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K: d, dmin (fp16), scales[12], qs[128]; Q5_K adds qh[32] before qs. Per 64 values c:
 * 32 low nibbles of qs[32c..32c+32) (chunk 2c), then their high nibbles (chunk 2c + 1);
 * Q5_K's fifth bits are bits 2c and 2c + 1 of qh[l]. value = d*sc*q - dmin*m. */
static void unpack_k45(uint32_t type, const uint8_t* blk, Qwen3UnpackedBlock* u) {
    const float d = f16_at(blk), dmin = f16_at(blk + 2);
    const uint8_t* scales = blk + 4;
    const int five = type == QWEN3_BLOCK_Q5_K;
    const uint8_t* qh = blk + 16;
    const uint8_t* qs = blk + (five ? 48 : 16);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        scale_min_k4(scales, j, &sc, &m);
        u->scale[j] = d * (float)sc;     /* exact: 11 bits times 6 */
        u->offset[j] = -(dmin * (float)m);
    }
    for (int j = 0; j < 16; j++) u->m16[j] = 1;
    for (int c = 0; c < 4; c++) {
        for (int l = 0; l < 32; l++) {
            const uint8_t byte = qs[32 * c + l];
            int lo = byte & 0x0F, hi = byte >> 4;
            if (five) {
                lo |= ((qh[l] >> (2 * c)) & 1) << 4;
                hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
            }
            u->q[64 * c + l] = (int8_t)lo;
            u->q[64 * c + 32 + l] = (int8_t)hi;
        }
    }
}

/* Q6_K: ql[128], qh[64], scales[16] (int8), d (fp16). Per 128 values h: chunks take the low
 * nibbles of ql[64h..64h+32), ql[64h+32..64h+64), then the high nibbles of the same bytes,
 * with bits (0,1), (2,3), (4,5), (6,7) of qh[32h + l] on top; q = 6 bits - 32, one scale
 * per 16 values; value = d * sc * q. */
static void unpack_q6k(const uint8_t* blk, Qwen3UnpackedBlock* u) {
    const float d = f16_at(blk + 208);
    for (int j = 0; j < 8; j++) {
        u->scale[j] = d;
        u->offset[j] = 0.0f;
    }
    for (int j = 0; j < 16; j++) u->m16[j] = (int8_t)blk[192 + j];
    for (int h = 0; h < 2; h++) {
        const uint8_t* ql = blk + 64 * h;
        const uint8_t* qh = blk + 128 + 32 * h;
        int8_t* q = u->q + 128 * h;
        for (int l = 0; l < 32; l++) {
            q[l] = (int8_t)(((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32);
            q[l + 32] = (int8_t)(((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
            q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
}

void qwen3_block_unpack(uint32_t type, const uint8_t* blk, Qwen3UnpackedBlock* u) {
    switch (type) {
        case QWEN3_BLOCK_Q4_K:
        case QWEN3_BLOCK_Q5_K: unpack_k45(type, blk, u); break;
        case QWEN3_BLOCK_Q6_K: unpack_q6k(blk, u); break;
        default: unpack_32(type, blk, u); break;
    }
}

void qwen3_block_row(float* out, const Qwen3BlockMatrix* w, uint32_t row) {
    const uint32_t bv = qwen3_block_values(w->type), bb = qwen3_block_bytes(w->type);
    const int off = qwen3_block_has_offset(w->type);
    const uint8_t* p = w->data + (size_t)row * w->row_bytes;
    Qwen3UnpackedBlock u;
    for (uint32_t b = 0; b < w->cols / bv; b++) {
        qwen3_block_unpack(w->type, p + (size_t)b * bb, &u);
        float* y = out + (size_t)b * bv;
        for (uint32_t i = 0; i < bv; i++) {
            const float v = u.scale[i / 32] * (float)(u.m16[i / 16] * u.q[i]);
            y[i] = off ? v + u.offset[i / 32] : v;
        }
    }
}

/* One block's contribution to one token's sum (kernels.h's loop body for its chunks). */
float qwen3_block_dot_ref(const Qwen3UnpackedBlock* u, uint32_t n_chunks, int off, const int8_t* xq,
                       const float* xs, const int32_t* xsum, float acc) {
    for (uint32_t c = 0; c < n_chunks; c++) {
        const int8_t* q = u->q + 32 * c;
        const int8_t* x = xq + 32 * c;
        int32_t lo = 0, hi = 0;
        for (int i = 0; i < 16; i++) lo += (int32_t)q[i] * (int32_t)x[i];
        for (int i = 16; i < 32; i++) hi += (int32_t)q[i] * (int32_t)x[i];
        const int32_t isum = u->m16[2 * c] * lo + u->m16[2 * c + 1] * hi;
        float t = (float)isum * u->scale[c];
        if (off) t = t + (float)xsum[c] * u->offset[c];
        acc = acc + t * xs[c];
    }
    return acc;
}

void qwen3_matmul_blocks_ref(float* out, size_t out_stride, const Qwen3BlockMatrix* w, const Qwen3Q8Batch* x,
                             uint32_t row_begin, uint32_t row_end) {
    const uint32_t bv = qwen3_block_values(w->type), bb = qwen3_block_bytes(w->type);
    const uint32_t nb = w->cols / bv, chunks = bv / 32, ng = x->n / 32;
    const int off = qwen3_block_has_offset(w->type);
    Qwen3UnpackedBlock u;
    for (uint32_t r = row_begin; r < row_end; r++) {
        const uint8_t* p = w->data + (size_t)r * w->row_bytes;
        float* o = out + (r - row_begin);
        for (uint32_t t = 0; t < x->n_tokens; t++) o[(size_t)t * out_stride] = 0.0f;
        /* blocks outer, tokens inner: each block is unpacked once for the whole batch, and
         * each token's sum still runs over the chunks in order */
        for (uint32_t b = 0; b < nb; b++) {
            qwen3_block_unpack(w->type, p + (size_t)b * bb, &u);
            for (uint32_t t = 0; t < x->n_tokens; t++) {
                const size_t xo = (size_t)t * x->n + (size_t)b * bv, go = (size_t)t * ng + (size_t)b * chunks;
                float* dst = o + (size_t)t * out_stride;
                *dst = qwen3_block_dot_ref(&u, chunks, off, x->q + xo, x->s + go, x->sums + go, *dst);
            }
        }
    }
}
