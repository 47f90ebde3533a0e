/**
 * Hugging Face safetensors: a validating header reader, a reader of whole folders (one
 * `model.safetensors` or shards listed in `model.safetensors.index.json`) that converts BF16,
 * F16 and F32 tensors to fp32 one tensor or one block of rows at a time with file seeks, and
 * a header encoder for writers (test fixtures, the benchmark's random model).
 *
 * A file is: u64 little-endian header length N, N bytes of JSON
 * (`{"__metadata__": {..}, "name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [b, e]}}`,
 * offsets relative to the first byte after the header), then the tensor data.
 *
 * The exporter (src/export/) opens a folder with `SafetensorsModel.open(dir)`, checks
 * `model.tensors` against the config, and streams each matrix with `readRows`.
 * @module
 */

import { basename, join } from "node:path";
import { Qwen3Error } from "../errors.ts";
import { toHalf } from "./gguf.ts";

/** Bytes per element of every dtype the safetensors format defines (packed sub-byte ones excluded). */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
});

/** The dtypes this module converts to fp32. */
export const CONVERTIBLE_DTYPES = ["BF16", "F16", "F32"] as const;

/** A dtype this module converts to fp32. */
export type ConvertibleDtype = (typeof CONVERTIBLE_DTYPES)[number];

/**
 * Header length limit: Hugging Face's own reader refuses headers over 100 MB, and a real one
 * is tens of KB (a 28-layer model lists ~310 tensors), so more is a corrupt or hostile file.
 */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor of a safetensors file. */
export interface SafetensorsTensor {
  /** Its name, e.g. `model.layers.0.self_attn.q_proj.weight`. */
  name: string;
  /** Element type as the header spells it (`BF16`, `F16`, `F32`, ...). */
  dtype: string;
  /** Dimensions, outermost first (`[out, in]` for a linear layer's weight). */
  shape: number[];
  /** Absolute byte offset of the first element in `file`. */
  offset: number;
  /** Byte length of the data. */
  bytes: number;
  /** The file holding it. */
  file: string;
}

/** A parsed, validated safetensors header. */
export interface SafetensorsHeader {
  /** The file it came from. */
  path: string;
  /** The file's size in bytes. */
  fileSize: number;
  /** Bytes before the first tensor (8 + header length). */
  dataOffset: number;
  /** The `__metadata__` strings (empty when absent). */
  metadata: Record<string, string>;
  /** Tensors by name. */
  tensors: Map<string, SafetensorsTensor>;
}

function formatError(path: string, message: string): Qwen3Error {
  return new Qwen3Error("format", `${path}: ${message}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Reads the header length (the first 8 bytes) and checks it against the file size and
 * {@linkcode MAX_HEADER_BYTES}.
 *
 * @param first8 The file's first 8 bytes (or more).
 * @param fileSize The file's size.
 * @param path The file's name, for messages.
 * @returns N, the JSON header's length in bytes.
 * @throws {Qwen3Error} `format` when the file is too short, or N is under 2, over the limit
 * or past the end of the file.
 */
export function safetensorsHeaderLength(
  first8: Uint8Array,
  fileSize: number,
  path: string,
): number {
  if (fileSize < 8 || first8.length < 8) {
    throw formatError(
      path,
      `file is ${fileSize} bytes, too short for the 8-byte safetensors header length ` +
        "(truncated or not a safetensors file)",
    );
  }
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n < 2n) throw formatError(path, `safetensors header length ${n} is too small for JSON`);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw formatError(
      path,
      `safetensors header length ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes ` +
        "(corrupt or not a safetensors file)",
    );
  }
  if (n > BigInt(fileSize - 8)) {
    throw formatError(
      path,
      `safetensors header length ${n} runs past the end of the ${fileSize}-byte file (truncated)`,
    );
  }
  return Number(n);
}

/** The header's JSON object, from the N bytes after the length. */
function headerJson(bytes: Uint8Array, n: number, path: string): Record<string, unknown> {
  if (bytes.length < 8 + n) {
    throw formatError(path, `only ${bytes.length} of the ${8 + n} header bytes were given`);
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw formatError(path, `safetensors header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (!isRecord(json)) throw formatError(path, "safetensors header is not a JSON object");
  return json;
}

/** The `__metadata__` entry: an object of strings. */
function metadataStrings(entry: unknown, path: string): Record<string, string> {
  if (!isRecord(entry)) throw formatError(path, "__metadata__ is not a JSON object");
  const metadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== "string") {
      throw formatError(path, `__metadata__ value "${k}" is not a string`);
    }
    metadata[k] = v;
  }
  return metadata;
}

