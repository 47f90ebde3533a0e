/**
 * The contracts shared by both engines ({@linkcode CEngine}, {@linkcode TsEngine}) and
 * everything that drives them: a model's configuration, an engine, a session over it, and
 * the sampler settings.
 * @module
 */

import { Qwen3Error } from "./errors.ts";

/** Which file layout a model came from. */
export type ModelFormat = "qwen3.c" | "qwen3-rs" | "gguf";

/** A model's hyper-parameters (the header of its file). */
export interface ModelConfig {
  /** File layout the model was read from. */
  format: ModelFormat;
  /** Residual stream width. */
  dim: number;
  /** Feed-forward width. */
  hiddenDim: number;
  /** Number of transformer blocks. */
  nLayers: number;
  /** Query heads. */
  nHeads: number;
  /** Key/value heads (grouped-query attention). */
  nKvHeads: number;
  /** Width of one attention head (not dim / nHeads for Qwen3). */
  headDim: number;
  /** Embedding rows (151936 for real Qwen3). */
  vocabSize: number;
  /** Context length stored in the file. */
  seqLen: number;
  /** Quantisation group size (0 when unquantised). */
  groupSize: number;
  /** True when the classifier reuses the embedding table. */
  sharedClassifier: boolean;
  /** RoPE base (1e6 for Qwen3). */
  ropeTheta: number;
  /** RMSNorm epsilon (1e-6 for Qwen3). */
  rmsEps: number;
  /**
   * The mixture of experts of a Qwen3-MoE model (GGUF arch `qwen3moe`, or a version 2
   * `model.bin`); absent when dense.
   */
  moe?: MoeConfig;
}

/**
 * The mixture-of-experts shape of a Qwen3-MoE model (docs/numerics.md#mixture-of-experts):
 * a sparse block replaces the SwiGLU feed-forward with `nExperts` SwiGLU experts of width
 * `expertHiddenDim`, of which a router picks `nExpertsUsed` per token.
 */
export interface MoeConfig {
  /** Experts per sparse block. */
  nExperts: number;
  /** Experts each token uses (top-k). */
  nExpertsUsed: number;
  /** Feed-forward width of one expert. */
  expertHiddenDim: number;
  /**
   * True when the chosen experts' weights are renormalised to sum 1 (Hugging Face
   * `norm_topk_prob`, GGUF `qwen3moe.expert_weights_norm`; Qwen3-MoE's released models all
   * say true); false when each weight is its softmax probability over all the experts.
   */
  normTopkProb: boolean;
  /** Per block: true when its feed-forward is the mixture, false when dense (`hiddenDim`). */
  sparse: boolean[];
}

/** Which engine runs the transformer. */
export type EngineKind = "c" | "ts";

/**
 * One sequence's state over a loaded engine: a KV cache and a position. Several sessions
 * may share one engine. Dispose a session (`using`) to free its KV cache.
 *
 * @example Logits of a prompt, then of one more token
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * using model = await Qwen3.load(await demoModelPath());
 * using session = model.engine.createSession(64);
 * let logits = await session.forward(model.tokenizer.encode("The sea"));
 * console.log(session.position, logits.length); // 2 4122
 * logits = await session.forward([logits.indexOf(Math.max(...logits))]);
 * session.rewind(2); // forget the last token
 * console.log(session.position); // 2
 * ```
 */
export interface EngineSession extends Disposable {
  /** Positions this session can hold. */
  readonly contextLength: number;
  /** Tokens already in the KV cache (the position of the next token). */
  readonly position: number;
  /**
   * Runs the model over `tokens` at positions `position ..` and returns the logits of the
   * last one. The array is only valid until the next call on this session.
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns The last token's logits (`vocabSize` floats).
   * @throws {Qwen3Error} `context_full` (changing nothing) when the tokens do not fit in
   * the free positions; `invalid_argument` for no tokens or an id outside the vocabulary;
   * `disposed` after the session was disposed; on the C engine also `io` when the
   * memory-mapped model file was truncated or modified since it was loaded, and
   * `out_of_memory` when KV-cache memory cannot be committed.
   */
  forward(tokens: ArrayLike<number>): Promise<Float32Array>;
  /**
   * Runs the model over `tokens` as {@linkcode EngineSession.forward} does (same positions,
   * KV cache and errors) but returns the last token's final hidden state,
   * `rmsnorm(x) * final_norm` (the classifier's input), and never runs the classifier:
   * last-token pooling for embedding models ({@linkcode Qwen3.embed} normalises it).
   * Afterwards the session has no logits until the next forward pass.
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns A new array of `dim` floats, not normalised.
   * @throws {Qwen3Error} As {@linkcode EngineSession.forward}.
   */
  embed(tokens: ArrayLike<number>): Promise<Float32Array>;
  /**
   * Runs the model over `tokens` as {@linkcode EngineSession.forward} does and returns the
   * logits of every one of them: row `i` is bit for bit what `forward` of `tokens[0..i]`,
   * one token per call, would return. Speculative decoding verifies drafted tokens with
   * it in one pass ({@linkcode EngineSession.rewind} then drops the rejected ones); the C
   * engine runs them as one batch, the TypeScript engine one by one. Both engines have it;
   * a session without it (a stand-in written for a test) is decoded without speculation.
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns `tokens.length * vocabSize` floats, row `i` at `i * vocabSize`, valid until
   * the next call on this session.
   * @throws {Qwen3Error} As {@linkcode EngineSession.forward}.
   */
  verify?(tokens: ArrayLike<number>): Promise<Float32Array>;
  /**
   * Forgets the tokens from `position` on: the next {@linkcode EngineSession.forward}
   * runs at `position`.
   *
   * @param position The new position, from 0 to the current one.
   * @throws {Qwen3Error} `invalid_argument` for a position that is not an integer in
   * `0..position`; on the C engine, `disposed` after the session was disposed.
   */
  rewind(position: number): void;
}

