/**
 * The TypeScript reference engine: Qwen3 (docs/numerics.md#forward-pass) with the C engine's numerics in
 * plain TypeScript over typed-array views of the model file: W8A8 (docs/numerics.md#w8a8-quantisation) for Q8
 * weights (model.bin, GGUF Q8_0 / Q4_0), ggml blocks with int8 activations per 32 values
 * (docs/numerics.md#ggml-block-weights) for GGUF K-quants and Q4_1 / Q5_0 / Q5_1, and for unquantised GGUF weights (F32, F16, BF16)
 * fp32 products summed in the 16 lanes and fixed tree of csrc/src/kernels_float.h, with no
 * activation quantisation. Every float operation is rounded to fp32 (Math.fround or a
 * Float32Array store) in the order the C engine performs it, so the two agree to the last
 * bit wherever libm agrees with JavaScript's Math (exp, sin, cos, pow may differ by an ulp).
 *
 * Rounding note: a single +, -, * or / of two fp32 values done in float64 and then rounded
 * to fp32 is exactly the fp32 operation (float64 has more than 2 * 24 + 2 bits), and so is
 * sqrt. That is why `fround(a * b)` here equals C's `a * b` on floats.
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import {
  type BlockTensor,
  type FloatTensor,
  isBlockTensor,
  isFloatTensor,
  type LayerWeights,
  type LoadedModel,
  type ModelWeights,
  type MoeLayerWeights,
  type Q8Tensor,
  type WeightTensor,
  WIDEN_TABLES,
} from "../formats/weights.ts";
import { readModel } from "../formats/model_file.ts";
import {
  dequantizeBlocks,
  GGML_BLOCK_LAYOUTS,
  newUnpackedBlock,
  unpackBlock,
} from "../formats/ggml_types.ts";
import { quantizeQ8Into } from "./quant.ts";
import { routeToken } from "./moe.ts";
import { exp32 } from "./exp.ts";
import { fmaf } from "./fma.ts";
import { ropePow, ropeSinCos } from "./rope.ts";
import {
  checkKvType,
  type Engine,
  type EngineSession,
  type KvCacheType,
  type ModelConfig,
} from "../types.ts";

const fround = Math.fround;

/** Positions per KV-cache chunk: memory grows by this many positions at a time. */
export const KV_CHUNK_POSITIONS = 256;

/**
 * out[r] = row r of w dot the quantised vector (xq, xs), as csrc/src/kernels.h specifies:
 * per group an exact integer sum, then `acc = acc + ((float)isum * w_scale) * x_scale` with
 * three fp32 roundings and no fused multiply-add.
 */
function matvecQ8(out: Float32Array, w: Q8Tensor, xq: Int8Array, xs: Float32Array): void {
  const { q, s, rows, cols, groupSize: gs } = w;
  const nGroups = cols / gs;
  for (let r = 0; r < rows; r++) {
    const rowBase = r * cols;
    const scaleBase = r * nGroups;
    let acc = 0;
    for (let g = 0; g < nGroups; g++) {
      const wb = rowBase + g * gs;
      const xb = g * gs;
      let isum = 0;
      for (let k = 0; k < gs; k++) isum += q[wb + k] * xq[xb + k];
      acc = fround(acc + fround(fround(fround(isum) * s[scaleBase + g]) * xs[g]));
    }
    out[r] = acc;
  }
}

/** Scratch for one unpacked block. */
const unpacked = newUnpackedBlock();
/** Sum of each 32-value group of the quantised activation. */
let groupSums = new Int32Array(0);

/**
 * out[r] = row r of a ggml block matrix dot the vector (xq, xs) quantised per 32 values, as
 * csrc/src/kernels.h specifies for block weights: per 32-value chunk c an exact
 * `isum = m16[2c] * sum(first 16 q*x) + m16[2c+1] * sum(last 16)`, then
 * `t = (float)isum * scale[c]`, `t = t + (float)xsum * offset[c]` for types with an offset,
 * `acc = acc + t * xs[c]`, each step rounded to fp32.
 */
