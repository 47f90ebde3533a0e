/**
 * The K-quant super-block types Q4_K, Q5_K and Q6_K: quantisation as llama.cpp's reference
 * functions define it (`quantize_row_q4_K_ref`, `quantize_row_q5_K_ref`,
 * `quantize_row_q6_K_ref` with their helpers `make_qkx2_quants` and `make_qx_quants` and
 * `nearest_int`, in ggml/src/ggml-quants.c: what `llama_model_quantize` runs when no
 * importance matrix is given); dequantisation is ggml_types.ts's. This is an implementation
 * written from that description, not a copy.
 *
 * To give llama.cpp's bytes exactly, every arithmetic step is evaluated in fp32 in the C
 * source's order: `Math.fround` after each operation (an fp64 result of one `+ - * /` or
 * `sqrt` on fp32 operands, rounded to fp32, is the correctly rounded fp32 result), fp16
 * conversion rounding to nearest even, and `nearest_int` rounding half to even as the C
 * magic-number trick does. llama.cpp's ggml-base (where these functions live) is built
 * without FMA contraction, so no fused multiply-add is emulated. The layouts are in
 * docs/formats.md#ggml-block-layouts, the algorithms and what the tests check in
 * docs/formats.md#quantised-gguf-exports.
 * @module
 */

import { fromHalf, toHalf } from "./gguf.ts";
import { BLOCK, K_SCALE_SIZE, QK_K } from "./kquant_blocks.ts";
import { blockOutput, checkWholeBlocks } from "./block32_quants.ts";

const f = Math.fround;
/** ggml-quants.c's `GROUP_MAX_EPS` (1e-15f): a group under it quantises to zeros. */
const GROUP_MAX_EPS = f(1e-15);
const TENTH = f(0.1);
const MAGIC = 12582912; // 1.5 * 2^23

/**
 * ggml's `nearest_int`: adds 1.5 * 2^23 in fp32 so the sum's low mantissa bits hold the
 * integer, rounded half to even (exact for |v| < 2^22, the only range the callers use).
 */
function nearestInt(v: number): number {
  const r = f(v + MAGIC) - MAGIC;
  if (r - r === 0) return r;
  return r !== r ? 0 : -4194304; // NaN and infinities read back as C's bit trick gives them
}

/**
 * The fit of `make_qkx2_quants` (asymmetric, x ~ scale * L - min): start from the min/max
 * grid, then try `nstep + 1` rescaled grids, each refined by weighted least squares, and keep
 * the one of least weighted squared error. Writes L[lo..lo+n) and returns [scale, theMin]
 * through `res` (theMin is the negated offset, >= 0).
 */
function makeQkx2Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  w: Float32Array,
  L: Uint8Array,
  lo: number,
  laux: Uint8Array,
  rmin: number,
  rdelta: number,
  nstep: number,
  res: Float32Array,
): void {
  let min = x[xo];
  let max = x[xo];
  let sumW = w[0];
  let sumX = f(sumW * x[xo]);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i];
    if (v < min) min = v;
    if (v > max) max = v;
    sumW = f(sumW + w[i]);
    sumX = f(sumX + f(w[i] * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0, lo, lo + n);
    res[0] = 0;
    res[1] = -min;
    return;
  }
  let iscale = f(nmax / f(max - min));
  let scale = f(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(x[xo + i] - min)))));
    L[lo + i] = l;
    const diff = f(f(f(scale * l) + min) - x[xo + i]);
    bestError = f(bestError + f(w[i] * f(diff * diff)));
  }
  for (let is = 0; is <= nstep; is++) {
    // `min` moves to each better fit's offset, and later grids (and x - min) use the new one,
    // as in the C loop.
    iscale = f(f(f(rmin + f(rdelta * is)) + nmax) / f(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i];
      const l = Math.max(0, Math.min(nmax, nearestInt(f(iscale * f(v - min)))));
      laux[i] = l;
      const wl = f(w[i] * l);
      sumL = f(sumL + wl);
      sumL2 = f(sumL2 + f(wl * l));
      sumXL = f(sumXL + f(wl * v));
    }
    const D = f(f(sumW * sumL2) - f(sumL * sumL));
    if (!(D > 0)) continue;
    let thisScale = f(f(f(sumW * sumXL) - f(sumX * sumL)) / D);
    let thisMin = f(f(f(sumL2 * sumX) - f(sumL * sumXL)) / D);
    if (thisMin > 0) {
      thisMin = 0;
      thisScale = f(sumXL / sumL2);
    }
    let curError = 0;
    for (let i = 0; i < n; i++) {
      const diff = f(f(f(thisScale * laux[i]) + thisMin) - x[xo + i]);
      curError = f(curError + f(w[i] * f(diff * diff)));
    }
    if (curError < bestError) {
      L.set(laux.subarray(0, n), lo);
      bestError = curError;
      scale = thisScale;
      min = thisMin;
    }
  }
  res[0] = scale;
  res[1] = -min;
}

