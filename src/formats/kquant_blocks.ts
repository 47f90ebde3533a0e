/**
 * Block geometry of the ggml quantised types the GGUF export writes beyond Q8_0: the 32-value
 * Q4_1, Q5_0 and Q5_1 and the 256-value K-quant super-blocks Q4_K, Q5_K and Q6_K. The byte
 * offsets are those of ggml's `block_*` structs (ggml-common.h in llama.cpp); the layouts are
 * described in docs/formats.md#ggml-block-layouts.
 * @module
 */

/** Values in a K-quant super-block (ggml's `QK_K`). */
export const QK_K = 256;

/** Values in a Q4_1 / Q5_0 / Q5_1 block (ggml's `QK4_1`, `QK5_0`, `QK5_1`). */
export const QK_32 = 32;

/** Bytes of the packed 6-bit scales and mins of a Q4_K / Q5_K block (ggml's `K_SCALE_SIZE`). */
export const K_SCALE_SIZE = 12;

/** ggml type numbers of the block types quantised here (ggml.h's `enum ggml_type`). */
export const KQuantType = {
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
} as const;

/**
 * Byte offsets inside one block, and its size. Every fp16 field is little-endian.
 *
 * - Q4_1 (20 B): d fp16 @0, m fp16 @2, qs[16] @4 (value j in the low nibble of qs[j], value
 *   j+16 in the high nibble).
 * - Q5_0 (22 B): d fp16 @0, qh u32 @2 (bit j = 5th bit of value j), qs[16] @6.
 * - Q5_1 (24 B): d fp16 @0, m fp16 @2, qh u32 @4, qs[16] @8.
 * - Q4_K (144 B): d fp16 @0, dmin fp16 @2, scales[12] @4, qs[128] @16.
 * - Q5_K (176 B): d fp16 @0, dmin fp16 @2, scales[12] @4, qh[32] @16, qs[128] @48.
 * - Q6_K (210 B): ql[128] @0, qh[64] @128, scales int8[16] @192, d fp16 @208.
 */
export const BLOCK = {
  Q4_1: { values: QK_32, bytes: 20, d: 0, m: 2, qs: 4 },
  Q5_0: { values: QK_32, bytes: 22, d: 0, qh: 2, qs: 6 },
  Q5_1: { values: QK_32, bytes: 24, d: 0, m: 2, qh: 4, qs: 8 },
  Q4_K: { values: QK_K, bytes: 144, d: 0, dmin: 2, scales: 4, qs: 16 },
  Q5_K: { values: QK_K, bytes: 176, d: 0, dmin: 2, scales: 4, qh: 16, qs: 48 },
  Q6_K: { values: QK_K, bytes: 210, ql: 0, qh: 128, scales: 192, d: 208 },
} as const;
