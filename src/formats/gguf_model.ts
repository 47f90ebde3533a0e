/**
 * A `qwen3` GGUF file as the engines need it: its configuration from the metadata and its
 * weights from the tensor table, checked with the C loader's rules, limits and messages
 * (csrc/src/model_gguf.c), so both engines accept and refuse the same files the same way. The key
 * and tensor names come from gguf_qwen3.ts; the container is parsed by gguf.ts.
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import {
  GGML_TYPE_NAMES,
  GgmlType,
  type GgufFile,
  ggufShownString,
  type GgufTensorInfo,
  RUNNABLE_GGML_TYPES,
} from "./gguf.ts";
import { GGML_BLOCK_LAYOUTS, GgmlBlockType } from "./ggml_types.ts";
import {
  GGUF_KEYS,
  ggufBlockTensorName,
  QWEN3_ARCHITECTURE,
  QWEN3_GGUF_KEYS,
  QWEN3_GGUF_TENSORS,
  type Qwen3GgufValues,
} from "./gguf_qwen3.ts";
import {
  HEADER_LIMITS,
  LAYER_MATRICES,
  LAYER_NORM_FIELDS,
  layerMatrixShape,
  type LayerNorm,
} from "./checkpoint.ts";
import {
  type FloatTensor,
  isFloatTensor,
  type LayerWeights,
  type ModelWeights,
  type MoeLayerWeights,
  type Q8Tensor,
  type WeightTensor,
  WIDEN_TABLES,
} from "./weights.ts";
import type { ModelConfig, MoeConfig } from "../types.ts";
import {
  archKey,
  MAX_EXPERTS,
  MOE_GGUF_KEYS,
  moeGgufDims,
  moeGgufTensorName,
  type MoeTensor,
  QWEN3MOE_ARCHITECTURE,
} from "./gguf_moe.ts";

/** A "format" error about the file at `path`. */
function ggufError(path: string, message: string): Qwen3Error {
  return new Qwen3Error("format", `${path}: GGUF ${message}`);
}

/** An integer metadata value in [min, max] (`def` when absent and not required). */
function ggufUint(
  g: GgufFile,
  path: string,
  key: string,
  min: number,
  max: number,
  def?: number,
): number {
  const v = g.metadata.get(key);
  if (v === undefined) {
    if (def === undefined) throw ggufError(path, `metadata lacks '${key}'`);
    return def;
  }
  const n = typeof v === "bigint" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n)) {
    const kind = typeof v === "string" ? "a string" : Array.isArray(v) ? "an array" : typeof v;
    throw ggufError(path, `metadata '${key}' is ${kind}, expected an integer`);
  }
  if (n < min || n > max) {
    throw ggufError(path, `metadata '${key}' = ${n} is outside [${min}, ${max}]`);
  }
  return n;
}

/** A positive finite float metadata value (`def` when absent and not required). */
function ggufFloat(g: GgufFile, path: string, key: string, def?: number): number {
  const v = g.metadata.get(key);
  if (v === undefined) {
    if (def === undefined) throw ggufError(path, `metadata lacks '${key}'`);
    return def;
  }
  if (typeof v !== "number") throw ggufError(path, `metadata '${key}' is not a float`);
  const f = Math.fround(v);
  if (!(f > 0) || !Number.isFinite(f)) {
    throw ggufError(path, `metadata '${key}' = ${v} must be positive and finite`);
  }
  return f;
}

/** A required string metadata value. */
function ggufString(g: GgufFile, path: string, key: string): string {
  const v = g.metadata.get(key);
  if (v === undefined) throw ggufError(path, `metadata lacks '${key}'`);
  if (typeof v !== "string") throw ggufError(path, `metadata '${key}' is not a string`);
  return v;
}

/** Refuses a file whose `general.architecture` is not `qwen3` or `qwen3moe`; returns it. */
function checkArchitecture(g: GgufFile, path: string): string {
  const arch = ggufString(g, path, GGUF_KEYS.architecture);
  if (arch !== QWEN3_ARCHITECTURE && arch !== QWEN3MOE_ARCHITECTURE) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: GGUF general.architecture is '${
        ggufShownString(g, GGUF_KEYS.architecture)
      }'; this engine runs only '${QWEN3_ARCHITECTURE}' (dense Qwen3) and ` +
        `'${QWEN3MOE_ARCHITECTURE}' (Qwen3-MoE)`,
    );
  }
  return arch;
}