/** Bytes of `shape` x `size`-byte elements, or just past `span` when it would exceed it. */
function boundedBytes(shape: number[], size: number, span: number): number {
  // The product is bounded by the span already checked (<= dataSize), so stop early
  // instead of overflowing on a hostile shape.
  let count = shape.includes(0) ? 0 : 1;
  for (const d of count === 0 ? [] : shape) {
    count *= d;
    if (count * size > span) break;
  }
  return count * size;
}

/**
 * One tensor entry checked: a known dtype, a shape of non-negative integers, `data_offsets`
 * `[begin, end]` inside the data section and spanning exactly the shape's bytes.
 */
function tensorEntry(
  name: string,
  entry: unknown,
  path: string,
  fileSize: number,
  dataOffset: number,
): SafetensorsTensor {
  const dataSize = fileSize - dataOffset;
  const where = `tensor "${name}"`;
  if (!isRecord(entry)) throw formatError(path, `${where} is not a JSON object`);
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== "string") throw formatError(path, `${where} has no string dtype`);
  const size = SAFETENSORS_DTYPE_BYTES[dtype];
  if (size === undefined) {
    throw new Qwen3Error(
      "unsupported",
      `${path}: ${where} has dtype "${dtype}", which this reader does not know ` +
        `(known: ${Object.keys(SAFETENSORS_DTYPE_BYTES).join(", ")})`,
    );
  }
  if (
    !Array.isArray(shape) ||
    !shape.every((d) => typeof d === "number" && Number.isSafeInteger(d) && d >= 0)
  ) {
    throw formatError(
      path,
      `${where} shape ${JSON.stringify(shape)} is not a list of non-negative integers`,
    );
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
  ) {
    throw formatError(
      path,
      `${where} data_offsets ${JSON.stringify(offsets)} is not [begin, end] in bytes`,
    );
  }
  const [begin, end] = offsets as number[];
  if (begin > end) {
    throw formatError(path, `${where} data_offsets [${begin}, ${end}]: begin is after end`);
  }
  if (end > dataSize) {
    throw formatError(
      path,
      `${where} data_offsets [${begin}, ${end}] end past the ${dataSize} data bytes ` +
        `of the ${fileSize}-byte file (truncated)`,
    );
  }
  const dims = shape as number[];
  if (boundedBytes(dims, size, end - begin) !== end - begin) {
    throw formatError(
      path,
      `${where} shape [${dims.join(", ")}] x ${dtype} (${size} bytes) needs ` +
        `${dims.reduce((a, b) => a * b, 1) * size} bytes but data_offsets [${begin}, ${end}] ` +
        `span ${end - begin}`,
    );
  }
  return { name, dtype, shape: dims, offset: dataOffset + begin, bytes: end - begin, file: path };
}

/** Refuses two non-empty tensors that share a byte. */
function checkNoOverlap(
  tensors: Map<string, SafetensorsTensor>,
  dataOffset: number,
  path: string,
): void {
  const spans = [...tensors.values()].filter((t) => t.bytes > 0).sort((a, b) =>
    a.offset - b.offset
  );
  for (let i = 1; i < spans.length; i++) {
    const a = spans[i - 1], b = spans[i];
    if (b.offset < a.offset + a.bytes) {
      throw formatError(
        path,
        `tensors "${a.name}" and "${b.name}" overlap (data_offsets [${a.offset - dataOffset}, ` +
          `${a.offset - dataOffset + a.bytes}] and [${b.offset - dataOffset}, ` +
          `${b.offset - dataOffset + b.bytes}])`,
      );
    }
  }
}