/** Accumulates make_qx_quants' weighted sums for one trial scale (weights x^2). */
function qxSums(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  iscale: number,
  sums: Float32Array,
): void {
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i];
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(f(iscale * v))));
    const w = f(v * v);
    sumlx = f(sumlx + f(f(w * v) * l));
    suml2 = f(suml2 + f(f(w * l) * l));
  }
  sums[0] = sumlx;
  sums[1] = suml2;
}

/** Writes make_qx_quants' levels for `iscale`: nmax + clamp(round(iscale * x)). */
function qxLevels(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  iscale: number,
  L: Uint8Array,
  lo: number,
): void {
  for (let i = 0; i < n; i++) {
    L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, nearestInt(f(iscale * x[xo + i]))));
  }
}

/**
 * The fit of `make_qx_quants` with `rmse_type` 1 (symmetric, weights x^2): the grid through
 * the value of largest magnitude, then 18 rescaled grids (nmax +- 0.1 .. 0.9), keeping the one
 * that maximises (sum w x l)^2 / sum w l^2; the scale is the least-squares one.
 */
function makeQxQuants(
  n: number,
  nmax: number,
  x: Float32Array,
  xo: number,
  L: Uint8Array,
  lo: number,
  sums: Float32Array,
): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0, lo, lo + n);
    return 0;
  }
  let iscale = f(-nmax / max);
  qxLevels(n, nmax, x, xo, iscale, L, lo);
  qxSums(n, nmax, x, xo, iscale, sums);
  let scale = sums[1] ? f(sums[0] / sums[1]) : 0;
  let best = f(scale * sums[0]);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = f(-f(nmax + f(TENTH * is)) / max);
    qxSums(n, nmax, x, xo, iscale, sums);
    const [sumlx, suml2] = sums;
    if (suml2 > 0 && f(sumlx * sumlx) > f(best * suml2)) {
      qxLevels(n, nmax, x, xo, iscale, L, lo);
      scale = f(sumlx / suml2);
      best = f(scale * sumlx);
    }
  }
  return scale;
}

/** Scale j and min j (6 bits each) of a Q4_K / Q5_K block's 12 packed bytes at `o`. */
function scaleMinK4(j: number, q: Uint8Array, o: number, res: Uint8Array): void {
  if (j < 4) {
    res[0] = q[o + j] & 63;
    res[1] = q[o + j + 4] & 63;
  } else {
    res[0] = (q[o + j + 4] & 0xf) | ((q[o + j - 4] >>> 6) << 4);
    res[1] = (q[o + j + 4] >>> 4) | ((q[o + j] >>> 6) << 4);
  }
}

/** Scratch of one super-block, shared by the Q4_K / Q5_K quantisers. */
class Qkx2Scratch {
  L = new Uint8Array(QK_K);
  laux = new Uint8Array(32);
  weights = new Float32Array(32);
  scales = new Float32Array(QK_K / 32);
  mins = new Float32Array(QK_K / 32);
  res = new Float32Array(2);
  sm = new Uint8Array(2);
}

/**
 * The part Q4_K and Q5_K share: per 32-value sub-block a make_qkx2_quants fit (weights
 * sqrt(mean x^2) + |x|), the 8 scales and 8 mins quantised to 6 bits against fp16 d / dmin,
 * then every value re-quantised against the stored scale and min. Leaves the levels in s.L.
 */
