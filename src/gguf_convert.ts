/**
 * Converts a qwen3.c checkpoint (`model.bin`) into a llama.cpp GGUF file (Q8_0 weights, F32
 * norms) with the Qwen3 metadata and the tokenizer from a Hugging Face `tokenizer.json`, so
 * llama.cpp can run exactly the model our engines run (the benchmark peer and the
 * cross-checks use it). Each Q8 group is dequantised and requantised into 32-value Q8_0
 * blocks, row by row, so memory stays near one row of the largest tensor.
 * @module
 */

import { Qwen3Error } from "./errors.ts";
import {
  encodeGgufHeader,
  GgmlType,
  type GgufTensorSpec,
  type GgufValue,
  quantizeQ8_0,
} from "./gguf.ts";
import type { Checkpoint, Q8Tensor } from "./model_file.ts";

/** The Jinja chat template stored in converted files: Qwen3's turn format, no tools. */
const QWEN3_CHAT_TEMPLATE =
  "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";

interface TokenizerJson {
  model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  added_tokens: { id: number; content: string; special: boolean }[];
}

/** GGUF token types (llama.cpp's llama_token_type). */
const TOKEN_NORMAL = 1, TOKEN_CONTROL = 3, TOKEN_USER_DEFINED = 4, TOKEN_UNUSED = 5;

/** The `tokenizer.ggml.*` metadata for a vocabulary of `vocabSize` embedding rows. */
export function tokenizerMetadata(
  json: TokenizerJson,
  vocabSize: number,
): [string, GgufValue][] {
  const tokens: string[] = new Array(vocabSize);
  const types = new Int32Array(vocabSize);
  for (const [text, id] of Object.entries(json.model.vocab)) {
    if (id < vocabSize) {
      tokens[id] = text;
      types[id] = TOKEN_NORMAL;
    }
  }
  for (const t of json.added_tokens) {
    if (t.id < vocabSize) {
      tokens[t.id] = t.content;
      types[t.id] = t.special ? TOKEN_CONTROL : TOKEN_USER_DEFINED;
    }
  }
  // Embedding rows beyond the tokenizer get placeholder names, as llama.cpp's converter does.
  for (let i = 0; i < vocabSize; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TOKEN_UNUSED;
    }
  }
  const merges = json.model.merges.map((m) => typeof m === "string" ? m : `${m[0]} ${m[1]}`);
  const id = (text: string) => {
    const t = json.added_tokens.find((a) => a.content === text);
    if (!t) throw new Qwen3Error("format", `tokenizer.json has no '${text}' token`);
    return t.id;
  };
  return [
    ["tokenizer.ggml.model", { type: "string", value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: "string", value: "qwen2" }],
    ["tokenizer.ggml.tokens", { type: "string[]", value: tokens }],
    ["tokenizer.ggml.token_type", { type: "i32[]", value: types }],
    ["tokenizer.ggml.merges", { type: "string[]", value: merges }],
    ["tokenizer.ggml.eos_token_id", { type: "u32", value: id("<|im_end|>") }],
    ["tokenizer.ggml.padding_token_id", { type: "u32", value: id("<|endoftext|>") }],
    ["tokenizer.ggml.bos_token_id", { type: "u32", value: id("<|endoftext|>") }],
    ["tokenizer.ggml.add_bos_token", { type: "bool", value: false }],
    ["tokenizer.chat_template", { type: "string", value: QWEN3_CHAT_TEMPLATE }],
  ];
}

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