/**
 * Parses and validates a safetensors header. Checks: header length bounds, UTF-8 JSON
 * object, `__metadata__` strings, every tensor's dtype known, shape a list of non-negative
 * integers, `data_offsets` `[begin, end]` with begin <= end, end inside the data section,
 * `end - begin == product(shape) * dtype size`, and no two tensors sharing a byte.
 *
 * @param bytes At least the file's first 8 + N bytes (N: the header length).
 * @param fileSize The whole file's size.
 * @param path The file's name, for messages.
 * @returns The header: metadata, tensors with absolute offsets, the data offset.
 * @throws {Qwen3Error} `format` naming the file, the tensor and the values.
 * @throws {Qwen3Error} `unsupported` for a dtype this reader does not know.
 */
export function parseSafetensorsHeader(
  bytes: Uint8Array,
  fileSize: number,
  path: string,
): SafetensorsHeader {
  const n = safetensorsHeaderLength(bytes, fileSize, path);
  const json = headerJson(bytes, n, path);
  const dataOffset = 8 + n;
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === "__metadata__") metadata = metadataStrings(entry, path);
    else tensors.set(name, tensorEntry(name, entry, path, fileSize, dataOffset));
  }
  checkNoOverlap(tensors, dataOffset, path);
  return { path, fileSize, dataOffset, metadata, tensors };
}

async function openFile(path: string, what: string): Promise<Deno.FsFile> {
  try {
    return await Deno.open(path, { read: true });
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message;
    throw new Qwen3Error("io", `${path}: cannot open ${what} (${why})`);
  }
}

/** Fills `buf` from byte `offset` of `file`; a short file is a "format" error naming `path`. */
async function readAt(file: Deno.FsFile, path: string, offset: number, buf: Uint8Array) {
  await file.seek(offset, Deno.SeekMode.Start);
  let done = 0;
  while (done < buf.length) {
    const n = await file.read(buf.subarray(done));
    if (n === null) {
      throw formatError(
        path,
        `file ended at byte ${offset + done} while reading ${buf.length} bytes from ${offset} ` +
          "(truncated while being read?)",
      );
    }
    done += n;
  }
}

/** Reads and validates the header of an open safetensors file (only the header is read). */
async function readHeaderOf(file: Deno.FsFile, path: string): Promise<SafetensorsHeader> {
  const size = (await file.stat()).size;
  const first8 = new Uint8Array(8);
  if (size >= 8) await readAt(file, path, 0, first8);
  const n = safetensorsHeaderLength(first8, size, path);
  const bytes = new Uint8Array(8 + n);
  await readAt(file, path, 0, bytes);
  return parseSafetensorsHeader(bytes, size, path);
}

/**
 * Reads and validates the header of a safetensors file (only the header is read).
 *
 * @param path The file.
 * @returns Its header.
 * @throws {Qwen3Error} `io` when the file is missing or unreadable; `format` or
 * `unsupported` as {@linkcode parseSafetensorsHeader} says.
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const file = await openFile(path, "safetensors file");
  try {
    return await readHeaderOf(file, path);
  } finally {
    file.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Element conversions

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

let halfTable: Float32Array | undefined;

/** fp32 value of every IEEE half bit pattern, built on first use (256 KiB). */
function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    t[h] = exp === 0
      ? sign * mant * 2 ** -24
      : exp === 0x1f
      ? (mant ? NaN : sign * Infinity)
      : sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  halfTable = t;
  return t;
}

/**
 * Converts little-endian elements to fp32, exactly: BF16 is the top half of an fp32; F16
 * goes through a 65536-entry table.
 *
 * @param raw The elements' bytes (any alignment).
 * @param dtype Their type.
 * @param count How many to convert.
 * @param out Receives `count` fp32 values.
 */