function matvecBlocks(out: Float32Array, w: BlockTensor, xq: Int8Array, xs: Float32Array): void {
  const layout = GGML_BLOCK_LAYOUTS[w.ggmlType];
  const bv = layout.values, chunks = bv / 32, nb = w.cols / bv, off = layout.hasOffset;
  const nGroups = w.cols / 32;
  if (groupSums.length < nGroups) groupSums = new Int32Array(nGroups);
  for (let g = 0; g < nGroups; g++) {
    let sum = 0;
    for (let i = 32 * g; i < 32 * g + 32; i++) sum += xq[i];
    groupSums[g] = sum;
  }
  const { q, m16, scale, offset } = unpacked;
  for (let r = 0; r < w.rows; r++) {
    let acc = 0;
    for (let b = 0; b < nb; b++) {
      unpackBlock(w.ggmlType, w.blocks, r * w.rowBytes + b * layout.bytes, unpacked);
      for (let c = 0; c < chunks; c++) {
        const x0 = b * bv + 32 * c, q0 = 32 * c, g = b * chunks + c;
        let lo = 0, hi = 0;
        for (let i = 0; i < 16; i++) lo += q[q0 + i] * xq[x0 + i];
        for (let i = 16; i < 32; i++) hi += q[q0 + i] * xq[x0 + i];
        let t = fround((m16[2 * c] * lo + m16[2 * c + 1] * hi) * scale[c]);
        if (off) t = fround(t + fround(groupSums[g] * offset[c]));
        acc = fround(acc + fround(t * xs[g]));
      }
    }
    out[r] = acc;
  }
}

/** The 16 partial sums of one row (kernels_float.h); fp32 by the store. */
const lanes = new Float32Array(16);

/**
 * out[r] = row r of an unquantised w dot the fp32 vector x, as csrc/src/kernels_float.h
 * specifies: lane j % 16 accumulates fround(w[j] * x[j]) in order (w widened exactly), then
 * the fixed tree (l, l + 8), (l, l + 4), (l, l + 2), (0, 1). Each `lanes[l] += p` is one fp32
 * addition: the double sum of two fp32 values rounded once to fp32.
 */
function matvecFloat(out: Float32Array, w: FloatTensor, x: Float32Array): void {
  const { data, rows, cols } = w;
  const table = w.kind === "f16" ? WIDEN_TABLES.f16 : w.kind === "bf16" ? WIDEN_TABLES.bf16 : null;
  for (let r = 0; r < rows; r++) {
    lanes.fill(0);
    const base = r * cols;
    if (table) {
      for (let j = 0; j < cols; j++) lanes[j & 15] += fround(table[data[base + j]] * x[j]);
    } else {
      for (let j = 0; j < cols; j++) lanes[j & 15] += fround(data[base + j] * x[j]);
    }
    const a0 = fround(lanes[0] + lanes[8]), a1 = fround(lanes[1] + lanes[9]);
    const a2 = fround(lanes[2] + lanes[10]), a3 = fround(lanes[3] + lanes[11]);
    const a4 = fround(lanes[4] + lanes[12]), a5 = fround(lanes[5] + lanes[13]);
    const a6 = fround(lanes[6] + lanes[14]), a7 = fround(lanes[7] + lanes[15]);
    const b0 = fround(a0 + a4), b1 = fround(a1 + a5), b2 = fround(a2 + a6), b3 = fround(a3 + a7);
    out[r] = fround(fround(b0 + b2) + fround(b1 + b3));
  }
}

/** Row `row` of w as fp32 into out: Q8 values times their group's scale, floats widened. */
function matrixRow(out: Float32Array, w: WeightTensor, row: number): void {
  const n = w.cols;
  if (isBlockTensor(w)) {
    dequantizeBlocks(w.ggmlType, w.blocks, row * w.rowBytes, n, out);
    return;
  }
  if (isFloatTensor(w)) {
    const table = w.kind === "f16"
      ? WIDEN_TABLES.f16
      : w.kind === "bf16"
      ? WIDEN_TABLES.bf16
      : null;
    for (let i = 0; i < n; i++) {
      const v = w.data[row * n + i];
      out[i] = table ? table[v] : v;
    }
    return;
  }
  const gs = w.groupSize;
  const rowS = row * (n / gs);
  for (let i = 0; i < n; i++) out[i] = fround(w.q[row * n + i] * w.s[rowS + ((i / gs) | 0)]);
}

/**
 * out = rmsnorm(x) * weight over `n` values starting at `xOff` / `outOff`. Mirrors the C
 * expression
 *   ss = 0.0f; for (j) ss += x[j] * x[j];
 *   ss = 1.0f / sqrtf(ss / (float)n + eps);
 *   out[j] = weight[j] * (ss * x[j]);
 */
function rmsnorm(
  out: Float32Array,
  outOff: number,
  x: Float32Array,
  xOff: number,
  weight: Float32Array,
  n: number,
  eps: number,
): void {
  let ss = 0;
  for (let j = 0; j < n; j++) {
    const v = x[xOff + j];
    ss = fround(ss + fround(v * v));
  }
  ss = fround(1 / fround(Math.sqrt(fround(fround(ss / n) + eps))));
  for (let j = 0; j < n; j++) out[outOff + j] = fround(weight[j] * fround(ss * x[xOff + j]));
}

