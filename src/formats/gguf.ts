/**
 * GGUF, llama.cpp's file format (docs/formats.md#gguf), as a container: a streaming writer
 * and a validating reader of the metadata and tensor table, knowing nothing of any model
 * (gguf_qwen3.ts holds what makes a file a Qwen3). Tensor data stays in the file; the reader
 * returns offsets, checked against the file length.
 *
 * Layout (v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata
 * count, metadata key/values, tensor infos (name, n_dims, dims innermost first, ggml type,
 * offset from the data start), padding to `general.alignment` (default 32), tensor data.
 * @module
 */

import { quoteBytes, Qwen3Error } from "../errors.ts";

/** "GGUF" read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;
/** Default (and most common) tensor data alignment. */
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** GGUF metadata value types. */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** ggml tensor types this project reads or writes. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30,
} as const;

/**
 * Name and block geometry of every ggml tensor type (ggml.c's type traits, the C engine's
 * table in csrc/src/gguf.c), so a tensor table with types this project does not run is still
 * checked exactly, and an error can name the type ("Q4_K") and not only its number.
 */
export const GGML_TYPE_TRAITS: Readonly<
  Record<number, { name: string; values: number; bytes: number }>
> = Object.fromEntries(
  (
    [
      [0, "F32", 1, 4],
      [1, "F16", 1, 2],
      [2, "Q4_0", 32, 18],
      [3, "Q4_1", 32, 20],
      [6, "Q5_0", 32, 22],
      [7, "Q5_1", 32, 24],
      [8, "Q8_0", 32, 34],
      [9, "Q8_1", 32, 40],
      [10, "Q2_K", 256, 84],
      [11, "Q3_K", 256, 110],
      [12, "Q4_K", 256, 144],
      [13, "Q5_K", 256, 176],
      [14, "Q6_K", 256, 210],
      [15, "Q8_K", 256, 292],
      [16, "IQ2_XXS", 256, 66],
      [17, "IQ2_XS", 256, 74],
      [18, "IQ3_XXS", 256, 98],
      [19, "IQ1_S", 256, 50],
      [20, "IQ4_NL", 32, 18],
      [21, "IQ3_S", 256, 110],
      [22, "IQ2_S", 256, 82],
      [23, "IQ4_XS", 256, 136],
      [24, "I8", 1, 1],
      [25, "I16", 1, 2],
      [26, "I32", 1, 4],
      [27, "I64", 1, 8],
      [28, "F64", 1, 8],
      [29, "IQ1_M", 256, 56],
      [30, "BF16", 1, 2],
      [34, "TQ1_0", 256, 54],
      [35, "TQ2_0", 256, 66],
      [39, "MXFP4", 32, 17],
      [40, "NVFP4", 64, 36],
      [41, "Q1_0", 128, 18],
    ] as const
  ).map(([type, name, values, bytes]) => [type, { name, values, bytes }]),
);

/**
 * Name, block size and bytes per block of the ggml types this project writes
 * ({@linkcode GgmlType}), from {@linkcode GGML_TYPE_TRAITS}.
 */
export const GGML_BLOCKS: Readonly<
  Record<number, { name: string; values: number; bytes: number }>
> = Object.fromEntries(Object.values(GgmlType).map((t) => [t, GGML_TYPE_TRAITS[t]]));

/** Names of every ggml tensor type, by number ({@linkcode GGML_TYPE_TRAITS}). */
export const GGML_TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(GGML_TYPE_TRAITS).map(([type, t]) => [type, t.name]),
);

/** The types the engines run, as the C engine's messages list them. */
export const RUNNABLE_GGML_TYPES = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K";

/** A typed metadata value for the writer. */
export type GgufValue =
  | { type: "u32"; value: number }
  | { type: "i32"; value: number }
  | { type: "f32"; value: number }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "string[]"; value: readonly string[] }
  | { type: "i32[]"; value: ArrayLike<number> }
  | { type: "f32[]"; value: ArrayLike<number> };

/** A tensor to be written: its name, dims (innermost first), ggml type and byte size. */
export interface GgufTensorSpec {
  /** e.g. "blk.0.attn_q.weight". */
  name: string;
  /** Dimensions, innermost (contiguous) first, as GGUF lists them. */
  dims: readonly number[];
  /** A GgmlType value. */
  type: number;
}

