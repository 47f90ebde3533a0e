/**
 * The C API of `libqwen3_inference` (csrc/include/qwen3_inference.h) as one typed
 * `Deno.dlopen` symbol table, plus the byte layouts of the structs passed by pointer.
 *
 * Pointers to C structs travel as `buffer` (a Uint8Array we fill or read); returned
 * pointers as `pointer`. Strings passed in are NUL-terminated UTF-8 buffers
 * ({@link cString}).
 * @module
 */

import type { ResolvedSampler } from "../src/text/sampler.ts";

/**
 * Every function of the C API, bound synchronously. The C signature is written beside
 * each parameter.
 */
export const SYMBOLS = {
  // Qwen3Model* qwen3_model_load(const char* checkpoint_path, uint32_t ctx_length)
  qwen3_model_load: {
    parameters: [
      "buffer", // const char* checkpoint_path
      "u32", // uint32_t ctx_length
    ],
    result: "pointer", // Qwen3Model*
  },
  // void qwen3_model_free(Qwen3Model* model)
  qwen3_model_free: {
    parameters: [
      "pointer", // Qwen3Model* model
    ],
    result: "void",
  },
  // int qwen3_inference_chat(Qwen3Model* model, const Qwen3Config* config)
  qwen3_inference_chat: {
    parameters: [
      "pointer", // Qwen3Model* model
      "buffer", // const Qwen3Config* config
    ],
    result: "i32", // int
  },
  // int qwen3_inference_generate(Qwen3Model* model, const Qwen3Config* config)
  qwen3_inference_generate: {
    parameters: [
      "pointer", // Qwen3Model* model
      "buffer", // const Qwen3Config* config
    ],
    result: "i32", // int
  },
  // const Qwen3ModelConfig* qwen3_model_get_config(const Qwen3Model* model)
  qwen3_model_get_config: {
    parameters: [
      "pointer", // const Qwen3Model* model
    ],
    result: "pointer", // const Qwen3ModelConfig*
  },
  // const char* qwen3_get_last_error(void)
  qwen3_get_last_error: {
    parameters: [],
    result: "pointer", // const char*
  },
  // int32_t qwen3_model_get_info(const Qwen3Model* model, Qwen3ModelInfo* out)
  qwen3_model_get_info: {
    parameters: [
      "pointer", // const Qwen3Model* model
      "buffer", // Qwen3ModelInfo* out
    ],
    result: "i32", // int32_t
  },
  // int32_t qwen3_model_get_moe(const Qwen3Model* model, uint32_t out[3], uint8_t* sparse)
  qwen3_model_get_moe: {
    parameters: [
      "pointer", // const Qwen3Model* model
      "buffer", // uint32_t out[3]
      "buffer", // uint8_t* sparse (n_layers)
    ],
    result: "i32", // int32_t
  },
  // int32_t qwen3_model_get_moe_norm(const Qwen3Model* model, uint32_t* norm_weights)
  qwen3_model_get_moe_norm: {
    parameters: [
      "pointer", // const Qwen3Model* model
      "buffer", // uint32_t* norm_weights
    ],
    result: "i32", // int32_t
  },
  // const char* qwen3_model_get_template(const Qwen3Model* model, uint32_t kind)
  qwen3_model_get_template: {
    parameters: [
      "pointer", // const Qwen3Model* model
      "u32", // uint32_t kind
    ],
    result: "pointer", // const char*
  },
  // int32_t qwen3_model_set_threads(Qwen3Model* model, uint32_t n_threads)
  qwen3_model_set_threads: {
    parameters: [
      "pointer", // Qwen3Model* model
      "u32", // uint32_t n_threads
    ],
    result: "i32", // int32_t
  },
  // uint32_t qwen3_model_get_threads(const Qwen3Model* model)
  qwen3_model_get_threads: {
    parameters: [
      "pointer", // const Qwen3Model* model
    ],
    result: "u32", // uint32_t
  },
  // int32_t qwen3_tokenize(const Qwen3Model* model, const char* text, uint32_t text_len,
  //                        uint32_t flags, int32_t* out, uint32_t capacity)
  qwen3_tokenize: {
    parameters: [
      "pointer", // const Qwen3Model* model
      "buffer", // const char* text
      "u32", // uint32_t text_len
      "u32", // uint32_t flags
      "buffer", // int32_t* out
      "u32", // uint32_t capacity
    ],
    result: "i32", // int32_t
  },
  // const char* qwen3_token_bytes(const Qwen3Model* model, int32_t token, uint32_t* out_len)
  qwen3_token_bytes: {
    parameters: [
      "pointer", // const Qwen3Model* model
      "i32", // int32_t token
      "buffer", // uint32_t* out_len
    ],
    result: "pointer", // const char*
  },
  // Qwen3Context* qwen3_context_new(Qwen3Model* model, uint32_t ctx_length)
  qwen3_context_new: {
    parameters: [
      "pointer", // Qwen3Model* model
      "u32", // uint32_t ctx_length
    ],
    result: "pointer", // Qwen3Context*
  },
  // Qwen3Context* qwen3_context_new_ex(Qwen3Model* model, uint32_t ctx_length,
  //                                    const Qwen3ContextOptions* options)
  qwen3_context_new_ex: {
    parameters: [
      "pointer", // Qwen3Model* model
      "u32", // uint32_t ctx_length
      "buffer", // const Qwen3ContextOptions* options (u32 kv_type, u32 reserved[3])
    ],
    result: "pointer", // Qwen3Context*
  },
  // void qwen3_context_free(Qwen3Context* ctx)
  qwen3_context_free: {
    parameters: [
      "pointer", // Qwen3Context* ctx
    ],
    result: "void",
  },
  // uint32_t qwen3_context_length(const Qwen3Context* ctx)
  qwen3_context_length: {
    parameters: [
      "pointer", // const Qwen3Context* ctx
    ],
    result: "u32", // uint32_t
  },
  // uint32_t qwen3_context_position(const Qwen3Context* ctx)
  qwen3_context_position: {
    parameters: [
      "pointer", // const Qwen3Context* ctx
    ],
    result: "u32", // uint32_t
  },
  // int32_t qwen3_context_rewind(Qwen3Context* ctx, uint32_t position)
  qwen3_context_rewind: {
    parameters: [
      "pointer", // Qwen3Context* ctx
      "u32", // uint32_t position
    ],
    result: "i32", // int32_t
  },
  // int32_t qwen3_context_prefill(Qwen3Context* ctx, const int32_t* tokens, uint32_t n)
  qwen3_context_prefill: {
    parameters: [
      "pointer", // Qwen3Context* ctx
      "buffer", // const int32_t* tokens
      "u32", // uint32_t n
    ],
    result: "i32", // int32_t
  },
  // int32_t qwen3_context_embed(Qwen3Context* ctx, const int32_t* tokens, uint32_t n,
  //                             float* out, uint32_t out_len)
  qwen3_context_embed: {
    parameters: [
      "pointer", // Qwen3Context* ctx
      "buffer", // const int32_t* tokens
      "u32", // uint32_t n
      "buffer", // float* out
      "u32", // uint32_t out_len
    ],
    result: "i32", // int32_t
  },
  // int32_t qwen3_context_verify(Qwen3Context* ctx, const int32_t* tokens, uint32_t n,
  //                              float* logits_out)
  qwen3_context_verify: {
    parameters: [
      "pointer", // Qwen3Context* ctx
      "buffer", // const int32_t* tokens
      "u32", // uint32_t n
      "buffer", // float* logits_out (n * vocab_size floats)
    ],
    result: "i32", // int32_t
  },
  // const float* qwen3_context_logits(const Qwen3Context* ctx)
  qwen3_context_logits: {
    parameters: [
      "pointer", // const Qwen3Context* ctx
    ],
    result: "pointer", // const float*
  },
  // int32_t qwen3_context_set_sampler(Qwen3Context* ctx, const Qwen3SamplerConfig* config)
  qwen3_context_set_sampler: {
    parameters: [
      "pointer", // Qwen3Context* ctx
      "buffer", // const Qwen3SamplerConfig* config
    ],
    result: "i32", // int32_t
  },
  // int32_t qwen3_context_sample(Qwen3Context* ctx)
  qwen3_context_sample: {
    parameters: [
      "pointer", // Qwen3Context* ctx
    ],
    result: "i32", // int32_t
  },
  qwen3_context_pick: {
    parameters: [
      "pointer", // Qwen3Context* ctx
      "buffer", // const float* logits (vocab_size)
    ],
    result: "i32", // int32_t
  },
  qwen3_context_record: {
    parameters: [
      "pointer", // Qwen3Context* ctx
      "i32", // int32_t token
    ],
    result: "i32", // int32_t
  },
  // int32_t qwen3_context_decode(Qwen3Context* ctx, int32_t token)
  qwen3_context_decode: {
    parameters: [
      "pointer", // Qwen3Context* ctx
      "i32", // int32_t token
    ],
    result: "i32", // int32_t
  },
  // int32_t qwen3_context_decode_batch(Qwen3Context* const* contexts, const int32_t* tokens,
  //                                    uint32_t n)
  qwen3_context_decode_batch: {
    parameters: [
      "buffer", // Qwen3Context* const* contexts (n pointers)
      "buffer", // const int32_t* tokens (n ids)
      "u32", // uint32_t n
    ],
    result: "i32", // int32_t
  },
  // int qwen3_inference_chat_ex(Qwen3Model* model, const Qwen3Config* config,
  //                             const Qwen3SamplerConfig* sampler, uint32_t max_tokens)
  qwen3_inference_chat_ex: {
    parameters: [
      "pointer", // Qwen3Model* model
      "buffer", // const Qwen3Config* config
      "buffer", // const Qwen3SamplerConfig* sampler (NULL = from config)
      "u32", // uint32_t max_tokens
    ],
    result: "i32", // int
  },
  // int qwen3_inference_generate_ex(Qwen3Model* model, const Qwen3Config* config,
  //                                 const Qwen3SamplerConfig* sampler, uint32_t max_tokens)
  qwen3_inference_generate_ex: {
    parameters: [
      "pointer", // Qwen3Model* model
      "buffer", // const Qwen3Config* config
      "buffer", // const Qwen3SamplerConfig* sampler (NULL = from config)
      "u32", // uint32_t max_tokens
    ],
    result: "i32", // int
  },
  // const char* qwen3_cpu_features(void)
  qwen3_cpu_features: {
    parameters: [],
    result: "pointer", // const char*
  },
  // const char* qwen3_kernel_name(void)
  qwen3_kernel_name: {
    parameters: [],
    result: "pointer", // const char*
  },
  // int32_t qwen3_kernel_select(const char* name)
  qwen3_kernel_select: {
    parameters: [
      "buffer", // const char* name
    ],
    result: "i32", // int32_t
  },
  // const char* qwen3_version(void)
  qwen3_version: {
    parameters: [],
    result: "pointer", // const char*
  },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * The long-running calls bound a second time with `nonblocking: true`: they run on a
 * worker thread and return a Promise, so the event loop (other chats, timers, abort
 * signals) stays live during a forward pass. Same C functions and parameters as in
 * {@link SYMBOLS}. The C last-error message is thread-local, so a failure of one of
 * these is not readable from the JS thread: callers validate arguments first.
 */
export const NONBLOCKING_SYMBOLS = {
  qwen3_context_prefill_nonblocking: {
    ...SYMBOLS.qwen3_context_prefill,
    name: "qwen3_context_prefill",
    nonblocking: true,
  },
  qwen3_context_embed_nonblocking: {
    ...SYMBOLS.qwen3_context_embed,
    name: "qwen3_context_embed",
    nonblocking: true,
  },
  qwen3_context_verify_nonblocking: {
    ...SYMBOLS.qwen3_context_verify,
    name: "qwen3_context_verify",
    nonblocking: true,
  },
  qwen3_context_decode_nonblocking: {
    ...SYMBOLS.qwen3_context_decode,
    name: "qwen3_context_decode",
    nonblocking: true,
  },
  qwen3_context_decode_batch_nonblocking: {
    ...SYMBOLS.qwen3_context_decode_batch,
    name: "qwen3_context_decode_batch",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The table `Deno.dlopen` is called with. */
export const ALL_SYMBOLS = { ...SYMBOLS, ...NONBLOCKING_SYMBOLS } as const;

/** The opened library, typed by {@link ALL_SYMBOLS}. */
export type Qwen3Library = Deno.DynamicLibrary<typeof ALL_SYMBOLS>;

/** Status codes of qwen3_inference.h (`Qwen3Status`), from the one table in src/errors.ts. */
export { STATUS } from "../src/errors.ts";

/** `QWEN3_TOKENIZE_SPECIAL`: literal added-token text becomes its control token. */
export const TOKENIZE_SPECIAL = 1;

/*
 * Struct layouts. x86_64 and aarch64 SysV and Win64 agree for these structs: every field
 * is naturally aligned (4-byte scalars, 8-byte pointers and uint64_t), `bool` is one byte,
 * and the struct size is rounded up to its largest alignment. Derivations:
 *
 * Qwen3Config (size 64, align 8)
 *   0  const char* checkpoint_path   8
 *   8  float temperature             4
 *   12 float topp                    4
 *   16 uint32_t ctx_length           4
 *   20 (padding: the next pointer aligns to 8)
 *   24 const char* mode              8
 *   32 const char* prompt            8
 *   40 const char* system_prompt     8
 *   48 bool enable_thinking          1
 *   49 (padding to 56 for uint64_t)
 *   56 uint64_t seed                 8
 *
 * Qwen3ModelConfig (size 32, align 4): eight 4-byte fields in order
 *   0 vocab_size, 4 dim, 8 hidden_dim, 12 n_layers, 16 n_heads, 20 n_kv_heads,
 *   24 max_seq_len, 28 float rope_theta
 *
 * Qwen3ModelInfo (size 64, align 8): fourteen 4-byte fields, then uint64_t at 56
 *   (14 * 4 = 56 is already 8-aligned: no padding)
 *   0 format, 4 head_dim, 8 group_size, 12 file_seq_len, 16 shared_classifier, 20 n_tokens,
 *   24 i32 bos_id, 28 i32 eos_id, 32 i32 im_start_id, 36 i32 im_end_id, 40 i32 think_id,
 *   44 i32 end_think_id, 48 float rms_eps, 52 exact_tokenizer, 56 uint64_t file_size
 *
 * Qwen3SamplerConfig (size 32, align 8)
 *   0 float temperature, 4 float top_p, 8 uint32_t top_k, 12 float min_p,
 *   16 float presence_penalty, 20 float frequency_penalty (padding before it existed),
 *   24 uint64_t seed
 */

/** Byte offsets and size of `Qwen3Config`. */
export const CONFIG_LAYOUT = {
  size: 64,
  checkpointPath: 0,
  temperature: 8,
  topp: 12,
  ctxLength: 16,
  mode: 24,
  prompt: 32,
  systemPrompt: 40,
  enableThinking: 48,
  seed: 56,
} as const;

/** Byte offsets and size of `Qwen3ModelConfig`. */
export const MODEL_CONFIG_LAYOUT = {
  size: 32,
  vocabSize: 0,
  dim: 4,
  hiddenDim: 8,
  nLayers: 12,
  nHeads: 16,
  nKvHeads: 20,
  maxSeqLen: 24,
  ropeTheta: 28,
} as const;

/** Byte offsets and size of `Qwen3ModelInfo`. */
export const MODEL_INFO_LAYOUT = {
  size: 64,
  format: 0,
  headDim: 4,
  groupSize: 8,
  fileSeqLen: 12,
  sharedClassifier: 16,
  nTokens: 20,
  bosId: 24,
  eosId: 28,
  imStartId: 32,
  imEndId: 36,
  thinkId: 40,
  endThinkId: 44,
  rmsEps: 48,
  exactTokenizer: 52,
  fileSize: 56,
} as const;

/** Byte offsets and size of `Qwen3SamplerConfig`. */
export const SAMPLER_CONFIG_LAYOUT = {
  size: 32,
  temperature: 0,
  topP: 4,
  topK: 8,
  minP: 12,
  presencePenalty: 16,
  frequencyPenalty: 20,
  seed: 24,
} as const;

/** The C `Qwen3ModelConfig`, read into JS numbers. */
export interface NativeModelConfig {
  /** Embedding rows. */
  vocabSize: number;
  /** Residual stream width. */
  dim: number;
  /** Feed-forward width. */
  hiddenDim: number;
  /** Transformer blocks. */
  nLayers: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads. */
  nKvHeads: number;
  /** Context length in effect for this load. */
  maxSeqLen: number;
  /** RoPE base. */
  ropeTheta: number;
}

/** The C `Qwen3ModelInfo`, read into JS numbers. */
export interface NativeModelInfo {
  /** `Qwen3FileFormat`: 1 qwen3.c, 2 qwen3-rs, 3 GGUF. */
  format: number;
  /** Width of one attention head. */
  headDim: number;
  /** Quantisation group (0 when unquantised). */
  groupSize: number;
  /** Context length stored in the file. */
  fileSeqLen: number;
  /** True when the classifier is the embedding table. */
  sharedClassifier: boolean;
  /** Tokenizer entries. */
  nTokens: number;
  /** -1 when none. */
  bosId: number;
  /** `<|endoftext|>`. */
  eosId: number;
  /** `<|im_start|>`, -1 when absent. */
  imStartId: number;
  /** `<|im_end|>`, -1 when absent. */
  imEndId: number;
  /** `<think>`, -1 when absent. */
  thinkId: number;
  /** `</think>`, -1 when absent. */
  endThinkId: number;
  /** RMSNorm epsilon. */
  rmsEps: number;
  /** True when the merges came from tokenizer.json or GGUF. */
  exactTokenizer: boolean;
  /** File size in bytes. */
  fileSize: number;
}

/** Reads a `Qwen3ModelConfig` from the memory `ptr` points to. */
export function readModelConfig(ptr: Deno.PointerObject): NativeModelConfig {
  const v = new Deno.UnsafePointerView(ptr);
  const L = MODEL_CONFIG_LAYOUT;
  return {
    vocabSize: v.getUint32(L.vocabSize),
    dim: v.getUint32(L.dim),
    hiddenDim: v.getUint32(L.hiddenDim),
    nLayers: v.getUint32(L.nLayers),
    nHeads: v.getUint32(L.nHeads),
    nKvHeads: v.getUint32(L.nKvHeads),
    maxSeqLen: v.getUint32(L.maxSeqLen),
    ropeTheta: v.getFloat32(L.ropeTheta),
  };
}

/** Decodes a `Qwen3ModelInfo` that qwen3_model_get_info wrote into `buf`. */
export function readModelInfo(buf: Uint8Array): NativeModelInfo {
  const d = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const L = MODEL_INFO_LAYOUT;
  return {
    format: d.getUint32(L.format, true),
    headDim: d.getUint32(L.headDim, true),
    groupSize: d.getUint32(L.groupSize, true),
    fileSeqLen: d.getUint32(L.fileSeqLen, true),
    sharedClassifier: d.getUint32(L.sharedClassifier, true) !== 0,
    nTokens: d.getUint32(L.nTokens, true),
    bosId: d.getInt32(L.bosId, true),
    eosId: d.getInt32(L.eosId, true),
    imStartId: d.getInt32(L.imStartId, true),
    imEndId: d.getInt32(L.imEndId, true),
    thinkId: d.getInt32(L.thinkId, true),
    endThinkId: d.getInt32(L.endThinkId, true),
    rmsEps: d.getFloat32(L.rmsEps, true),
    exactTokenizer: d.getUint32(L.exactTokenizer, true) !== 0,
    fileSize: Number(d.getBigUint64(L.fileSize, true)),
  };
}

/** Encodes a `Qwen3SamplerConfig` into a fresh buffer for qwen3_context_set_sampler. */
export function writeSamplerConfig(c: ResolvedSampler): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(SAMPLER_CONFIG_LAYOUT.size);
  const d = new DataView(buf.buffer);
  const L = SAMPLER_CONFIG_LAYOUT;
  d.setFloat32(L.temperature, c.temperature, true);
  d.setFloat32(L.topP, c.topP, true);
  d.setUint32(L.topK, c.topK, true);
  d.setFloat32(L.minP, c.minP, true);
  d.setFloat32(L.presencePenalty, c.presencePenalty, true);
  d.setFloat32(L.frequencyPenalty, c.frequencyPenalty, true);
  d.setBigUint64(L.seed, c.seed, true);
  return buf;
}

/** Settings of the qwen3.c-compatible loops (`Qwen3Config`); strings are NUL-terminated buffers. */
export interface NativeLoopConfig {
  /** Informational path of the checkpoint. */
  checkpointPath?: Uint8Array<ArrayBuffer>;
  /** 0 = greedy. */
  temperature: number;
  /** Nucleus threshold. */
  topp: number;
  /** 0 = the model's context length. */
  ctxLength: number;
  /** "chat" or "generate". */
  mode?: Uint8Array<ArrayBuffer>;
  /** The prompt (generate) or first user turn (chat). */
  prompt?: Uint8Array<ArrayBuffer>;
  /** System prompt for the first chat turn. */
  systemPrompt?: Uint8Array<ArrayBuffer>;
  /** Use the thinking template. */
  enableThinking: boolean;
  /** RNG seed; 0 = from the clock. */
  seed: bigint;
}

/**
 * Encodes a `Qwen3Config`. The string buffers are referenced by address: keep `c` alive
 * (and its buffers unchanged) for as long as the C call that receives the result runs.
 */
export function writeLoopConfig(c: NativeLoopConfig): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(CONFIG_LAYOUT.size);
  const d = new DataView(buf.buffer);
  const L = CONFIG_LAYOUT;
  const address = (s?: Uint8Array<ArrayBuffer>) =>
    s ? BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s))) : 0n;
  d.setBigUint64(L.checkpointPath, address(c.checkpointPath), true);
  d.setFloat32(L.temperature, c.temperature, true);
  d.setFloat32(L.topp, c.topp, true);
  d.setUint32(L.ctxLength, c.ctxLength, true);
  d.setBigUint64(L.mode, address(c.mode), true);
  d.setBigUint64(L.prompt, address(c.prompt), true);
  d.setBigUint64(L.systemPrompt, address(c.systemPrompt), true);
  d.setUint8(L.enableThinking, c.enableThinking ? 1 : 0);
  d.setBigUint64(L.seed, c.seed, true);
  return buf;
}

const encoder = new TextEncoder();

/** A NUL-terminated UTF-8 copy of `s`, for `const char*` parameters. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Reads a NUL-terminated C string; "" for a NULL pointer. */
export function readCString(ptr: Deno.PointerValue): string {
  return ptr === null ? "" : Deno.UnsafePointerView.getCString(ptr);
}
