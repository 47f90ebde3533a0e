/**
 * Opening model files: a model path is checked to be a regular file, read whole into one
 * buffer, and read as the format its first bytes say: GGUF (magic "GGUF", gguf_model.ts) or
 * a qwen3.c / qwen3-rs checkpoint (checkpoint.ts). The engine-facing result types are in
 * weights.ts.
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import { GGUF_MAGIC, type GgufFile, readGgufHeader } from "./gguf.ts";
import { ggufConfig, ggufWeights } from "./gguf_model.ts";
import { type Checkpoint, checkpointTensors, HEADER_BYTES, parseHeader } from "./checkpoint.ts";
import { fileKind, ioReason, statRegularFile } from "./side_file.ts";
import type { LoadedModel } from "./weights.ts";

/**
 * Opens a model file for reading after checking that it is a regular file: opening a FIFO
 * would wait for a writer forever, and a device never ends.
 *
 * @param path The model file.
 * @returns The open file (the caller closes it) and its size.
 * @throws {Qwen3Error} `io` naming the path and what it is (not a regular file), or why it
 * cannot be opened.
 */
export async function openModelFile(path: string): Promise<{ file: Deno.FsFile; size: number }> {
  await statRegularFile(path, "model file");
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path);
  } catch (e) {
    throw new Qwen3Error("io", `${path}: cannot read the model file (${ioReason(e)})`);
  }
  try {
    // The path may have been swapped since it was looked at: judge the file actually open.
    const info = await file.stat();
    if (!info.isFile) {
      throw new Qwen3Error(
        "io",
        `${path}: cannot read the model file: it is ${fileKind(info)}, not a regular file`,
      );
    }
    return { file, size: info.size };
  } catch (e) {
    file.close();
    if (e instanceof Qwen3Error) throw e;
    throw new Qwen3Error("io", `${path}: cannot read the model file (${ioReason(e)})`);
  }
}

/** Reads from the file's position until `bytes` is full or the file ends; returns the count. */
async function readInto(file: Deno.FsFile, bytes: Uint8Array): Promise<number> {
  let filled = 0;
  while (filled < bytes.length) {
    const n = await file.read(bytes.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return filled;
}

/**
 * Reads a whole model file into one buffer of its size: Deno.readFile grows a buffer and
 * copies it, which doubled the peak memory (1.24 GB for a 633 MB file) and took 8x as long.
 * A file that shrank meanwhile is judged by what was read: the size checks reject it.
 */
async function readWhole(path: string): Promise<Uint8Array> {
  const { file, size } = await openModelFile(path);
  using _ = file;
  try {
    const bytes = new Uint8Array(size);
    return bytes.subarray(0, await readInto(file, bytes));
  } catch (e) {
    throw new Qwen3Error("io", `${path}: cannot read the model file (${ioReason(e)})`);
  }
}

/**
 * Tells a GGUF file by its first four bytes.
 *
 * @param bytes The file's first bytes (the whole file will do).
 * @returns True when they start with the GGUF magic "GGUF".
 */
export function isGguf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 &&
    new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) === GGUF_MAGIC;
}

/**
 * A model from its bytes: a GGUF file (by its magic) or a qwen3.c / qwen3-rs checkpoint.
 *
 * @param bytes The whole file.
 * @param path The file's name, for messages.
 * @returns Its configuration and weights (views into `bytes` where possible).
 * @throws {Qwen3Error} `format` or `unsupported` as `parseHeader` (checkpoint.ts),
 * `readGgufHeader` (gguf.ts), `ggufConfig` and `ggufWeights` (gguf_model.ts) say.
 */
export function modelFromBytes(bytes: Uint8Array, path: string): LoadedModel {
  if (isGguf(bytes)) {
    const gguf = readGgufHeader(bytes, bytes.length, path);
    const config = ggufConfig(gguf, path);
    const weights = ggufWeights(bytes, gguf, path, config);
    return { path, config, weights, bytes, gguf };
  }
  const config = parseHeader(bytes.subarray(0, HEADER_BYTES), bytes.length, path);
  return { path, config, weights: checkpointTensors(bytes, config), bytes };
}

/**
 * Reads any supported model file: GGUF (`qwen3` architecture; F32, F16, BF16, Q8_0, Q4_0
 * weights) or a qwen3.c / qwen3-rs checkpoint.
 *
 * @param path The model file.
 * @returns Its configuration and weights.
 * @throws {Qwen3Error} `io` when the path is missing, unreadable or not a regular file;
 * `format` or `unsupported` as {@linkcode modelFromBytes} says.
 */
export async function readModel(path: string): Promise<LoadedModel> {
  return modelFromBytes(await readWhole(path), path);
}

/**
 * Reads a qwen3.c or qwen3-rs checkpoint into memory and validates it.
 *
 * @param path The `model.bin` file.
 * @returns Its configuration, bytes and tensors (views of the bytes).
 * @throws {Qwen3Error} `io` naming the path when it is missing, unreadable or not a regular
 * file; `format` or `unsupported` for its header or size, as `parseHeader` says.
 */
export async function readCheckpoint(path: string): Promise<Checkpoint> {
  const bytes = await readWhole(path);
  const config = parseHeader(bytes.subarray(0, HEADER_BYTES), bytes.length, path);
  return { path, config, bytes, tensors: checkpointTensors(bytes, config) };
}

/**
 * The GGUF header (metadata and tensor table) of a file, reading only as much of it as the
 * header needs: 8 MiB first, doubling while the header runs past what was read. For the
 * tokenizer lists of a model that the C engine maps itself (a real Qwen3's lists are about
 * 6 MB; its weights are not read).
 *
 * @param path The model file.
 * @returns The parsed header, or undefined when the file is not a GGUF.
 * @throws {Qwen3Error} `io` as {@linkcode openModelFile} says; `format` or `unsupported` for
 * a damaged header, as `readGgufHeader` says.
 */
export async function readGgufMetadata(path: string): Promise<GgufFile | undefined> {
  const { file, size } = await openModelFile(path);
  using _ = file;
  let want = Math.min(size, 8 << 20);
  for (;;) {
    const bytes = new Uint8Array(want);
    await file.seek(0, Deno.SeekMode.Start);
    const filled = await readInto(file, bytes);
    if (!isGguf(bytes.subarray(0, filled))) return undefined;
    try {
      return readGgufHeader(bytes.subarray(0, filled), size, path);
    } catch (e) {
      // Truncated inside what was read, but the file goes on: read more of it.
      const short = e instanceof Qwen3Error && /truncated/.test(e.message) && filled < size;
      if (!short) throw e;
      want = Math.min(size, want * 2);
    }
  }
}