/**
 * A loaded transformer: the C engine ({@linkcode CEngine}) or the TypeScript reference
 * engine ({@linkcode TsEngine}). {@linkcode Qwen3.engine} holds the one a model runs on.
 */
export interface Engine extends Disposable {
  /** "c" or "ts". */
  readonly kind: EngineKind;
  /** How its sessions store keys and values (docs/numerics.md#int8-kv-cache). */
  readonly kvType: KvCacheType;
  /** The model's hyper-parameters. */
  readonly config: ModelConfig;
  /** Threads used for a forward pass (always 1 for the TypeScript engine). */
  readonly threads: number;
  /**
   * Opens a session: a KV cache of `contextLength` positions.
   *
   * @param contextLength Positions of the session; 0 or absent gives the engine's context
   * length (the load's `contextLength`, at most `config.seqLen`), and larger values are
   * clamped to it.
   * @returns A new session at position 0.
   * @throws {Qwen3Error} `invalid_argument` for a length that is not a non-negative
   * integer; `disposed` after the engine was disposed; `out_of_memory` when the C engine
   * cannot allocate the context.
   */
  createSession(contextLength?: number): EngineSession;
}

/**
 * A KV cache's storage: "f16", the default, IEEE binary16 like llama.cpp's default cache
 * (half of fp32's memory, faster decoding on long contexts; docs/numerics.md#fp16-kv-cache);
 * "f32", the reference numerics (the C API's own default); or "q8", int8 per group of 32
 * values with an fp32 scale (about 3.6x smaller than f32; docs/numerics.md#int8-kv-cache).
 * f16 and q8 give logits close to, not the same as, the f32 cache's.
 */
export type KvCacheType = "f32" | "f16" | "q8";

/** Checks a `kvType` option: undefined gives "f16". */
export function checkKvType(v: unknown): KvCacheType {
  if (v === undefined) return "f16";
  if (v !== "f32" && v !== "f16" && v !== "q8") {
    throw new Qwen3Error(
      "invalid_argument",
      `kvType must be "f32", "f16" or "q8", got ${String(v)}`,
    );
  }
  return v;
}

/**
 * Sampler settings shared by the TypeScript {@linkcode Sampler} and the C engine's
 * ({@linkcode CSession.setSampler}): the same settings and seed pick the same tokens on
 * both. The order in which they apply is in docs/sampling.md#algorithm.
 */
export interface SamplerOptions {
  /**
   * Divides the logits before the softmax; 0 picks the most likely token (greedy, no
   * randomness). Must be >= 0.
   *
   * @default {1}
   */
  temperature?: number;
  /**
   * Nucleus sampling: keep the most likely tokens until their probabilities sum past
   * `topP`. Only 0 < topP < 1 filters; 0 or >= 1 disables it.
   *
   * @default {0.9}
   */
  topP?: number;
  /**
   * Keep only the `topK` most likely tokens; 0 disables it. An integer >= 0.
   *
   * @default {0}
   */
  topK?: number;
  /**
   * Drop tokens less likely than `minP` times the most likely one; 0 disables it. In 0..1.
   *
   * @default {0}
   */
  minP?: number;
  /**
   * Subtracted from the logit of every token already generated, to discourage repeats.
   *
   * @default {0}
   */
  presencePenalty?: number;
  /**
   * Times a token was already generated, multiplied by this and subtracted from its logit
   * (OpenAI's `frequency_penalty`): repeats grow ever less likely. Applied after the
   * presence penalty; ignored at temperature 0, as the presence penalty is.
   *
   * @default {0}
   */
  frequencyPenalty?: number;
  /**
   * Seed of the random generator (an integer in 0..2^64-1); 0 takes one from the clock.
   *
   * @default {0}
   */
  seed?: number | bigint;
}