/** Reads every `qwen3.*` key of the table (under `arch`'s prefix) in its order. */
function readQwen3Keys(g: GgufFile, path: string, arch: string): Qwen3GgufValues {
  const v: Partial<Qwen3GgufValues> = {};
  for (const k of QWEN3_GGUF_KEYS) {
    const def = k.default?.(v);
    const key = archKey(arch, k.key);
    v[k.field] = k.type === "u32"
      ? ggufUint(g, path, key, 1, k.max!, def)
      : ggufFloat(g, path, key, def);
  }
  return v as Qwen3GgufValues;
}

/**
 * The expert keys of a `qwen3moe` file, and which blocks are sparse: those with a
 * `ffn_gate_inp` tensor (at least one must be).
 */
function readMoeKeys(g: GgufFile, path: string, nLayers: number): MoeConfig {
  const K = MOE_GGUF_KEYS;
  const nExperts = ggufUint(g, path, K.nExperts, 1, MAX_EXPERTS);
  const nExpertsUsed = ggufUint(g, path, K.nExpertsUsed, 1, nExperts);
  const expertHiddenDim = ggufUint(g, path, K.expertHiddenDim, 1, HEADER_LIMITS.hidden_dim);
  const norm = g.metadata.get(K.normTopkProb);
  if (norm !== undefined && typeof norm !== "boolean") {
    throw ggufError(path, `metadata '${K.normTopkProb}' is not a bool`);
  }
  const sparse: boolean[] = [];
  for (let l = 0; l < nLayers; l++) sparse.push(g.tensors.has(moeGgufTensorName(l, "router")));
  if (!sparse.includes(true)) {
    throw ggufError(path, `arch ${QWEN3MOE_ARCHITECTURE} has no block with a ffn_gate_inp tensor`);
  }
  return { nExperts, nExpertsUsed, expertHiddenDim, normTopkProb: norm ?? true, sparse };
}

/** Checks the rules between keys: whole-head value and rotary widths, GQA ratio, widths. */
function checkKeyRelations(v: Qwen3GgufValues, path: string): void {
  if (v.valueDim !== v.headDim) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: GGUF value_length ${v.valueDim} differs from key_length ${v.headDim}`,
    );
  }
  if (v.ropeDim !== v.headDim) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: GGUF rope.dimension_count ${v.ropeDim} differs from key_length ${v.headDim} ` +
        "(Qwen3 rotates whole heads; partial rotary is not supported)",
    );
  }
  if (v.nHeads % v.nKvHeads !== 0) {
    throw ggufError(
      path,
      `head_count ${v.nHeads} is not a multiple of head_count_kv ${v.nKvHeads}`,
    );
  }
  if (v.headDim % 2 !== 0) {
    throw ggufError(path, `key_length ${v.headDim} must be even for rotate-half RoPE`);
  }
  if (v.nHeads * v.headDim > HEADER_LIMITS.dim) {
    throw ggufError(
      path,
      `head_count * key_length = ${v.nHeads * v.headDim} exceeds the limit of ${HEADER_LIMITS.dim}`,
    );
  }
}

/** The vocabulary size: the row count of `token_embd.weight`, within the limit. */
function ggufVocabSize(g: GgufFile, path: string): number {
  const name = QWEN3_GGUF_TENSORS.embed;
  const embd = g.tensors.get(name);
  if (!embd) throw ggufError(path, `has no tensor '${name}'`);
  const vocabSize = embd.dims[1] ?? 1;
  if (vocabSize > HEADER_LIMITS.vocab_size) {
    throw ggufError(
      path,
      `${name} has ${vocabSize} rows (vocabulary limit ${HEADER_LIMITS.vocab_size})`,
    );
  }
  return vocabSize;
}

/**
 * The hyper-parameters of a `qwen3` GGUF (docs/formats.md#gguf-metadata-keys), validated with
 * the C loader's rules and limits (csrc/src/model_gguf.c): architecture `qwen3`, positive counts
 * under the checkpoint limits, heads divisible by kv heads, even head size, value size and
 * rotary width equal to key size.
 *
 * @param g The file's parsed header.
 * @param path The file's name, for messages.
 * @returns The configuration (`format` "gguf"; `groupSize` 0 until {@linkcode ggufWeights}
 * sets it).
 * @throws {Qwen3Error} `format` naming the key or tensor: a required key missing, a value of
 * the wrong type or out of range, keys that do not fit together, no `token_embd.weight`.
 * @throws {Qwen3Error} `unsupported` for another architecture, or value or rotary widths
 * that differ from the key width.
 */