function quantizeScaleMinBlock(
  x: Float32Array,
  xo: number,
  dst: Uint8Array,
  view: DataView,
  o: number,
  nmax: number,
  rmin: number,
  nstep: number,
  s: Qkx2Scratch,
): void {
  let maxScale = 0;
  let maxMin = 0;
  for (let j = 0; j < QK_K / 32; j++) {
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) {
      const v = x[xo + 32 * j + l];
      sumX2 = f(sumX2 + f(v * v));
    }
    const avX = f(Math.sqrt(f(sumX2 / 32)));
    for (let l = 0; l < 32; l++) s.weights[l] = f(avX + Math.abs(x[xo + 32 * j + l]));
    makeQkx2Quants(
      32,
      nmax,
      x,
      xo + 32 * j,
      s.weights,
      s.L,
      32 * j,
      s.laux,
      rmin,
      TENTH,
      nstep,
      s.res,
    );
    s.scales[j] = s.res[0];
    s.mins[j] = s.res[1];
    if (s.scales[j] > maxScale) maxScale = s.scales[j];
    if (s.mins[j] > maxMin) maxMin = s.mins[j];
  }
  const invScale = maxScale > 0 ? f(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? f(63 / maxMin) : 0;
  const sc = o + BLOCK.Q4_K.scales;
  dst.fill(0, sc, sc + K_SCALE_SIZE);
  for (let j = 0; j < QK_K / 32; j++) {
    // C stores nearest_int's result in a uint8_t (low 8 bits), then caps it at 63.
    const ls = Math.min(63, nearestInt(f(invScale * s.scales[j])) & 0xff);
    const lm = Math.min(63, nearestInt(f(invMin * s.mins[j])) & 0xff);
    if (j < 4) {
      dst[sc + j] = ls;
      dst[sc + j + 4] = lm;
    } else {
      dst[sc + j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
      dst[sc + j - 4] |= (ls >>> 4) << 6;
      dst[sc + j] |= (lm >>> 4) << 6;
    }
  }
  const dh = toHalf(f(maxScale / 63));
  const dminh = toHalf(f(maxMin / 63));
  view.setUint16(o + BLOCK.Q4_K.d, dh, true);
  view.setUint16(o + BLOCK.Q4_K.dmin, dminh, true);
  const d0 = fromHalf(dh);
  const dmin0 = fromHalf(dminh);
  for (let j = 0; j < QK_K / 32; j++) {
    scaleMinK4(j, dst, sc, s.sm);
    const d = f(d0 * s.sm[0]);
    // A zero scale keeps the levels of the fit (as the C loop's `continue` does).
    if (!d) continue;
    const dm = f(dmin0 * s.sm[1]);
    for (let i = 0; i < 32; i++) {
      const l = nearestInt(f(f(x[xo + 32 * j + i] + dm) / d));
      s.L[32 * j + i] = Math.max(0, Math.min(nmax, l));
    }
  }
}

/**
 * Quantises fp32 values to Q4_K super-blocks (256 values: fp16 d and dmin, 8 six-bit scales
 * and mins, 4-bit levels; x = d * scale * q - dmin * min).
 *
 * @param values The values (whole rows, back to back).
 * @param out Where to write the blocks (default: a new array, 144 bytes per 256 values).
 * @returns The blocks (`out` when given).
 * @throws {Qwen3Error} `invalid_argument` when the count is not a multiple of 256.
 */
export function quantizeQ4_K(values: Float32Array, out?: Uint8Array): Uint8Array {
  const B = BLOCK.Q4_K;
  checkWholeBlocks("Q4_K", values.length, QK_K);
  const blocks = values.length / QK_K;
  const dst = blockOutput("Q4_K", blocks, B.bytes, out);
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  const s = new Qkx2Scratch();
  for (let b = 0; b < blocks; b++) {
    const o = b * B.bytes;
    quantizeScaleMinBlock(values, b * QK_K, dst, view, o, 15, -1, 20, s);
    // 64 values per 32 bytes: the first 32 in the low nibbles, the next 32 in the high ones.
    for (let j = 0; j < QK_K; j += 64) {
      const q = o + B.qs + j / 2;
      for (let l = 0; l < 32; l++) dst[q + l] = s.L[j + l] | (s.L[j + l + 32] << 4);
    }
  }
  return dst;
}

/**
 * Quantises fp32 values to Q5_K super-blocks (as Q4_K with 5-bit levels: the low 4 bits in
 * qs as Q4_K packs them, the 5th bit of value 64k + j in bit 2k of qh[j] and of value
 * 64k + 32 + j in bit 2k + 1).
 *
 * @param values The values (whole rows, back to back).
 * @param out Where to write the blocks (default: a new array, 176 bytes per 256 values).
 * @returns The blocks (`out` when given).
 * @throws {Qwen3Error} `invalid_argument` when the count is not a multiple of 256.
 */
export function quantizeQ5_K(values: Float32Array, out?: Uint8Array): Uint8Array {
  const B = BLOCK.Q5_K;
  checkWholeBlocks("Q5_K", values.length, QK_K);
  const blocks = values.length / QK_K;
  const dst = blockOutput("Q5_K", blocks, B.bytes, out);
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  const s = new Qkx2Scratch();
  for (let b = 0; b < blocks; b++) {
    const o = b * B.bytes;
    quantizeScaleMinBlock(values, b * QK_K, dst, view, o, 31, -0.5, 15, s);
    const qh = o + B.qh;
    dst.fill(0, qh, qh + QK_K / 8);
    let m1 = 1;
    let m2 = 2;
    for (let n = 0; n < QK_K; n += 64) {
      const ql = o + B.qs + n / 2;
      for (let j = 0; j < 32; j++) {
        let l1 = s.L[n + j];
        if (l1 > 15) {
          l1 -= 16;
          dst[qh + j] |= m1;
        }
        let l2 = s.L[n + j + 32];
        if (l2 > 15) {
          l2 -= 16;
          dst[qh + j] |= m2;
        }
        dst[ql + j] = l1 | (l2 << 4);
      }
      m1 <<= 2;
      m2 <<= 2;
    }
  }
  return dst;
}

/**
 * Quantises fp32 values to Q6_K super-blocks (256 values: 16 int8 scales of 16 values against
 * one fp16 d, 6-bit levels q in 0..63 with x = d * scale * (q - 32); the low 4 bits in ql, the
 * high 2 in qh).
 *
 * @param values The values (whole rows, back to back).
 * @param out Where to write the blocks (default: a new array, 210 bytes per 256 values).
 * @returns The blocks (`out` when given).
 * @throws {Qwen3Error} `invalid_argument` when the count is not a multiple of 256.
 */
export function quantizeQ6_K(values: Float32Array, out?: Uint8Array): Uint8Array {
  const B = BLOCK.Q6_K;
  checkWholeBlocks("Q6_K", values.length, QK_K);
  const blocks = values.length / QK_K;
  const dst = blockOutput("Q6_K", blocks, B.bytes, out);
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  const L = new Uint8Array(QK_K);
  const scales = new Float32Array(QK_K / 16);
  const sums = new Float32Array(2);
  for (let b = 0; b < blocks; b++) {
    const x = b * QK_K;
    const o = b * B.bytes;
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let ib = 0; ib < QK_K / 16; ib++) {
      const scale = makeQxQuants(16, 32, values, x + 16 * ib, L, 16 * ib, sums);
      scales[ib] = scale;
      if (Math.abs(scale) > maxAbsScale) {
        maxAbsScale = Math.abs(scale);
        maxScale = scale;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) {
      dst.fill(0, o, o + B.bytes);
      continue;
    }
    const iscale = f(-128 / maxScale);
    const dh = toHalf(f(1 / iscale));
    view.setUint16(o + B.d, dh, true);
    const d0 = fromHalf(dh);
    for (let ib = 0; ib < QK_K / 16; ib++) {
      const q = Math.min(127, nearestInt(f(iscale * scales[ib])));
      view.setInt8(o + B.scales + ib, q);
      const d = f(d0 * ((q << 24) >> 24));
      // A zero scale keeps the levels of the fit (as the C loop's `continue` does).
      if (!d) continue;
      for (let i = 0; i < 16; i++) {
        const l = nearestInt(f(values[x + 16 * ib + i] / d));
        L[16 * ib + i] = Math.max(-32, Math.min(31, l)) + 32;
      }
    }
    for (let j = 0; j < QK_K; j += 128) {
      const ql = o + B.ql + j / 2;
      const qh = o + B.qh + j / 4;
      for (let l = 0; l < 32; l++) {
        const q1 = L[j + l];
        const q2 = L[j + l + 32];
        const q3 = L[j + l + 64];
        const q4 = L[j + l + 96];
        dst[ql + l] = (q1 & 0xf) | ((q3 & 0xf) << 4);
        dst[ql + l + 32] = (q2 & 0xf) | ((q4 & 0xf) << 4);
        dst[qh + l] = (q1 >>> 4) | ((q2 >>> 4) << 2) | ((q3 >>> 4) << 4) | ((q4 >>> 4) << 6);
      }
    }
  }
  return dst;
}