/**
 * The size of a tensor's data.
 *
 * @param type A {@linkcode GgmlType} value.
 * @param dims Its dims, innermost first.
 * @param name The tensor's name, already fit for a message (default "(unnamed)").
 * @returns Its data's size in bytes.
 * @throws {Qwen3Error} `unsupported` for a type this project does not write; `format` when a
 * row does not fill whole blocks.
 */
export function ggmlTensorBytes(type: number, dims: readonly number[], name = "(unnamed)"): number {
  const block = GGML_BLOCKS[type];
  if (!block) {
    throw new Qwen3Error(
      "unsupported",
      `GGUF tensor '${name}': ggml type ${type} (${GGML_TYPE_NAMES[type] ?? "unknown"}) is not ` +
        "supported",
    );
  }
  const count = dims.reduce((a, b) => a * b, 1);
  if (dims[0] % block.values !== 0) {
    throw new Qwen3Error(
      "format",
      `GGUF tensor '${name}' has rows of ${dims[0]} values, not a multiple of the ${block.name} ` +
        `block of ${block.values}`,
    );
  }
  return (count / block.values) * block.bytes;
}

const encoder = new TextEncoder();

/** Grows a byte buffer while the header is assembled. */
class ByteSink {
  #buf = new Uint8Array(1 << 16);
  #view = new DataView(this.#buf.buffer);
  length = 0;