export function ggufConfig(g: GgufFile, path: string): ModelConfig {
  const arch = checkArchitecture(g, path);
  const v = readQwen3Keys(g, path, arch);
  checkKeyRelations(v, path);
  const moe = arch === QWEN3MOE_ARCHITECTURE ? readMoeKeys(g, path, v.nLayers) : undefined;
  return {
    format: "gguf",
    dim: v.dim,
    hiddenDim: v.hiddenDim,
    nLayers: v.nLayers,
    nHeads: v.nHeads,
    nKvHeads: v.nKvHeads,
    headDim: v.headDim,
    vocabSize: ggufVocabSize(g, path),
    seqLen: v.seqLen,
    groupSize: 0, // set by ggufWeights: 32 when any matrix is quantised
    sharedClassifier: !g.tensors.has(QWEN3_GGUF_TENSORS.classifier),
    ropeTheta: v.ropeTheta,
    rmsEps: v.rmsEps,
    ...(moe ? { moe } : {}),
  };
}

/** A typed-array view of `n` elements at absolute `offset`, or a copy when misaligned. */
function viewAt<T extends Float32Array | Uint16Array>(
  bytes: Uint8Array,
  offset: number,
  n: number,
  Ctor: { new (b: ArrayBuffer, o: number, n: number): T; BYTES_PER_ELEMENT: number },
): T {
  const address = bytes.byteOffset + offset;
  const size = Ctor.BYTES_PER_ELEMENT;
  if (address % size === 0) return new Ctor(bytes.buffer as ArrayBuffer, address, n);
  const copy = bytes.slice(offset, offset + n * size);
  return new Ctor(copy.buffer, 0, n);
}

/** Refuses a tensor whose dims are not [d0, d1, d2] (innermost first; 1 for the rest). */
function checkShape(
  path: string,
  t: GgufTensorInfo,
  name: string,
  d0: number,
  d1: number,
  d2 = 1,
): void {
  const want = [d0, d1, d2, 1];
  const got = [0, 1, 2, 3].map((i) => t.dims[i] ?? 1);
  if (got.some((v, i) => v !== want[i])) {
    const shown = d2 === 1 ? `[${d0}, ${d1}]` : `[${d0}, ${d1}, ${d2}]`;
    throw ggufError(
      path,
      `tensor '${name}' has shape [${got.join(", ")}] (innermost first), expected ${shown}`,
    );
  }
}

/** The "unsupported" error for a tensor of a type the engines do not run. */
function cannotRun(path: string, t: GgufTensorInfo, name: string): Qwen3Error {
  return new Qwen3Error(
    "unsupported",
    `${path}: GGUF tensor '${name}' has ggml type ${t.type} (${
      GGML_TYPE_NAMES[t.type] ?? "unknown"
    }), which this engine cannot run (it runs ${RUNNABLE_GGML_TYPES})`,
  );
}

/** A tensor the model needs, by name. */
function ggufTensor(g: GgufFile, path: string, name: string): GgufTensorInfo {
  const t = g.tensors.get(name);
  if (!t) throw ggufError(path, `has no tensor '${name}'`);
  return t;
}

/** A norm vector as fp32: a view of F32 data, a widened copy of F16 / BF16. */
function ggufVector(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  name: string,
  n: number,
): Float32Array {
  const t = ggufTensor(g, path, name);
  checkShape(path, t, name, n, 1);
  if (t.type === GgmlType.F32) return viewAt(bytes, t.offset, n, Float32Array);
  if (t.type !== GgmlType.F16 && t.type !== GgmlType.BF16) throw cannotRun(path, t, name);
  const codes = viewAt(bytes, t.offset, n, Uint16Array);
  const table = t.type === GgmlType.F16 ? WIDEN_TABLES.f16 : WIDEN_TABLES.bf16;
  return Float32Array.from(codes, (c) => table[c]);
}

/** Q8_0 blocks (fp16 scale, 32 int8 values) as a Q8 matrix with groups of 32, exactly. */
function q8_0ToQ8(bytes: Uint8Array, t: GgufTensorInfo, rows: number, cols: number): Q8Tensor {
  const blocks = rows * cols / 32;
  const q = new Int8Array(rows * cols);
  const s = new Float32Array(blocks);
  const view = new DataView(bytes.buffer, bytes.byteOffset + t.offset, t.bytes);
  const src = new Int8Array(bytes.buffer, bytes.byteOffset + t.offset, t.bytes);
  for (let b = 0; b < blocks; b++) {
    s[b] = WIDEN_TABLES.f16[view.getUint16(b * 34, true)];
    q.set(src.subarray(b * 34 + 2, b * 34 + 34), b * 32);
  }
  return { q, s, rows, cols, groupSize: 32 };
}