/** Attention's softmax without its division, the C engine's order (csrc/src/kernels.h,
 * softmax_exp): x[i] = exp(x[i] - max) in place; returns their sum in 16 lanes (lane l adds
 * the x[i] with i % 16 == l, i ascending), folded 8, 4, 2, 1. The caller divides the
 * weighted sum of values by it. */
function softmaxExp(x: Float32Array, n: number, lane: Float32Array): number {
  let max = x[0];
  for (let i = 1; i < n; i++) if (x[i] > max) max = x[i];
  lane.fill(0);
  for (let i = 0; i < n; i++) {
    const e = exp32(fround(x[i] - max));
    x[i] = e;
    lane[i & 15] = fround(lane[i & 15] + e);
  }
  for (let w = 8; w >= 1; w >>= 1) {
    for (let l = 0; l < w; l++) lane[l] = fround(lane[l] + lane[l + w]);
  }
  return lane[0];
}

/** Per-session scratch buffers, sized once from the model. */
interface Scratch {
  x: Float32Array; // (dim) residual stream
  xb: Float32Array; // (max(dim, n_heads * head_dim)) normed input / attention output
  xb2: Float32Array; // (dim) projection output added to x
  q: Float32Array; // (n_heads * head_dim)
  hb: Float32Array; // (hidden_dim) gate, then silu(gate) * up
  hb2: Float32Array; // (hidden_dim) up
  att: Float32Array; // (context) attention weights of one head
  lanes: Float32Array; // (16) the lane sums of softmaxExp
  xq: Int8Array; // (max(dim, hidden_dim, n_heads * head_dim)) quantised activation
  xs: Float32Array; // (same / group_size) its scales; empty when nothing is quantised
  xf: Float32Array; // the fp32 activation last handed to #quantize: float matrices read it
  logits: Float32Array; // (vocab_size)
  probs: Float32Array; // (n_experts) router probabilities (MoE only)
  chosen: Int32Array; // (n_experts_used) chosen experts
  weights: Float32Array; // (n_experts_used) their weights
  moeOut: Float32Array; // (dim) weighted sum of the chosen experts' outputs
  kvq: Int8Array; // (q_dim) a q8 cache's new value row, then the queries, quantised (empty for f32)
  kvs: Float32Array; // (q_dim / group) their scales
}

/** Values per scale of a q8 KV cache: 32, or head_dim when 32 does not divide it. */
function kvGroup(headDim: number): number {
  return headDim % 32 === 0 ? 32 : headDim;
}

/** row[i] = (float)q[i] * scale[i / group]: the row as a q8 KV cache gives it back. */
function roundThroughQ8(row: Float32Array, group: number, q: Int8Array, s: Float32Array): void {
  quantizeQ8Into(row, group, q, s);
  for (let i = 0; i < row.length; i++) row[i] = Math.fround(q[i] * s[(i / group) | 0]);
}

/** A KV cache that grows a chunk of KV_CHUNK_POSITIONS positions at a time. */
class KvCache {
  /** [layer][chunk] -> (KV_CHUNK_POSITIONS, n_kv_heads * head_dim) keys. */
  readonly keys: Float32Array[][];
  /** [layer][chunk] -> (KV_CHUNK_POSITIONS, n_kv_heads * head_dim) values. */
  readonly values: Float32Array[][];
  /** A q8 cache's int8 keys, as `keys` (empty for f32): the scores read these. */
  readonly keysQ8: Int8Array[][];
  /** [layer][chunk] -> (KV_CHUNK_POSITIONS, n_kv_heads * head_dim / group) their scales. */
  readonly keyScales: Float32Array[][];
  readonly kvDim: number;
  /** Values per key scale of a q8 cache; 0 for f32. */
  readonly q8Group: number;

  constructor(nLayers: number, kvDim: number, q8Group: number) {
    this.kvDim = kvDim;
    this.q8Group = q8Group;
    this.keys = Array.from({ length: nLayers }, () => []);
    this.values = Array.from({ length: nLayers }, () => []);
    this.keysQ8 = Array.from({ length: nLayers }, () => []);
    this.keyScales = Array.from({ length: nLayers }, () => []);
  }

  /** Makes sure positions 0..end-1 have memory. */
  reserve(end: number): void {
    const chunks = Math.ceil(end / KV_CHUNK_POSITIONS);
    const size = KV_CHUNK_POSITIONS * this.kvDim;
    for (let l = 0; l < this.keys.length; l++) {
      while (this.keys[l].length < chunks) {
        this.keys[l].push(new Float32Array(size));
        this.values[l].push(new Float32Array(size));
        if (this.q8Group) {
          this.keysQ8[l].push(new Int8Array(size));
          this.keyScales[l].push(new Float32Array(size / this.q8Group));
        }
      }
    }
  }
}