/** Options of {@link checkpointToGguf}. */
export interface GgufConvertOptions {
  /** Path of the Hugging Face tokenizer.json whose vocabulary goes into the metadata. */
  tokenizerJson: string;
  /** Model name stored as general.name. */
  name?: string;
  /** Called with (bytes written, total bytes). */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Writes `ckpt` as a Q8_0 GGUF file at `outPath` (through a temporary name, renamed at
 * the end, so no half-written file is left behind on failure).
 */
export async function checkpointToGguf(
  ckpt: Checkpoint,
  outPath: string,
  opts: GgufConvertOptions,
): Promise<void> {
  const c = ckpt.config;
  if (c.dim % 32 !== 0 || c.hiddenDim % 32 !== 0 || (c.nHeads * c.headDim) % 32 !== 0) {
    throw new Qwen3Error(
      "unsupported",
      `Q8_0 needs widths that are multiples of 32 (dim ${c.dim})`,
    );
  }
  const json = JSON.parse(await Deno.readTextFile(opts.tokenizerJson)) as TokenizerJson;
  const metadata: [string, GgufValue][] = [
    ["general.architecture", { type: "string", value: "qwen3" }],
    ["general.name", { type: "string", value: opts.name ?? "qwen3" }],
    ["general.file_type", { type: "u32", value: 7 }], // LLAMA_FTYPE_MOSTLY_Q8_0
    ["qwen3.context_length", { type: "u32", value: c.seqLen }],
    ["qwen3.embedding_length", { type: "u32", value: c.dim }],
    ["qwen3.block_count", { type: "u32", value: c.nLayers }],
    ["qwen3.feed_forward_length", { type: "u32", value: c.hiddenDim }],
    ["qwen3.attention.head_count", { type: "u32", value: c.nHeads }],
    ["qwen3.attention.head_count_kv", { type: "u32", value: c.nKvHeads }],
    ["qwen3.attention.key_length", { type: "u32", value: c.headDim }],
    ["qwen3.attention.value_length", { type: "u32", value: c.headDim }],
    ["qwen3.rope.freq_base", { type: "f32", value: c.ropeTheta }],
    ["qwen3.attention.layer_norm_rms_epsilon", { type: "f32", value: c.rmsEps }],
    ...tokenizerMetadata(json, c.vocabSize),
  ];

  type Source = { spec: GgufTensorSpec; norm?: Float32Array; q8?: Q8Tensor };
  const sources: Source[] = [];
  const matrix = (name: string, t: Q8Tensor) =>
    sources.push({ spec: { name, dims: [t.cols, t.rows], type: GgmlType.Q8_0 }, q8: t });
  const norm = (name: string, v: Float32Array) =>
    sources.push({ spec: { name, dims: [v.length], type: GgmlType.F32 }, norm: v });
  const t = ckpt.tensors;
  matrix("token_embd.weight", t.embed);
  norm("output_norm.weight", t.finalNorm);
  if (!c.sharedClassifier) matrix("output.weight", t.classifier);
  t.layers.forEach((l, i) => {
    const p = `blk.${i}.`;
    norm(p + "attn_norm.weight", l.attnNorm);
    matrix(p + "attn_q.weight", l.wq);
    matrix(p + "attn_k.weight", l.wk);
    matrix(p + "attn_v.weight", l.wv);
    matrix(p + "attn_output.weight", l.wo);
    norm(p + "attn_q_norm.weight", l.qNorm);
    norm(p + "attn_k_norm.weight", l.kNorm);
    norm(p + "ffn_norm.weight", l.ffnNorm);
    matrix(p + "ffn_gate.weight", l.w1);
    matrix(p + "ffn_up.weight", l.w3);
    matrix(p + "ffn_down.weight", l.w2);
  });
  const { header, offsets, dataBytes } = encodeGgufHeader(metadata, sources.map((s) => s.spec));

  const tmp = `${outPath}.partial-${Deno.pid}`;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    const writeAll = async (b: Uint8Array) => {
      let off = 0;
      while (off < b.length) off += await file.write(b.subarray(off));
    };
    await writeAll(header);
    let written = 0;
    const total = dataBytes;
    for (let i = 0; i < sources.length; i++) {
      const s = sources[i];
      if (written < offsets[i]) {
        await writeAll(new Uint8Array(offsets[i] - written));
        written = offsets[i];
      }
      if (s.norm) {
        await writeAll(new Uint8Array(s.norm.buffer, s.norm.byteOffset, s.norm.byteLength).slice());
        written += s.norm.byteLength;
      } else if (s.q8) {
        const q8 = s.q8;
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
          await writeAll(chunk);
          written += chunk.length;
          opts.onProgress?.(written, total);
        }
      }
    }
    if (written < dataBytes) await writeAll(new Uint8Array(dataBytes - written));
    file.close();
    await Deno.rename(tmp, outPath);
  } catch (e) {
    try {
      file.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