/** Q4_0 blocks (fp16 scale, 16 bytes of biased nibbles) as a Q8 matrix with groups of 32. */
function q4_0ToQ8(bytes: Uint8Array, t: GgufTensorInfo, rows: number, cols: number): Q8Tensor {
  const blocks = rows * cols / 32;
  const q = new Int8Array(rows * cols);
  const s = new Float32Array(blocks);
  const view = new DataView(bytes.buffer, bytes.byteOffset + t.offset, t.bytes);
  // Byte i holds value i in its low nibble and value i + 16 in its high one, biased by 8.
  for (let b = 0; b < blocks; b++) {
    s[b] = WIDEN_TABLES.f16[view.getUint16(b * 18, true)];
    for (let i = 0; i < 16; i++) {
      const byte = view.getUint8(b * 18 + 2 + i);
      q[b * 32 + i] = (byte & 15) - 8;
      q[b * 32 + i + 16] = (byte >> 4) - 8;
    }
  }
  return { q, s, rows, cols, groupSize: 32 };
}

/** Storage kind of the matrix types run in place. */
const FLOAT_KINDS: Readonly<Record<number, FloatTensor["kind"]>> = {
  [GgmlType.F32]: "f32",
  [GgmlType.F16]: "f16",
  [GgmlType.BF16]: "bf16",
};

/** A (rows, cols) matrix: F32 / F16 / BF16 as views, Q8_0 / Q4_0 converted to Q8 (group 32),
 * the other block types of ggml_types.ts as views of their blocks. */
function ggufMatrix(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  name: string,
  rows: number,
  cols: number,
): WeightTensor {
  const t = ggufTensor(g, path, name);
  if (!runnable(t)) {
    throw cannotRun(path, t, name);
  }
  checkShape(path, t, name, cols, rows);
  return matrixAt(bytes, t, rows, cols);
}

/** The (rows, cols) matrix whose data `t` locates (type and size already checked). */
function matrixAt(bytes: Uint8Array, t: GgufTensorInfo, rows: number, cols: number): WeightTensor {
  const kind = FLOAT_KINDS[t.type];
  const native = NATIVE_BLOCK_TYPES.has(t.type);
  const n = rows * cols;
  if (native) {
    const layout = GGML_BLOCK_LAYOUTS[t.type];
    const blocks = bytes.subarray(t.offset, t.offset + t.bytes);
    return {
      ggmlType: t.type,
      blocks,
      rowBytes: (cols / layout.values) * layout.bytes,
      rows,
      cols,
    };
  }
  if (kind) {
    const data = kind === "f32"
      ? viewAt(bytes, t.offset, n, Float32Array)
      : viewAt(bytes, t.offset, n, Uint16Array);
    return { kind, data, rows, cols };
  }
  return t.type === GgmlType.Q8_0 ? q8_0ToQ8(bytes, t, rows, cols) : q4_0ToQ8(bytes, t, rows, cols);
}

/**
 * Expert e's (rows, cols) matrix of each e of a 3-D tensor `[cols, rows, n_experts]`: the
 * e-th slice of its data (a view, or a Q8 conversion of that slice alone).
 */
function ggufExperts(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  name: string,
  nExperts: number,
  rows: number,
  cols: number,
): WeightTensor[] {
  const t = ggufTensor(g, path, name);
  if (!runnable(t)) throw cannotRun(path, t, name);
  checkShape(path, t, name, cols, rows, nExperts);
  const per = t.bytes / nExperts;
  const out: WeightTensor[] = [];
  for (let e = 0; e < nExperts; e++) {
    out.push(matrixAt(bytes, { ...t, offset: t.offset + e * per, bytes: per }, rows, cols));
  }
  return out;
}