export function toFloat32(
  raw: Uint8Array,
  dtype: ConvertibleDtype,
  count: number,
  out: Float32Array,
): void {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (dtype === "F32") {
    if (raw.byteOffset % 4 === 0) {
      out.set(new Float32Array(raw.buffer, raw.byteOffset, count));
    } else {
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
    }
    return;
  }
  const bits = raw.byteOffset % 2 === 0
    ? new Uint16Array(raw.buffer, raw.byteOffset, count)
    : Uint16Array.from({ length: count }, (_, i) => view.getUint16(2 * i, true));
  if (dtype === "BF16") {
    const outBits = new Uint32Array(out.buffer, out.byteOffset, count);
    for (let i = 0; i < count; i++) outBits[i] = bits[i] << 16;
    return;
  }
  const table = halfToFloatTable();
  for (let i = 0; i < count; i++) out[i] = table[bits[i]];
}

/**
 * fp32 -> bfloat16 bits, rounding to nearest even (NaN stays a quiet NaN).
 *
 * @param value The number (rounded to fp32 first).
 * @returns The 16-bit code.
 */
export function float32ToBf16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** fp32 -> IEEE half bits, rounding to nearest even; overflow becomes infinity (the one
 * fp16 encoder, src/formats/gguf.ts's). */
export const float32ToF16: (value: number) => number = toHalf;

// ---------------------------------------------------------------------------------------------
// Folders

/** The index file of a sharded checkpoint. */
export const SAFETENSORS_INDEX = "model.safetensors.index.json";
/** The file of an unsharded checkpoint. */
export const SAFETENSORS_SINGLE = "model.safetensors";

async function statOrUndefined(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Qwen3Error("io", `${path}: cannot stat (${(e as Error).message})`);
  }
}

/**
 * Which files of `dir` hold the weights: the shards named by `model.safetensors.index.json`
 * (with the tensor -> shard map), else `model.safetensors`, else every `*.safetensors`.
 */
async function findShards(
  dir: string,
): Promise<{ files: string[]; weightMap?: Map<string, string>; index?: string }> {
  const indexPath = join(dir, SAFETENSORS_INDEX);
  if (await statOrUndefined(indexPath)) {
    let json: unknown;
    try {
      json = JSON.parse(await Deno.readTextFile(indexPath));
    } catch (e) {
      const code = e instanceof SyntaxError ? "format" : "io";
      throw new Qwen3Error(
        code,
        `${indexPath}: cannot read the shard index (${(e as Error).message})`,
      );
    }
    const map = isRecord(json) ? json.weight_map : undefined;
    if (!isRecord(map)) throw formatError(indexPath, "has no weight_map object");
    const weightMap = new Map<string, string>();
    const files = new Set<string>();
    for (const [name, file] of Object.entries(map)) {
      if (typeof file !== "string" || file === "" || basename(file) !== file || file === "..") {
        // A shard outside the folder (a path, "..") would read files the user did not give.
        throw formatError(
          indexPath,
          `weight_map["${name}"] = ${JSON.stringify(file)} is not a file name in this folder`,
        );
      }
      weightMap.set(name, file);
      files.add(file);
    }
    if (files.size === 0) throw formatError(indexPath, "weight_map lists no tensors");
    return { files: [...files].sort().map((f) => join(dir, f)), weightMap, index: indexPath };
  }
  const single = join(dir, SAFETENSORS_SINGLE);
  if (await statOrUndefined(single)) return { files: [single] };
  const found: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.endsWith(".safetensors")) found.push(join(dir, e.name));
    }
  } catch (e) {
    throw new Qwen3Error("io", `${dir}: cannot list the folder (${(e as Error).message})`);
  }
  if (found.length === 0) {
    throw new Qwen3Error(
      "io",
      `${dir}: no ${SAFETENSORS_SINGLE}, ${SAFETENSORS_INDEX} or other *.safetensors file ` +
        "(is this a Hugging Face model folder?)",
    );
  }
  return { files: found.sort() };
}

/** Values per block when a tensor is read in pieces: 4 Mi values (8 MB of BF16). */
const BLOCK_VALUES = 1 << 22;

/**
 * The weights of a Hugging Face model folder, single-file or sharded. Only headers are read
 * at open; {@link readRows} and {@link readTensor} seek to a tensor and convert it to fp32,
 * so memory holds at most the block asked for. Close it (or `using`) to release the files.
 */