/**
 * One sequence over a {@linkcode TsEngine}: its own KV cache, position and scratch
 * buffers. Sessions come from {@linkcode TsEngine.createSession}.
 *
 * @example Run a prompt, then one more token synchronously
 * ```ts
 * import { demoModelPath, TsEngine } from "@q3/qwen3";
 *
 * using engine = await TsEngine.load(await demoModelPath(), { contextLength: 512 });
 * using session = engine.createSession();
 * const logits = await session.forward([405, 1563]); // "The sea" in the demo tokenizer
 * session.forwardSync([logits.indexOf(Math.max(...logits))]);
 * console.log(session.contextLength, session.position); // 512 3
 * ```
 */
export class TsSession implements EngineSession {
  /** Positions this session can hold. */
  readonly contextLength: number;
  #engine: TsEngine;
  #weights: ModelWeights;
  #position = 0;
  #kv: KvCache;
  #s: Scratch;
  /** RoPE's frequency of each pair, theta^(-i / half): the same at every position. */
  #ropeFreq: Float32Array;
  #disposed = false;

  /**
   * Opens a session of exactly `contextLength` positions; {@linkcode TsEngine.createSession}
   * also checks the engine and clamps the length to it.
   *
   * @param engine The engine whose model the session runs.
   * @param contextLength Positions of the KV cache (at most the engine's).
   */
  constructor(engine: TsEngine, contextLength: number) {
    const c = engine.config;
    this.#engine = engine;
    this.#weights = loadedModel(engine).weights;
    this.contextLength = contextLength;
    const qDim = c.nHeads * c.headDim;
    const ffnDim = Math.max(c.hiddenDim, c.moe?.expertHiddenDim ?? 0);
    const maxIn = Math.max(c.dim, ffnDim, qDim);
    this.#kv = new KvCache(
      c.nLayers,
      c.nKvHeads * c.headDim,
      engine.kvType === "q8" ? kvGroup(c.headDim) : 0,
    );
    // freq = theta^(-(float)i / (float)half) (rope.ts: C's bits), once per session as C does
    const half = c.headDim / 2;
    this.#ropeFreq = Float32Array.from(
      { length: half },
      (_, i) => ropePow(fround(c.ropeTheta), fround(-i / half)),
    );
    this.#s = {
      x: new Float32Array(c.dim),
      xb: new Float32Array(Math.max(c.dim, qDim)),
      xb2: new Float32Array(c.dim),
      q: new Float32Array(qDim),
      hb: new Float32Array(ffnDim),
      hb2: new Float32Array(ffnDim),
      att: new Float32Array(contextLength),
      lanes: new Float32Array(16),
      xq: new Int8Array(c.groupSize ? maxIn : 0),
      xs: new Float32Array(c.groupSize ? maxIn / c.groupSize : 0),
      xf: new Float32Array(0),
      logits: new Float32Array(c.vocabSize),
      kvq: new Int8Array(engine.kvType === "q8" ? c.nHeads * c.headDim : 0),
      kvs: new Float32Array(engine.kvType === "q8" ? c.nHeads * c.headDim : 0),
      probs: new Float32Array(c.moe?.nExperts ?? 0),
      chosen: new Int32Array(c.moe?.nExpertsUsed ?? 0),
      weights: new Float32Array(c.moe?.nExpertsUsed ?? 0),
      moeOut: new Float32Array(c.moe ? c.dim : 0),
    };
  }

  /** Tokens in the KV cache (the position of the next token). */
  get position(): number {
    return this.#position;
  }

  /**
   * Runs `tokens` at positions `position ..` (on this thread: the promise is settled when
   * it returns).
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns The last token's logits, valid until the next call.
   * @throws {Qwen3Error} `context_full` (changing nothing) when the tokens do not fit;
   * `invalid_argument` for no tokens or an id outside the vocabulary; `disposed` after the
   * session was disposed. The promise rejects with them.
   */
  forward(tokens: ArrayLike<number>): Promise<Float32Array> {
    try {
      return Promise.resolve(this.forwardSync(tokens));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * {@linkcode TsSession.forward} without the promise, for callers that want to stay
   * synchronous.
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns The last token's logits, valid until the next call.
   * @throws {Qwen3Error} As {@linkcode TsSession.forward}.
   */
  forwardSync(tokens: ArrayLike<number>): Float32Array {
    this.#run(tokens, "logits");
    return this.#s.logits;
  }

  /**
   * Runs `tokens` as {@linkcode TsSession.forward} does, but returns the last token's final
   * hidden state (`rmsnorm(x) * final_norm`, the classifier's input) instead of logits; the
   * classifier is not run (on this thread: the promise is settled when it returns).
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns A new array of `dim` floats, not normalised.
   * @throws {Qwen3Error} As {@linkcode TsSession.forward}.
   */
  embed(tokens: ArrayLike<number>): Promise<Float32Array> {
    try {
      this.#run(tokens, "hidden");
      return Promise.resolve(this.#s.xb.slice(0, this.#engine.config.dim));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Runs `tokens` at positions `position ..` and returns the logits of every one of them
   * (row `i` is what {@linkcode TsSession.forward} of `tokens[0..i]` one at a time
   * returns). This engine runs tokens one by one anyway, so it saves no time here; it
   * keeps the {@linkcode EngineSession} contract the generation loop's speculative
   * decoding uses.
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns `tokens.length * vocabSize` floats (row `i` at `i * vocabSize`).
   * @throws {Qwen3Error} As {@linkcode TsSession.forward}.
   */
  verify(tokens: ArrayLike<number>): Promise<Float32Array> {
    try {
      this.#check(tokens, "verify");
      const n = tokens.length;
      const vocab = this.#engine.config.vocabSize;
      const rows = new Float32Array(n * vocab);
      this.#kv.reserve(this.#position + n);
      for (let i = 0; i < n; i++) {
        this.#step(tokens[i], this.#position, "logits");
        this.#position++;
        rows.set(this.#s.logits, i * vocab);
      }
      return Promise.resolve(rows);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #run(tokens: ArrayLike<number>, want: "logits" | "hidden"): void {
    this.#check(tokens, want === "hidden" ? "embed" : "forward");
    const n = tokens.length;
    this.#kv.reserve(this.#position + n);
    for (let i = 0; i < n; i++) {
      this.#step(tokens[i], this.#position, i === n - 1 ? want : undefined);
      this.#position++;
    }
  }

  #check(tokens: ArrayLike<number>, what: string): void {
    if (this.#disposed) {
      throw new Qwen3Error("disposed", "this session was disposed; create a new one");
    }
    const n = tokens.length;
    if (n === 0) {
      throw new Qwen3Error(
        "invalid_argument",
        `${what}: no tokens`,
      );
    }
    if (this.#position + n > this.contextLength) {
      throw new Qwen3Error(
        "context_full",
        `context full: ${this.#position} + ${n} tokens exceed the context length ${this.contextLength}`,
      );
    }
    const vocab = this.#engine.config.vocabSize;
    for (let i = 0; i < n; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= vocab) {
        throw new Qwen3Error(
          "invalid_argument",
          `token id ${t} at index ${i} is outside the vocabulary (0..${vocab - 1})`,
        );
      }
    }
  }

  /**
   * Forgets the tokens from `position` on.
   *
   * @param position The new position, from 0 to the current one.
   * @throws {Qwen3Error} `invalid_argument` for a position outside `0..position`.
   */
  rewind(position: number): void {
    if (!Number.isInteger(position) || position < 0 || position > this.#position) {
      throw new Qwen3Error(
        "invalid_argument",
        `rewind to ${position}: expected an integer in 0..${this.#position} (the current position)`,
      );
    }
    this.#position = position;
  }

  /** Drops the KV cache (`using` calls it); later calls throw "disposed". */
  [Symbol.dispose](): void {
    this.#disposed = true;
    this.#kv.keys.forEach((k) => k.length = 0);
    this.#kv.values.forEach((v) => v.length = 0);
  }

  /** One token at `pos`; the final norm runs when its hidden state or logits are wanted,
   * the classifier only for logits. */
  #step(token: number, pos: number, want: "logits" | "hidden" | undefined): void {
    const c = this.#engine.config;
    const w = this.#weights;
    const s = this.#s;
    const eps = fround(c.rmsEps);

    // The token's embedding row: Q8 dequantised (q[i] * scale[group]) or floats widened.
    matrixRow(s.x, w.embed, token);

    for (let l = 0; l < c.nLayers; l++) this.#layer(w.layers[l], l, pos, eps);

    if (!want) return;
    rmsnorm(s.xb, 0, s.x, 0, w.finalNorm, c.dim, eps);
    if (want === "hidden") return;
    this.#quantize(s.xb, c.dim);
    this.#matvec(s.logits, w.classifier);
  }

  /** Makes x[0..n) the input of the next matmuls: quantised when the model has Q8 weights. */
  #quantize(x: Float32Array, n: number): void {
    const gs = this.#engine.config.groupSize;
    this.#s.xf = x.subarray(0, n);
    if (gs) quantizeQ8Into(this.#s.xf, gs, this.#s.xq, this.#s.xs);
  }

  /** out = w times the current input (quantised for Q8 weights, fp32 for float ones). */
  #matvec(out: Float32Array, w: WeightTensor): void {
    if (isFloatTensor(w)) matvecFloat(out, w, this.#s.xf);
    else if (isBlockTensor(w)) matvecBlocks(out, w, this.#s.xq, this.#s.xs);
    else matvecQ8(out, w, this.#s.xq, this.#s.xs);
  }

  #layer(lw: LayerWeights, l: number, pos: number, eps: number): void {
    const c = this.#engine.config;
    const s = this.#s;
    const hd = c.headDim;
    const half = hd / 2;
    const kvDim = c.nKvHeads * hd;
    const qDim = c.nHeads * hd;
    const chunk = (pos / KV_CHUNK_POSITIONS) | 0;
    const slot = (pos % KV_CHUNK_POSITIONS) * kvDim;
    const kChunk = this.#kv.keys[l][chunk];
    const vChunk = this.#kv.values[l][chunk];
    const kRow = kChunk.subarray(slot, slot + kvDim);
    const vRow = vChunk.subarray(slot, slot + kvDim);

    // Attention block: QKV from one quantised normed input.
    rmsnorm(s.xb, 0, s.x, 0, lw.attnNorm, c.dim, eps);
    this.#quantize(s.xb, c.dim);
    this.#matvec(s.q, lw.wq);
    this.#matvec(kRow, lw.wk);
    this.#matvec(vRow, lw.wv);

    // QK-norm per head, then rotate-half RoPE: i pairs with i + head_dim/2.
    for (let h = 0; h < c.nHeads; h++) rmsnorm(s.q, h * hd, s.q, h * hd, lw.qNorm, hd, eps);
    for (let h = 0; h < c.nKvHeads; h++) rmsnorm(kRow, h * hd, kRow, h * hd, lw.kNorm, hd, eps);
    const fpos = fround(pos);
    for (let i = 0; i < half; i++) {
      const angle = fround(fpos * this.#ropeFreq[i]); // (float)pos * freq
      const [cos, sin] = ropeSinCos(angle);
      for (let h = 0; h < c.nHeads; h++) rotate(s.q, h * hd + i, half, cos, sin);
      for (let h = 0; h < c.nKvHeads; h++) rotate(kRow, h * hd + i, half, cos, sin);
    }
    const q8Group = this.#kv.q8Group;
    if (q8Group) {
      // the int8 cache (docs/numerics.md#int8-kv-cache): int8 keys for the scores, values
      // read back as (float)q * scale
      const gSlot = slot / q8Group;
      quantizeQ8Into(
        kRow,
        q8Group,
        this.#kv.keysQ8[l][chunk].subarray(slot, slot + kvDim),
        this.#kv.keyScales[l][chunk].subarray(gSlot, gSlot + kvDim / q8Group),
      );
      roundThroughQ8(vRow, q8Group, s.kvq, s.kvs);
    } else if (this.#engine.kvType === "f16") {
      // the fp16 cache (docs/numerics.md#fp16-kv-cache): keys and values as binary16 holds
      // them (rounded to nearest, ties to even), read back exactly
      for (let i = 0; i < kvDim; i++) {
        kRow[i] = Math.f16round(kRow[i]);
        vRow[i] = Math.f16round(vRow[i]);
      }
    }

    // GQA attention over positions 0..pos.
    const group = c.nHeads / c.nKvHeads;
    const invSqrt = fround(1 / fround(Math.sqrt(hd)));
    const keys = this.#kv.keys[l];
    const values = this.#kv.values[l];
    const att = s.att;
    s.xb.fill(0, 0, qDim);
    if (q8Group) quantizeQ8Into(s.q.subarray(0, qDim), q8Group, s.kvq, s.kvs);
    for (let h = 0; h < c.nHeads; h++) {
      const qOff = h * hd;
      const kvOff = ((h / group) | 0) * hd;
      for (let t = 0; t <= pos; t++) {
        const kOff = (t % KV_CHUNK_POSITIONS) * kvDim + kvOff;
        if (q8Group) {
          att[t] = fround(this.#scoreQ8(l, t, kOff, qOff, hd) * invSqrt);
          continue;
        }
        const kc = keys[(t / KV_CHUNK_POSITIONS) | 0];
        let dot = 0;
        for (let i = 0; i < hd; i++) dot = fmaf(s.q[qOff + i], kc[kOff + i], dot);
        att[t] = fround(dot * invSqrt);
      }
      const sum = softmaxExp(att, pos + 1, s.lanes);
      for (let t = 0; t <= pos; t++) {
        const vc = values[(t / KV_CHUNK_POSITIONS) | 0];
        const vOff = (t % KV_CHUNK_POSITIONS) * kvDim + kvOff;
        const a = att[t];
        for (let i = 0; i < hd; i++) {
          s.xb[qOff + i] = fmaf(a, vc[vOff + i], s.xb[qOff + i]);
        }
      }
      for (let i = 0; i < hd; i++) s.xb[qOff + i] = fround(s.xb[qOff + i] / sum);
    }
    this.#quantize(s.xb, qDim);
    this.#matvec(s.xb2, lw.wo);
    for (let i = 0; i < c.dim; i++) s.x[i] = fround(s.x[i] + s.xb2[i]);

    // SwiGLU feed-forward: x += W2 (silu(W1 h) * W3 h), or the mixture of experts.
    rmsnorm(s.xb, 0, s.x, 0, lw.ffnNorm, c.dim, eps);
    if (lw.moe) {
      this.#moe(lw.moe);
      for (let i = 0; i < c.dim; i++) s.x[i] = fround(s.x[i] + s.moeOut[i]);
      return;
    }
    this.#swiglu(lw.w1!, lw.w3!, lw.w2!, c.hiddenDim);
    for (let i = 0; i < c.dim; i++) s.x[i] = fround(s.x[i] + s.xb2[i]);
  }

  /**
   * A q8 cache's score before its 1/sqrt(head_dim): the int8 key at position t (offset
   * kOff in its chunk) times the query quantised into s.kvq / s.kvs (head at qOff), with
   * the int8 matvec's epilogue, acc + ((float)isum * key scale) * query scale per group.
   */
  #scoreQ8(l: number, t: number, kOff: number, qOff: number, hd: number): number {
    const g = this.#kv.q8Group;
    const kq = this.#kv.keysQ8[l][(t / KV_CHUNK_POSITIONS) | 0];
    const ks = this.#kv.keyScales[l][(t / KV_CHUNK_POSITIONS) | 0];
    const qq = this.#s.kvq, qs = this.#s.kvs;
    let acc = 0;
    for (let b = 0; b < hd; b += g) {
      let isum = 0;
      for (let i = b; i < b + g; i++) isum += kq[kOff + i] * qq[qOff + i];
      acc = fround(acc + fround(fround(isum * ks[(kOff + b) / g]) * qs[(qOff + b) / g]));
    }
    return acc;
  }

  /** xb2 = down (silu(gate xb) * up xb) for the normed input in xb (hidden width `n`). */
  #swiglu(gate: WeightTensor, up: WeightTensor, down: WeightTensor, n: number): void {
    const s = this.#s;
    this.#quantize(s.xb, this.#engine.config.dim);
    this.#matvec(s.hb, gate);
    this.#matvec(s.hb2, up);
    for (let i = 0; i < n; i++) {
      const g = s.hb[i];
      // silu(g) = g * (1.0f / (1.0f + exp(-g))), then times up.
      const silu = fround(g * fround(1 / fround(1 + exp32(-g))));
      s.hb[i] = fround(silu * s.hb2[i]);
    }
    this.#quantize(s.hb, n);
    this.#matvec(s.xb2, down);
  }

  /**
   * moeOut = sum over the chosen experts j, in routing order, of weight_j * expert_j(xb),
   * each term rounded and added to the running sum (docs/numerics.md#mixture-of-experts).
   */
  #moe(m: MoeLayerWeights): void {
    const c = this.#engine.config;
    const s = this.#s;
    routeToken(m.router, s.xb, c.dim, s.probs, s.chosen, s.weights, c.moe!.normTopkProb);
    s.moeOut.fill(0);
    for (let j = 0; j < s.chosen.length; j++) {
      const e = s.chosen[j];
      this.#swiglu(m.gate[e], m.up[e], m.down[e], c.moe!.expertHiddenDim);
      const wj = s.weights[j];
      for (let i = 0; i < c.dim; i++) s.moeOut[i] = fround(s.moeOut[i] + fround(wj * s.xb2[i]));
    }
  }
}

/** (a, b) at (i, i + half) -> (a cos - b sin, a sin + b cos), each product rounded. */
function rotate(v: Float32Array, i: number, half: number, cos: number, sin: number): void {
  const a = v[i];
  const b = v[i + half];
  v[i] = fround(fround(a * cos) - fround(b * sin));
  v[i + half] = fround(fround(a * sin) + fround(b * cos));
}

/**
 * The model file in memory behind each engine. Kept out of the public API: the tensor
 * layout belongs to src/formats/ and may change; users see the {@link Engine} contract.
 */
const LOADED = new WeakMap<TsEngine, LoadedModel>();

/**
 * The model file in memory behind `engine`: its bytes, configuration, tensors (views of
 * the file, or converted copies for GGUF Q8_0 / Q4_0) and, for GGUF, its parsed header.
 * For this package's own modules; not exported from mod.ts.
 *
 * @param engine A loaded engine.
 * @returns The model it runs.
 */
export function loadedModel(engine: TsEngine): LoadedModel {
  return LOADED.get(engine)!;
}

/**
 * The TypeScript reference engine: loads a qwen3.c / qwen3-rs checkpoint or a `qwen3` GGUF
 * (F32, F16, BF16, Q8_0, Q4_0 weights) into memory and runs it on one thread, with the C
 * engine's numerics (the two agree to the last bit where libm agrees with JavaScript's
 * Math). It needs no native library. {@linkcode Qwen3.load} with `engine: "ts"` uses it
 * and adds the tokenizer, templates and generation loop.
 *
 * @example Logits of a prompt
 * ```ts
 * import { demoModelPath, TsEngine } from "@q3/qwen3";
 *
 * using engine = await TsEngine.load(await demoModelPath(), { contextLength: 512 });
 * using session = engine.createSession();
 * const logits = await session.forward([405, 1563]); // "The sea" in the demo tokenizer
 * console.log(engine.config.dim, session.position, logits.length); // 256 2 4122
 * ```
 */
export class TsEngine implements Engine {
  /** Always "ts". */
  readonly kind = "ts" as const;
  /** Always 1: the reference engine is single-threaded. */
  readonly threads = 1;
  /** The model's hyper-parameters, as in the file. */
  readonly config: ModelConfig;
  /** Default and maximum session length: the load's contextLength, at most seqLen. */
  readonly contextLength: number;
  /**
   * The sessions' KV cache numerics. "q8" rounds each new key and value row through the
   * int8 cache's quantisation (docs/numerics.md#int8-kv-cache) and keeps the dequantised
   * values in fp32 arrays, "f16" rounds them to binary16 (docs/numerics.md#fp16-kv-cache)
   * the same way: the C engine's logits, without its memory saving.
   */
  readonly kvType: KvCacheType;
  #disposed = false;

  private constructor(model: LoadedModel, contextLength: number, kvType: KvCacheType) {
    LOADED.set(this, model);
    this.config = model.config;
    this.contextLength = contextLength;
    this.kvType = kvType;
  }

  /**
   * Reads the model at `path` into memory and validates it (a GGUF by its magic, else a
   * qwen3.c or qwen3-rs checkpoint). Side files (tokenizer, templates) are not read: see
   * {@linkcode Qwen3.load}.
   *
   * @param path The model file.
   * @param opts `contextLength`: positions of sessions; 0 or absent gives the file's, and
   * larger values are clamped to it, as the C engine does. `kvType`: "f16" (default), "f32"
   * or "q8", the KV caches' numerics (see {@linkcode TsEngine.kvType}).
   * @returns The engine; dispose it when done.
   * @throws {Qwen3Error} `io` when the file is missing, not a regular file or unreadable;
   * `format` naming the field or tensor when it is malformed; `unsupported` for a valid
   * file this engine cannot run (a GGUF tensor type, an architecture); `invalid_argument`
   * for a bad `contextLength` or `kvType`.
   */
  static async load(
    path: string,
    opts: { contextLength?: number; kvType?: KvCacheType } = {},
  ): Promise<TsEngine> {
    const requested = checkLength(opts.contextLength, "contextLength");
    const kvType = checkKvType(opts.kvType);
    const model = await readModel(path);
    const seqLen = model.config.seqLen;
    return new TsEngine(model, requested === 0 ? seqLen : Math.min(requested, seqLen), kvType);
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Opens a session. KV memory is taken as positions are used.
   *
   * @param contextLength Positions of the session; 0 or absent gives the engine's context
   * length, and larger values are clamped to it.
   * @returns A new session at position 0.
   * @throws {Qwen3Error} `disposed` after the engine was disposed; `invalid_argument` for a
   * length that is not a non-negative integer.
   */
  createSession(contextLength?: number): TsSession {
    if (this.#disposed) {
      throw new Qwen3Error("disposed", "this TsEngine was disposed; load the model again");
    }
    const n = checkLength(contextLength, "contextLength");
    return new TsSession(this, n === 0 ? this.contextLength : Math.min(n, this.contextLength));
  }

  /**
   * Releases the engine (`using` calls it): no new sessions. Open sessions keep the weights
   * and go on until they are disposed, as the C engine's do (its native model is freed
   * after its last session).
   */
  [Symbol.dispose](): void {
    this.#disposed = true;
  }
}

function checkLength(v: number | undefined, name: string): number {
  if (v === undefined) return 0;
  if (!Number.isInteger(v) || v < 0) {
    throw new Qwen3Error("invalid_argument", `${name} ${v}: expected a non-negative integer`);
  }
  return v;
}
