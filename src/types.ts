/**
 * The contracts shared by both engines and everything that drives them.
 * @module
 */

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
}

/** Which engine runs the transformer. */
export type EngineKind = "c" | "ts";

/**
 * One sequence's state over a loaded engine: a KV cache and a position. Several sessions
 * may share one engine.
 */
export interface EngineSession extends Disposable {
  /** Positions this session can hold. */
  readonly contextLength: number;
  /** Tokens already in the KV cache (the position of the next token). */
  readonly position: number;
  /**
   * Runs the model over `tokens` at positions `position ..` and returns the logits of the
   * last one (vocabSize floats). The array is only valid until the next call on this
   * session. Throws a Qwen3Error with code "context_full" (changing nothing) when the
   * tokens do not fit.
   */
  forward(tokens: ArrayLike<number>): Promise<Float32Array>;
  /** Forgets the tokens from `position` on. */
  rewind(position: number): void;
}

/** A loaded transformer: the C engine or the TypeScript reference engine. */
export interface Engine extends Disposable {
  /** "c" or "ts". */
  readonly kind: EngineKind;
  /** The model's hyper-parameters. */
  readonly config: ModelConfig;
  /** Threads used for a forward pass (always 1 for the TypeScript engine). */
  readonly threads: number;
  /** Opens a session of `contextLength` positions (default and maximum: config.seqLen). */
  createSession(contextLength?: number): EngineSession;
}

/** Sampler settings shared by the TypeScript sampler and the C engine's. */
export interface SamplerOptions {
  /** 0 = greedy argmax. Default 1. */
  temperature?: number;
  /** Nucleus sampling in (0, 1); 0 or >= 1 disables. Default 0.9. */
  topP?: number;
  /** Keep only the k most likely tokens; 0 disables. Default 0. */
  topK?: number;
  /** Drop tokens less likely than minP times the most likely; 0 disables. Default 0. */
  minP?: number;
  /** Subtracted from the logit of every token already generated. Default 0. */
  presencePenalty?: number;
  /** RNG seed; 0 or absent = from the clock. */
  seed?: number | bigint;
}