  #reserve(n: number) {
    if (this.length + n <= this.#buf.length) return;
    let size = this.#buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.length));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }
  u8(v: number) {
    this.#reserve(1);
    this.#view.setUint8(this.length, v);
    this.length += 1;
  }
  u32(v: number) {
    this.#reserve(4);
    this.#view.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number) {
    this.#reserve(4);
    this.#view.setInt32(this.length, v, true);
    this.length += 4;
  }
  f32(v: number) {
    this.#reserve(4);
    this.#view.setFloat32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number) {
    this.#reserve(8);
    this.#view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  bytes(b: Uint8Array) {
    this.#reserve(b.length);
    this.#buf.set(b, this.length);
    this.length += b.length;
  }
  string(s: string) {
    const b = encoder.encode(s);
    this.u64(b.length);
    this.bytes(b);
  }
  result(): Uint8Array {
    return this.#buf.slice(0, this.length);
  }
}

function writeValue(sink: ByteSink, v: GgufValue) {
  switch (v.type) {
    case "u32":
      sink.u32(GgufType.UINT32);
      sink.u32(v.value);
      break;
    case "i32":
      sink.u32(GgufType.INT32);
      sink.i32(v.value);
      break;
    case "f32":
      sink.u32(GgufType.FLOAT32);
      sink.f32(v.value);
      break;
    case "bool":
      sink.u32(GgufType.BOOL);
      sink.u8(v.value ? 1 : 0);
      break;
    case "string":
      sink.u32(GgufType.STRING);
      sink.string(v.value);
      break;
    case "string[]":
      sink.u32(GgufType.ARRAY);
      sink.u32(GgufType.STRING);
      sink.u64(v.value.length);
      for (const s of v.value) sink.string(s);
      break;
    case "i32[]":
      sink.u32(GgufType.ARRAY);
      sink.u32(GgufType.INT32);
      sink.u64(v.value.length);
      for (let i = 0; i < v.value.length; i++) sink.i32(v.value[i]);
      break;
    case "f32[]":
      sink.u32(GgufType.ARRAY);
      sink.u32(GgufType.FLOAT32);
      sink.u64(v.value.length);
      for (let i = 0; i < v.value.length; i++) sink.f32(v.value[i]);
      break;
  }
}

/**
 * Encodes the GGUF header (version 3: metadata and tensor table) followed by the padding up
 * to the data section. Tensor offsets are assigned in order, each aligned.
 *
 * @param metadata Key/value pairs, in the order to write; `general.alignment` is added when
 * `alignment` is not the default and the pairs lack it.
 * @param tensors The tensor table, in data order.
 * @param alignment Tensor data alignment (default {@linkcode GGUF_DEFAULT_ALIGNMENT}).
 * @returns The header bytes, each tensor's offset from the start of the data section, and
 * the data section's size.
 * @throws {Qwen3Error} as {@linkcode ggmlTensorBytes} says, naming the tensor.
 */
export function encodeGgufHeader(
  metadata: ReadonlyArray<readonly [string, GgufValue]>,
  tensors: readonly GgufTensorSpec[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): { header: Uint8Array; offsets: number[]; dataBytes: number } {
  const sink = new ByteSink();
  sink.u32(GGUF_MAGIC);
  sink.u32(3);
  sink.u64(tensors.length);
  const hasAlignment = metadata.some(([k]) => k === "general.alignment");
  sink.u64(metadata.length + (hasAlignment || alignment === GGUF_DEFAULT_ALIGNMENT ? 0 : 1));
  for (const [key, value] of metadata) {
    sink.string(key);
    writeValue(sink, value);
  }
  if (!hasAlignment && alignment !== GGUF_DEFAULT_ALIGNMENT) {
    sink.string("general.alignment");
    writeValue(sink, { type: "u32", value: alignment });
  }
  const offsets: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    sink.string(t.name);
    sink.u32(t.dims.length);
    for (const d of t.dims) sink.u64(d);
    sink.u32(t.type);
    sink.u64(offset);
    offsets.push(offset);
    offset += ggmlTensorBytes(t.type, t.dims, quoteBytes(t.name));
    offset = Math.ceil(offset / alignment) * alignment;
  }
  const pad = (alignment - (sink.length % alignment)) % alignment;
  sink.bytes(new Uint8Array(pad));
  return { header: sink.result(), offsets, dataBytes: offset };
}

/** One tensor to write: its table entry and a producer of exactly its bytes, in order. */
export interface GgufTensorSource {
  /** Name, dims and ggml type. */
  spec: GgufTensorSpec;
  /** Yields the tensor's data in pieces (their total must equal the tensor's size). */
  data(): AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

/** Options of {@linkcode writeGgufFile} and {@linkcode writeGgufTo}. */
export interface WriteGgufOptions {
  /** Called with (bytes written, total bytes) as data is written. */
  onProgress?: (done: number, total: number) => void;
  /** Stops the write between pieces (the partial file is removed). */
  signal?: AbortSignal;
}

/**
 * Writes a GGUF file: header, then each source's data at its aligned offset. The file is
 * written as `${outPath}.partial-<pid>` and renamed at the end; on any failure (a source
 * throwing or yielding the wrong byte count, an abort, an I/O error) the partial file is
 * removed, so nothing half-written is left behind.
 *
 * @param outPath The file to write (replaced when it exists).
 * @param metadata Key/value pairs, in the order to write.
 * @param sources The tensors, in the order to write.
 * @param opts Progress callback and abort signal.
 * @returns The file's size in bytes.
 * @throws {Qwen3Error} `invalid_argument` when a source gives the wrong byte count;
 * whatever a source, the signal or the file system throws, after removing the partial file.
 */
export async function writeGgufFile(
  outPath: string,
  metadata: ReadonlyArray<readonly [string, GgufValue]>,
  sources: readonly GgufTensorSource[],
  opts: WriteGgufOptions = {},
): Promise<number> {
  const tmp = `${outPath}.partial-${Deno.pid}`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    let total: number;
    try {
      total = await writeGgufTo(file, metadata, sources, opts);
    } finally {
      file.close();
    }
    await Deno.rename(tmp, outPath);
    return total;
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

async function writeAll(file: Deno.FsFile, b: Uint8Array): Promise<void> {
  let off = 0;
  while (off < b.length) off += await file.write(b.subarray(off));
}

/**
 * Writes a whole GGUF file into `file` from its start (header, then each source's data at
 * its aligned offset); the caller owns the file, its name and what happens to it on failure
 * ({@linkcode writeGgufFile} is the partial-then-rename wrapper).
 *
 * @param file An open, writable, empty file.
 * @param metadata Key/value pairs, in the order to write.
 * @param sources The tensors, in the order to write.
 * @param opts Progress callback and abort signal.
 * @returns The file's size in bytes.
 * @throws {Qwen3Error} `invalid_argument` when a source gives the wrong byte count;
 * whatever a source, the signal or the file throws.
 */
export async function writeGgufTo(
  file: Deno.FsFile,
  metadata: ReadonlyArray<readonly [string, GgufValue]>,
  sources: readonly GgufTensorSource[],
  opts: WriteGgufOptions = {},
): Promise<number> {
  const { header, offsets, dataBytes } = encodeGgufHeader(metadata, sources.map((s) => s.spec));
  const total = header.length + dataBytes;
  await writeAll(file, header);
  let written = 0;
  opts.onProgress?.(header.length, total);
  for (let i = 0; i < sources.length; i++) {
    const s = sources[i];
    if (written < offsets[i]) {
      await writeAll(file, new Uint8Array(offsets[i] - written));
      written = offsets[i];
    }
    const size = ggmlTensorBytes(s.spec.type, s.spec.dims, quoteBytes(s.spec.name));
    let produced = 0;
    for await (const piece of s.data()) {
      opts.signal?.throwIfAborted();
      produced += piece.length;
      if (produced > size) break;
      await writeAll(file, piece);
      written += piece.length;
      opts.onProgress?.(header.length + written, total);
    }
    if (produced !== size) {
      throw new Qwen3Error(
        "invalid_argument",
        `GGUF tensor '${
          quoteBytes(s.spec.name)
        }': its source gave ${produced} bytes, expected ${size}`,
      );
    }
  }
  if (written < dataBytes) await writeAll(file, new Uint8Array(dataBytes - written));
  return total;
}

/** A metadata value as read: numbers, bigints (64-bit), strings, booleans or arrays. */
export type GgufReadValue =
  | number
  | bigint
  | string
  | boolean
  | GgufReadValue[]
  | Int32Array
  | Float32Array
  | Uint32Array;

/** One entry of the tensor table. */
export interface GgufTensorInfo {
  /** Tensor name. */
  name: string;
  /** Dimensions, innermost first. */
  dims: number[];
  /** ggml type. */
  type: number;
  /** Absolute byte offset in the file. */
  offset: number;
  /** Byte size. */
  bytes: number;
}

/** What {@link readGgufHeader} returns. */
export interface GgufFile {
  /** 2 or 3. */
  version: number;
  /** Metadata by key. */
  metadata: Map<string, GgufReadValue>;
  /** Tensors by name. */
  tensors: Map<string, GgufTensorInfo>;
  /** Absolute offset of the data section. */
  dataOffset: number;
  /** Tensor data alignment. */
  alignment: number;
  /**
   * The first bytes (at most 81) of each string-valued metadata entry as stored, invalid
   * UTF-8 included, for messages that show the value as the C engine does
   * ({@linkcode ggufShownString}).
   */
  stringHeads?: Map<string, Uint8Array>;
}

/**
 * A string metadata value fit for a message, byte for byte as the C engine shows it
 * (`quoteBytes` of src/errors.ts, on the stored bytes when the header kept them).
 *
 * @param g The parsed header.
 * @param key The metadata key.
 * @returns The value as messages show it.
 */
export function ggufShownString(g: GgufFile, key: string): string {
  const head = g.stringHeads?.get(key);
  if (head !== undefined) return quoteBytes(head);
  const v = g.metadata.get(key);
  return quoteBytes(typeof v === "string" ? v : String(v));
}

/** Limits that keep a hostile header from asking for absurd allocations. */
const MAX_STRING = 1 << 24;
const MAX_ARRAY = 1 << 26;
const MAX_ITEMS = 1 << 20;
const MAX_DIMS = 4;

const decoder = new TextDecoder("utf-8", { fatal: false });

/** The bytes as one char each: a Set key that tells apart names which decode alike. */
function byteKey(raw: Uint8Array): string {
  let key = "";
  for (let i = 0; i < raw.length; i += 8192) {
    key += String.fromCharCode(...raw.subarray(i, i + 8192));
  }
  return key;
}

/**
 * A position in a GGUF header being read, with the reads every step shares: each checks the
 * bytes available first, and every failure names the field and the byte offset.
 */
class HeaderCursor {
  /** The next byte to read. */
  pos = 0;
  readonly #view: DataView;

  constructor(readonly bytes: Uint8Array, readonly path: string) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Throws the Qwen3Error "format" for `what`, at the current byte. */
  fail(what: string): never {
    throw new Qwen3Error("format", `${this.path}: GGUF ${what} (at byte ${this.pos})`);
  }

  /** Fails unless `n` more bytes are available. */
  need(n: number, what: string): void {
    if (this.pos + n > this.bytes.length) this.fail(`truncated while reading ${what}`);
  }

  /** A u32. */
  u32(what: string): number {
    this.need(4, what);
    const v = this.#view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** A u64 count or length, at most `limit`. */
  u64(what: string, limit: number): number {
    this.need(8, what);
    const v = this.#view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(limit)) this.fail(`${what} ${v} exceeds the limit ${limit}`);
    return Number(v);
  }

  /** A string's bytes as stored (a view). */
  raw(what: string): Uint8Array {
    const n = this.u64(`${what} length`, MAX_STRING);
    this.need(n, what);
    this.pos += n;
    return this.bytes.subarray(this.pos - n, this.pos);
  }

  /** One value of a scalar (non-array) metadata type. */
  scalar(type: number, what: string): GgufReadValue {
    const view = this.#view;
    switch (type) {
      case GgufType.UINT8:
        this.need(1, what);
        return view.getUint8(this.pos++);
      case GgufType.INT8:
        this.need(1, what);
        return view.getInt8(this.pos++);
      case GgufType.UINT16:
        this.need(2, what);
        this.pos += 2;
        return view.getUint16(this.pos - 2, true);
      case GgufType.INT16:
        this.need(2, what);
        this.pos += 2;
        return view.getInt16(this.pos - 2, true);
      case GgufType.UINT32:
        return this.u32(what);
      case GgufType.INT32:
        this.need(4, what);
        this.pos += 4;
        return view.getInt32(this.pos - 4, true);
      case GgufType.FLOAT32:
        this.need(4, what);
        this.pos += 4;
        return view.getFloat32(this.pos - 4, true);
      case GgufType.BOOL:
        this.need(1, what);
        return view.getUint8(this.pos++) !== 0;
      case GgufType.STRING:
        return decoder.decode(this.raw(what));
      case GgufType.UINT64:
        this.need(8, what);
        this.pos += 8;
        return view.getBigUint64(this.pos - 8, true);
      case GgufType.INT64:
        this.need(8, what);
        this.pos += 8;
        return view.getBigInt64(this.pos - 8, true);
      case GgufType.FLOAT64:
        this.need(8, what);
        this.pos += 8;
        return view.getFloat64(this.pos - 8, true);
      default:
        return this.fail(`${what} has unknown value type ${type}`);
    }
  }

  /** One metadata value of any type: 4-byte numeric arrays as typed arrays. */
  value(type: number, what: string): GgufReadValue {
    if (type !== GgufType.ARRAY) return this.scalar(type, what);
    const elem = this.u32(`${what} element type`);
    if (elem === GgufType.ARRAY) this.fail(`${what} is a nested array (not supported)`);
    const n = this.u64(`${what} count`, MAX_ARRAY);
    if (elem === GgufType.INT32 || elem === GgufType.FLOAT32 || elem === GgufType.UINT32) {
      this.need(n * 4, what);
      const view = this.#view;
      const out = elem === GgufType.INT32
        ? new Int32Array(n)
        : elem === GgufType.FLOAT32
        ? new Float32Array(n)
        : new Uint32Array(n);
      for (let i = 0; i < n; i++) {
        out[i] = elem === GgufType.INT32
          ? view.getInt32(this.pos, true)
          : elem === GgufType.FLOAT32
          ? view.getFloat32(this.pos, true)
          : view.getUint32(this.pos, true);
        this.pos += 4;
      }
      return out;
    }
    // Each element needs at least one byte: a count beyond the bytes left is a lie.
    if (n > this.bytes.length - this.pos) this.fail(`${what} count ${n} exceeds the bytes left`);
    const out: GgufReadValue[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.scalar(elem, what);
    return out;
  }
}

/** Reads the magic, the version (2 or 3) and the two counts. */
function readPreamble(r: HeaderCursor): { version: number; nTensors: number; nKv: number } {
  if (r.u32("magic") !== GGUF_MAGIC) {
    r.pos = 0;
    r.fail("magic is not 'GGUF'");
  }
  const version = r.u32("version");
  if (version === 1) {
    throw new Qwen3Error(
      "unsupported",
      `${r.path}: GGUF version 1 (32-bit counts) is not supported; convert it to version 3 ` +
        "with llama.cpp's tools",
    );
  }
  if (version !== 2 && version !== 3) r.fail(`version ${version} is not supported (2 or 3)`);
  const nTensors = r.u64("tensor count", MAX_ITEMS);
  const nKv = r.u64("metadata count", MAX_ITEMS);
  return { version, nTensors, nKv };
}

/**
 * Reads `nKv` metadata entries; keys are compared as bytes, as the C parser does: two
 * invalid UTF-8 keys that decode alike are different keys. Messages show them with
 * quoteBytes, as C does.
 */
function readMetadata(
  r: HeaderCursor,
  nKv: number,
): { metadata: Map<string, GgufReadValue>; stringHeads: Map<string, Uint8Array> } {
  const metadata = new Map<string, GgufReadValue>();
  const stringHeads = new Map<string, Uint8Array>();
  const seenKeys = new Set<string>();
  for (let i = 0; i < nKv; i++) {
    const keyBytes = r.raw(`metadata key #${i}`);
    const key = decoder.decode(keyBytes);
    const shown = quoteBytes(keyBytes);
    if (seenKeys.has(byteKey(keyBytes))) r.fail(`metadata key '${shown}' appears twice`);
    seenKeys.add(byteKey(keyBytes));
    const type = r.u32(`type of '${shown}'`);
    const b = type === GgufType.STRING ? r.raw(`'${shown}'`) : undefined;
    const v = b === undefined ? r.value(type, `'${shown}'`) : decoder.decode(b);
    // A key that decodes like an earlier one is not valid UTF-8, so no reader looks it up.
    if (metadata.has(key)) continue;
    metadata.set(key, v);
    if (b !== undefined) stringHeads.set(key, b.slice(0, 81));
  }
  return { metadata, stringHeads };
}

/** `general.alignment` (default 32): a power of two up to 65536. */
function readAlignment(r: HeaderCursor, metadata: Map<string, GgufReadValue>): number {
  const alignValue = metadata.get("general.alignment");
  const alignment = alignValue === undefined ? GGUF_DEFAULT_ALIGNMENT : Number(alignValue);
  if (
    typeof alignValue === "string" || !Number.isInteger(alignment) || alignment <= 0 ||
    alignment > 1 << 16 || (alignment & (alignment - 1)) !== 0
  ) {
    r.fail("general.alignment is not a power of two up to 65536");
  }
  return alignment;
}

/** A tensor table entry as read, before its type and offset are checked. */
interface PendingTensor {
  name: string;
  /** The name as messages show it. */
  shown: string;
  dims: number[];
  type: number;
  /** Offset from the data section. */
  rel: number;
}

/** Reads `nTensors` tensor infos: 1 to 4 non-zero dims, names unique as bytes. */
function readTensorTable(r: HeaderCursor, nTensors: number): PendingTensor[] {
  const seen = new Set<string>();
  const pending: PendingTensor[] = [];
  for (let i = 0; i < nTensors; i++) {
    const nameBytes = r.raw(`tensor #${i} name`);
    const name = decoder.decode(nameBytes);
    const shown = quoteBytes(nameBytes);
    const nDims = r.u32(`'${shown}' n_dims`);
    if (nDims < 1 || nDims > MAX_DIMS) {
      r.fail(`tensor '${shown}' has ${nDims} dims (1..${MAX_DIMS})`);
    }
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const v = r.u64(`'${shown}' dim ${d}`, 1 << 30);
      if (v === 0) r.fail(`tensor '${shown}' dim ${d} is 0`);
      dims.push(v);
    }
    const type = r.u32(`'${shown}' type`);
    const rel = r.u64(`'${shown}' offset`, Number.MAX_SAFE_INTEGER);
    if (seen.has(byteKey(nameBytes))) r.fail(`tensor '${shown}' appears twice`);
    seen.add(byteKey(nameBytes));
    pending.push({ name, shown, dims, type, rel });
  }
  return pending;
}

/**
 * Checks each tensor as the C parser does, in its order (a known type, whole blocks,
 * alignment, then the end of the file; types the engines cannot run are refused only when a
 * model needs them) and gives each its absolute offset and size.
 */
function placeTensors(
  r: HeaderCursor,
  pending: readonly PendingTensor[],
  dataOffset: number,
  alignment: number,
  fileSize: number,
): Map<string, GgufTensorInfo> {
  const tensors = new Map<string, GgufTensorInfo>();
  for (const p of pending) {
    const block = GGML_TYPE_TRAITS[p.type];
    if (!block) {
      throw new Qwen3Error(
        "unsupported",
        `${r.path}: GGUF tensor '${p.shown}' has ggml type ${p.type}, unknown to this engine ` +
          `(it runs ${RUNNABLE_GGML_TYPES})`,
      );
    }
    if (p.dims[0] % block.values !== 0) {
      throw new Qwen3Error(
        "format",
        `${r.path}: GGUF tensor '${p.shown}' has rows of ${p.dims[0]} values, not a multiple ` +
          `of the ${block.name} block of ${block.values}`,
      );
    }
    if (p.rel % alignment !== 0) r.fail(`tensor '${p.shown}' offset ${p.rel} is not aligned`);
    const size = p.dims.reduce((a, b) => a * b, 1) / block.values * block.bytes;
    const offset = dataOffset + p.rel;
    if (offset + size > fileSize) {
      r.fail(
        `tensor '${p.shown}' ends at byte ${
          offset + size
        }, past the end of the file (${fileSize} bytes)`,
      );
    }
    // A name that decodes like an earlier one is not valid UTF-8: no reader looks it up.
    if (!tensors.has(p.name)) {
      tensors.set(p.name, { name: p.name, dims: p.dims, type: p.type, offset, bytes: size });
    }
  }
  return tensors;
}

/**
 * Parses and validates a GGUF header: every count, length and offset is checked against
 * the bytes available and the file size, so a truncated or hostile file gives an error
 * naming the field and byte offset, never a crash or a huge allocation.
 *
 * @param bytes At least the header (the whole file is fine).
 * @param fileSize The whole file's size, which every tensor must fit in.
 * @param path The file's name, for messages.
 * @returns The metadata, the tensor table with absolute offsets, and the data offset.
 * @throws {Qwen3Error} `format` naming the field and byte offset: a wrong magic, a count or
 * length past a limit or past the bytes available, a duplicate key or tensor, a bad
 * alignment, a tensor that is not whole blocks, misaligned or past the end of the file.
 * @throws {Qwen3Error} `unsupported` for GGUF version 1 or a ggml type ggml does not define.
 */
export function readGgufHeader(bytes: Uint8Array, fileSize: number, path: string): GgufFile {
  const r = new HeaderCursor(bytes, path);
  const { version, nTensors, nKv } = readPreamble(r);
  const { metadata, stringHeads } = readMetadata(r, nKv);
  const alignment = readAlignment(r, metadata);
  const pending = readTensorTable(r, nTensors);
  const dataOffset = Math.ceil(r.pos / alignment) * alignment;
  const tensors = placeTensors(r, pending, dataOffset, alignment, fileSize);
  return { version, metadata, tensors, dataOffset, alignment, stringHeads };
}

/** Scratch for reinterpreting a float's bits without an allocation per call. */
const halfScratch = new Float32Array(1);
const halfBits = new Uint32Array(halfScratch.buffer);

/**
 * fp32 -> IEEE half, rounding to nearest even; overflow becomes infinity. The one fp16
 * encoder (the fp16 scale of a Q8_0 block, F16 weights).
 *
 * @param value The number (rounded to fp32 first).
 * @returns The 16-bit code.
 */
export function toHalf(value: number): number {
  halfScratch[0] = value;
  const x = halfBits[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // Rounding up may carry into the exponent: that is the correct next value (up to inf).
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  return sign | half;
}

/**
 * IEEE half -> number, exactly.
 *
 * @param h The 16-bit code.
 * @returns Its value.
 */
export function fromHalf(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * Quantises fp32 values to ggml Q8_0 blocks: per 32 values, d = max|x| / 127 stored as fp16,
 * q = round(x * (1 / d)) evaluated in fp32, so the bytes are llama.cpp's.
 *
 * @param values The values (rows of a row-major matrix, back to back).
 * @param out Where to write the blocks (default: a new array of 34 bytes per 32 values).
 * @returns The blocks (`out` when given).
 * @throws {Qwen3Error} `invalid_argument` when the count is not a multiple of 32.
 */
export function quantizeQ8_0(values: Float32Array, out?: Uint8Array): Uint8Array {
  if (values.length % 32 !== 0) {
    throw new Qwen3Error(
      "invalid_argument",
      `Q8_0 needs a multiple of 32 values, got ${values.length}`,
    );
  }
  const blocks = values.length / 32;
  const dst = out ?? new Uint8Array(blocks * 34);
  const view = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(values[b * 32 + i]));
    // In fp32 like llama.cpp's quantize_row_q8_0_ref (an fp64 1/d or x * id flips a rounding
    // now and then: 2 blocks in 512 of tests/fixtures/kquant_export).
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * 34, toHalf(d), true);
    for (let i = 0; i < 32; i++) {
      const v = Math.fround(values[b * 32 + i] * id);
      // roundf: half away from zero (Math.round would round -2.5 to -2).
      view.setInt8(b * 34 + 2 + i, Math.sign(v) * Math.round(Math.abs(v)));
    }
  }
  return dst;
}
