/**
 * Converts a qwen3.c checkpoint (`model.bin`) into a llama.cpp GGUF file (Q8_0 weights, F32
 * norms) with the Qwen3 metadata and the tokenizer from a Hugging Face `tokenizer.json`, so
 * llama.cpp can run exactly the model our engines run (the benchmark peer and the
 * cross-checks use it). Each Q8 group is dequantised and requantised into 32-value Q8_0
 * blocks, row by row, so memory stays near one row of the largest tensor. The keys and
 * tensor names come from gguf_qwen3.ts, the streaming writer from gguf.ts.
 * @module
 */

import { escapeForMessage, Qwen3Error } from "../errors.ts";
import { GgmlType, type GgufTensorSource, quantizeQ8_0, writeGgufFile } from "./gguf.ts";
import {
  ggufDims,
  LLAMA_FILE_TYPE,
  qwen3GgufMetadata,
  qwen3GgufTensors,
  type TokenizerJson,
} from "./gguf_qwen3.ts";
import { type Checkpoint, slotTensor } from "./checkpoint.ts";
import type { Q8Tensor } from "./weights.ts";
import { readSideText, TOKENIZER_JSON_LIMIT } from "./side_file.ts";

/** Dequantises one row of a Q8 tensor into `out`. */
function dequantizeRow(t: Q8Tensor, row: number, out: Float32Array) {
  const groups = t.cols / t.groupSize;
  for (let g = 0; g < groups; g++) {
    const scale = t.s[row * groups + g];
    const base = row * t.cols + g * t.groupSize;
    for (let i = 0; i < t.groupSize; i++) {
      out[g * t.groupSize + i] = t.q[base + i] * scale;
    }
  }
}

/** Options of {@linkcode checkpointToGguf}. */
export interface GgufConvertOptions {
  /** Path of the Hugging Face tokenizer.json whose vocabulary goes into the metadata. */
  tokenizerJson: string;
  /**
   * Model name stored as `general.name`.
   * @default {"qwen3"}
   */
  name?: string;
  /** Called with (bytes written, total bytes). */
  onProgress?: (done: number, total: number) => void;
}

/** Requantises a Q8 tensor into Q8_0 rows, about 4 MB per piece. */
function* q8ToQ8_0(q8: Q8Tensor): Generator<Uint8Array> {
  const rowBytes = (q8.cols / 32) * 34;
  const rowsPerChunk = Math.max(1, Math.floor((4 << 20) / rowBytes));
  const row = new Float32Array(q8.cols);
  for (let r0 = 0; r0 < q8.rows; r0 += rowsPerChunk) {
    const n = Math.min(rowsPerChunk, q8.rows - r0);
    const chunk = new Uint8Array(n * rowBytes);
    for (let r = 0; r < n; r++) {
      dequantizeRow(q8, r0 + r, row);
      quantizeQ8_0(row, chunk.subarray(r * rowBytes, (r + 1) * rowBytes));
    }
    yield chunk;
  }
}

/** Reads a tokenizer.json and checks it has the BPE parts the metadata needs. */
async function readTokenizerJson(path: string): Promise<TokenizerJson> {
  const text = await readSideText(path, { limit: TOKENIZER_JSON_LIMIT, what: "tokenizer" });
  let json: TokenizerJson;
  try {
    json = JSON.parse(text) as TokenizerJson;
  } catch (e) {
    throw new Qwen3Error("format", `${path}: not JSON (${escapeForMessage((e as Error).message)})`);
  }
  const vocab = json?.model?.vocab;
  if (
    vocab === null || typeof vocab !== "object" || !Array.isArray(json.model.merges) ||
    !Array.isArray(json.added_tokens)
  ) {
    throw new Qwen3Error(
      "format",
      `${path}: not a BPE tokenizer.json (model.vocab, model.merges and added_tokens are needed)`,
    );
  }
  return json;
}

/**
 * Writes a checkpoint as a Q8_0 GGUF file (through a temporary name, renamed at the end, so
 * no half-written file is left behind on failure).
 *
 * @param ckpt The checkpoint, read by `readCheckpoint`.
 * @param outPath The GGUF file to write (replaced when it exists).
 * @param opts The tokenizer.json to take the vocabulary from, the name, progress.
 * @throws {Qwen3Error} `unsupported` when a width is not a multiple of 32 (Q8_0 blocks), or
 * for a Qwen3-MoE checkpoint (version 2; `qwen3 export --format gguf` writes its GGUF from the
 * Hugging Face folder).
 * @throws {Qwen3Error} `io` or `format` when the tokenizer.json cannot be read, is over its
 * size limit, is not JSON or not a BPE tokenizer, or lacks `<|im_end|>` / `<|endoftext|>`.
 */
export async function checkpointToGguf(
  ckpt: Checkpoint,
  outPath: string,
  opts: GgufConvertOptions,
): Promise<void> {
  const c = ckpt.config;
  if (c.moe) {
    throw new Qwen3Error(
      "unsupported",
      `${ckpt.path}: a Qwen3-MoE checkpoint does not convert to GGUF here; export the Hugging ` +
        "Face folder with --format gguf",
    );
  }
  if (c.dim % 32 !== 0 || c.hiddenDim % 32 !== 0 || (c.nHeads * c.headDim) % 32 !== 0) {
    throw new Qwen3Error(
      "unsupported",
      `Q8_0 needs widths that are multiples of 32 (dim ${c.dim})`,
    );
  }
  const json = await readTokenizerJson(opts.tokenizerJson);
  const metadata = qwen3GgufMetadata(c, json, {
    name: opts.name,
    fileType: LLAMA_FILE_TYPE.MOSTLY_Q8_0,
  });
  const sources: GgufTensorSource[] = qwen3GgufTensors(c).map(({ name, slot }) => {
    if (slot.kind === "f32") {
      const v = slotTensor(ckpt.tensors, slot);
      return {
        spec: { name, dims: ggufDims(slot), type: GgmlType.F32 },
        data: () => [new Uint8Array(v.buffer, v.byteOffset, v.byteLength).slice()],
      };
    }
    const q8 = slotTensor(ckpt.tensors, slot);
    return { spec: { name, dims: ggufDims(slot), type: GgmlType.Q8_0 }, data: () => q8ToQ8_0(q8) };
  });
  await writeGgufFile(outPath, metadata, sources, { onProgress: opts.onProgress });
}