/** Sparse block `l`'s router and experts. */
function ggufMoeLayer(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  dim: number,
  moe: MoeConfig,
  l: number,
): MoeLayerWeights {
  const name = (t: MoeTensor) => moeGgufTensorName(l, t);
  const routerInfo = ggufTensor(g, path, name("router"));
  if (routerInfo.type !== GgmlType.F32) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: GGUF tensor '${name("router")}' has ggml type ${routerInfo.type} (${
        GGML_TYPE_NAMES[routerInfo.type] ?? "unknown"
      }); the router must be F32`,
    );
  }
  const [d0, d1] = moeGgufDims(dim, moe, "router");
  checkShape(path, routerInfo, name("router"), d0, d1);
  const router = viewAt(bytes, routerInfo.offset, d0 * d1, Float32Array);
  const n = moe.nExperts, h = moe.expertHiddenDim;
  return {
    router,
    gate: ggufExperts(bytes, g, path, name("gate"), n, h, dim),
    up: ggufExperts(bytes, g, path, name("up"), n, h, dim),
    down: ggufExperts(bytes, g, path, name("down"), n, dim, h),
  };
}

/** The block types run in their file layout (Q8_0 and Q4_0 are converted to Q8 instead). */
const NATIVE_BLOCK_TYPES: ReadonlySet<number> = new Set([
  GgmlBlockType.Q4_1,
  GgmlBlockType.Q5_0,
  GgmlBlockType.Q5_1,
  GgmlBlockType.Q4_K,
  GgmlBlockType.Q5_K,
  GgmlBlockType.Q6_K,
]);

/** Whether the engines run a matrix of `t`'s type (in place, or converted to Q8). */
function runnable(t: GgufTensorInfo): boolean {
  return FLOAT_KINDS[t.type] !== undefined || NATIVE_BLOCK_TYPES.has(t.type) ||
    t.type === GgmlType.Q8_0 || t.type === GgmlType.Q4_0;
}

/** Block `l`'s tensors, norms first, in the C loader's order. */
function ggufLayer(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  c: ModelConfig,
  l: number,
): LayerWeights {
  const layer = {} as LayerWeights;
  const norms: [LayerNorm, number][] = [
    ["attn_norm", c.dim],
    ["ffn_norm", c.dim],
    ["q_norm", c.headDim],
    ["k_norm", c.headDim],
  ];
  for (const [norm, n] of norms) {
    layer[LAYER_NORM_FIELDS[norm]] = ggufVector(bytes, g, path, ggufBlockTensorName(l, norm), n);
  }
  const sparse = c.moe?.sparse[l] === true;
  for (const m of LAYER_MATRICES) {
    if (sparse && (m === "w1" || m === "w2" || m === "w3")) continue;
    const [rows, cols] = layerMatrixShape(c, m);
    layer[m] = ggufMatrix(bytes, g, path, ggufBlockTensorName(l, m), rows, cols);
  }
  if (sparse) layer.moe = ggufMoeLayer(bytes, g, path, c.dim, c.moe!, l);
  return layer;
}

/**
 * Every tensor of a `qwen3` GGUF (names and shapes as docs/formats.md#gguf-tensor-names lists
 * them), with the C loader's rules: matrices F32 / F16 / BF16 and Q4_1 / Q5_0 / Q5_1 /
 * Q4_K / Q5_K / Q6_K in place, Q8_0 / Q4_0 converted without loss to Q8 with group 32; norms F32 (F16 / BF16 widened);
 * `output.weight` absent = tied.
 *
 * @param bytes The whole file.
 * @param g Its parsed header.
 * @param path The file's name, for messages.
 * @param config The configuration from {@linkcode ggufConfig}; its `groupSize` is set to 32
 * when any matrix is quantised (activations are then quantised per 32 values, which needs
 * every width to be a multiple of 32), else left 0.
 * @returns Every tensor, as views into `bytes` or converted copies.
 * @throws {Qwen3Error} `format` naming the tensor: missing, or of the wrong shape.
 * @throws {Qwen3Error} `unsupported` for a tensor type the engines cannot run, or quantised
 * weights with a width that is not a multiple of 32.
 */
export function ggufWeights(
  bytes: Uint8Array,
  g: GgufFile,
  path: string,
  config: ModelConfig,
): ModelWeights {
  const c = config;
  const T = QWEN3_GGUF_TENSORS;
  const embed = ggufMatrix(bytes, g, path, T.embed, c.vocabSize, c.dim);
  const finalNorm = ggufVector(bytes, g, path, T.finalNorm, c.dim);
  const classifier = c.sharedClassifier
    ? embed
    : ggufMatrix(bytes, g, path, T.classifier, c.vocabSize, c.dim);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.nLayers; l++) layers.push(ggufLayer(bytes, g, path, c, l));
  const all: WeightTensor[] = [embed, classifier];
  for (const lw of layers) {
    all.push(lw.wq, lw.wk, lw.wv, lw.wo);
    if (lw.moe) all.push(...lw.moe.gate, ...lw.moe.up, ...lw.moe.down);
    else all.push(lw.w1!, lw.w2!, lw.w3!);
  }
  if (all.some((t) => !isFloatTensor(t))) {
    const widths = [c.dim, c.hiddenDim, c.nHeads * c.headDim];
    if (c.moe) widths.push(c.moe.expertHiddenDim);
    for (const width of widths) {
      if (width % 32 !== 0) {
        throw new Qwen3Error(
          "unsupported",
          `${path}: GGUF has quantised weights but a width of ${width}, not a multiple of 32`,
        );
      }
    }
    c.groupSize = 32;
  }
  return { embed, finalNorm, classifier, layers };
}