export class SafetensorsModel implements Disposable {
  /** The folder. */
  readonly dir: string;
  /** Every tensor by name, across all files. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
  /** The files read, in order. */
  readonly files: readonly string[];
  #handles = new Map<string, Deno.FsFile>();
  /** Raw bytes of the last block read, reused so streaming a model allocates no garbage. */
  #scratch = new Uint8Array(0);
  #scratchBusy = false;

  private constructor(dir: string, files: string[], tensors: Map<string, SafetensorsTensor>) {
    this.dir = dir;
    this.files = files;
    this.tensors = tensors;
  }

  /** Total bytes of tensor data across the files. */
  get dataBytes(): number {
    let total = 0;
    for (const t of this.tensors.values()) total += t.bytes;
    return total;
  }

  /**
   * Opens the weights in `dir` and validates every header; with an index, every tensor the
   * index names must be in its shard and no tensor may appear in two files.
   *
   * @param dir The Hugging Face folder.
   * @returns The open weights; close them (or `using`).
   * @throws {Qwen3Error} `io` when the folder has no weights or a file cannot be read.
   * @throws {Qwen3Error} `format` for a bad header or shard index, or a tensor in two files.
   * @throws {Qwen3Error} `unsupported` for a dtype the reader does not know.
   */
  static async open(dir: string): Promise<SafetensorsModel> {
    const { files, weightMap, index } = await findShards(dir);
    const tensors = new Map<string, SafetensorsTensor>();
    const model = new SafetensorsModel(dir, files, tensors);
    try {
      for (const path of files) {
        const file = await openFile(path, weightMap ? `a shard named by ${index}` : "weights");
        model.#handles.set(path, file);
        const header = await readHeaderOf(file, path);
        for (const [name, t] of header.tensors) {
          const other = tensors.get(name);
          if (other) {
            throw formatError(path, `tensor "${name}" is also in ${other.file}`);
          }
          tensors.set(name, t);
        }
      }
      if (weightMap) {
        for (const [name, file] of weightMap) {
          const t = tensors.get(name);
          if (!t || basename(t.file) !== file) {
            throw formatError(
              index!,
              `weight_map says "${name}" is in ${file}, but ${
                t ? `it is in ${basename(t.file)}` : "no shard holds it"
              }`,
            );
          }
        }
      }
    } catch (e) {
      model.close();
      throw e;
    }
    return model;
  }

  /**
   * One tensor's entry.
   *
   * @param name The tensor's name.
   * @returns Its entry.
   * @throws {Qwen3Error} `format` naming the folder when there is no such tensor.
   */
  tensor(name: string): SafetensorsTensor {
    const t = this.tensors.get(name);
    if (!t) throw new Qwen3Error("format", `${this.dir}: tensor "${name}" is missing`);
    return t;
  }

  #check(t: SafetensorsTensor): ConvertibleDtype {
    if (!(CONVERTIBLE_DTYPES as readonly string[]).includes(t.dtype)) {
      throw new Qwen3Error(
        "unsupported",
        `${t.file}: tensor "${t.name}" has dtype ${t.dtype}; only ${
          CONVERTIBLE_DTYPES.join(", ")
        } can be converted`,
      );
    }
    return t.dtype as ConvertibleDtype;
  }

  /**
   * Reads rows of a tensor as fp32 (rows along the first dimension; a 1-D tensor is one row
   * per element).
   *
   * @param name The tensor's name.
   * @param row0 The first row.
   * @param nRows How many rows.
   * @param out Receives the values (at least nRows * row length).
   * @throws {Qwen3Error} `format` when there is no such tensor or the file was cut short.
   * @throws {Qwen3Error} `unsupported` for a dtype other than BF16, F16, F32.
   * @throws {Qwen3Error} `invalid_argument` for rows outside the tensor, an `out` too short
   * or a closed model.
   */
  async readRows(name: string, row0: number, nRows: number, out: Float32Array): Promise<void> {
    const t = this.tensor(name);
    const dtype = this.#check(t);
    const rows = t.shape.length === 0 ? 1 : t.shape[0];
    const cols = t.shape.length === 0 ? 1 : t.shape.slice(1).reduce((a, b) => a * b, 1);
    if (
      !Number.isInteger(row0) || !Number.isInteger(nRows) || row0 < 0 || nRows < 0 ||
      row0 + nRows > rows
    ) {
      throw new Qwen3Error(
        "invalid_argument",
        `readRows("${name}", ${row0}, ${nRows}): the tensor has ${rows} rows`,
      );
    }
    const count = nRows * cols;
    if (out.length < count) {
      throw new Qwen3Error(
        "invalid_argument",
        `readRows("${name}"): output holds ${out.length} values, ${count} needed`,
      );
    }
    const size = SAFETENSORS_DTYPE_BYTES[dtype];
    const file = this.#handles.get(t.file);
    if (!file) throw new Qwen3Error("invalid_argument", `${this.dir}: the model was closed`);
    // Overlapping calls (not the exporter's way) each get their own buffer.
    const shared = !this.#scratchBusy;
    if (shared && this.#scratch.length < count * size) this.#scratch = new Uint8Array(count * size);
    const raw = shared ? this.#scratch.subarray(0, count * size) : new Uint8Array(count * size);
    if (shared) this.#scratchBusy = true;
    try {
      await readAt(file, t.file, t.offset + row0 * cols * size, raw);
      toFloat32(raw, dtype, count, out);
    } finally {
      if (shared) this.#scratchBusy = false;
    }
  }

  /**
   * A whole tensor as fp32 (for small tensors: norms; use {@linkcode readRows} for big ones).
   *
   * @param name The tensor's name.
   * @returns Its values.
   * @throws {Qwen3Error} as {@linkcode readRows} says.
   */
  async readTensor(name: string): Promise<Float32Array> {
    const t = this.tensor(name);
    const out = new Float32Array(t.shape.reduce((a, b) => a * b, 1));
    const rows = t.shape.length === 0 ? 1 : t.shape[0];
    const cols = rows === 0 ? 0 : out.length / rows;
    const step = Math.max(1, Math.floor(BLOCK_VALUES / Math.max(1, cols)));
    for (let r = 0; r < rows; r += step) {
      const n = Math.min(step, rows - r);
      await this.readRows(name, r, n, out.subarray(r * cols));
    }
    if (rows === 0) this.#check(t);
    return out;
  }

  /** Closes the files. Idempotent. */
  close(): void {
    for (const f of this.#handles.values()) {
      try {
        f.close();
      } catch { /* already closed */ }
    }
    this.#handles.clear();
  }

  /** Same as {@link close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

/** A tensor to be written: name, dtype and shape. */
export interface SafetensorsTensorSpec {
  /** Tensor name. */
  name: string;
  /** A dtype of {@link SAFETENSORS_DTYPE_BYTES}. */
  dtype: string;
  /** Dimensions, outermost first. */
  shape: readonly number[];
}

/**
 * Encodes a safetensors header for tensors laid out back to back in the given order, as
 * Hugging Face writes it (JSON padded with spaces to a multiple of 8 bytes).
 *
 * @param tensors The tensors, in data order.
 * @param metadata The `__metadata__` strings (default `{ format: "pt" }`; none written when
 * empty).
 * @returns The bytes to write before the data, each tensor's offset within the data and the
 * data size.
 * @throws {Qwen3Error} `invalid_argument` for an unknown dtype.
 */
export function encodeSafetensorsHeader(
  tensors: readonly SafetensorsTensorSpec[],
  metadata: Record<string, string> = { format: "pt" },
): { header: Uint8Array; offsets: number[]; dataBytes: number } {
  const json: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) json.__metadata__ = metadata;
  const offsets: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    const size = SAFETENSORS_DTYPE_BYTES[t.dtype];
    if (size === undefined) {
      throw new Qwen3Error("invalid_argument", `unknown safetensors dtype "${t.dtype}"`);
    }
    const bytes = t.shape.reduce((a, b) => a * b, 1) * size;
    json[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offsets.push(offset);
    offset += bytes;
  }
  const body = new TextEncoder().encode(JSON.stringify(json));
  const padded = body.length + ((8 - (body.length % 8)) % 8);
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + body.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(body, 8);
  return { header, offsets, dataBytes: offset };
}
