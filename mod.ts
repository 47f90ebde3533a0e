/**
 * `@q3/qwen3`: run Qwen3 language models on the CPU from Deno, through a native C engine
 * (a shared library built by Zig, loaded with `Deno.dlopen`) or a pure TypeScript reference
 * engine with the same numerics.
 *
 * - {@linkcode Qwen3}: load a model (qwen3.c `model.bin`, qwen3-rs checkpoint or GGUF)
 *   with its tokenizer and chat templates; {@linkcode Qwen3.generate} continues a prompt,
 *   {@linkcode Qwen3.chat} starts a {@linkcode Chat} with its own KV cache. Both stream
 *   {@linkcode Piece}s through a {@linkcode Generation}. {@linkcode Qwen3.embed} turns text
 *   into unit vectors with a Qwen3-Embedding model ({@linkcode EmbedOptions}).
 * - {@linkcode demoModelPath}: the 4.2M-parameter demo model that ships with the package.
 * - {@linkcode Tokenizer}, {@linkcode Sampler}, {@linkcode TextStreamDecoder}: the parts the
 *   generation loop is made of; {@linkcode JsonTokenConstraint} and {@linkcode compileSchema}:
 *   JSON output through `generate`'s `constraint` option.
 * - {@linkcode CEngine}, {@linkcode TsEngine} and their sessions: the engines themselves,
 *   for logits, C-side sampling and decode steps; {@linkcode cpuFeatures},
 *   {@linkcode kernelName}, {@linkcode selectKernel}: the C engine's kernels.
 * - {@linkcode Qwen3Error}: what every failure throws, its `code` saying what failed.
 *
 * Everything that holds native memory is `Disposable` (`using`). The C engine needs
 * `--allow-ffi`; reading models needs `--allow-read` (a remote module downloads the
 * library and the demo model, which needs `--allow-net`, `--allow-write`, `--allow-env`).
 *
 * @example Chat with the demo model
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * // The demo model answers in odd but real English; pass a real Qwen3 model.bin or GGUF
 * // (e.g. one `qwen3 export` made from Hugging Face's Qwen3-0.6B) for real answers.
 * using model = await Qwen3.load(await demoModelPath(), { contextLength: 1024 });
 * using chat = model.chat({ system: "You are terse.", thinking: false });
 * for await (const piece of chat.send("Hello!", { temperature: 0, maxTokens: 16 })) {
 *   console.log(piece.kind, JSON.stringify(piece.text));
 * }
 * console.log(chat.stats?.prefillTokensPerSecond, chat.stats?.decodeTokensPerSecond);
 * ```
 * @module
 */

export { Chat, Qwen3 } from "./src/api/qwen3.ts";
export { demoModelPath } from "./src/api/demo.ts";
export type { EmbedOptions } from "./src/api/embed.ts";
export type {
  ChatMessage,
  ChatOptions,
  Qwen3GenerateOptions,
  Qwen3LoadOptions,
  SpecialTokens,
} from "./src/api/qwen3.ts";
export { Generation } from "./src/api/generate.ts";
export type {
  GenerateOptions,
  GenerationStats,
  Piece,
  PieceKind,
  StopReason,
  TokenConstraint,
  TokenLogprob,
} from "./src/api/generate.ts";
export {
  ANY_JSON,
  ANY_OBJECT,
  compileSchema,
  JsonTokenConstraint,
  SchemaError,
} from "./src/text/json_constraint.ts";
export type { ConstraintVocabulary, JsonTypeName, SchemaNode } from "./src/text/json_constraint.ts";
export { Qwen3Error } from "./src/errors.ts";
export type { Qwen3ErrorCode } from "./src/errors.ts";
export type {
  Engine,
  EngineKind,
  EngineSession,
  KvCacheType,
  ModelConfig,
  ModelFormat,
  MoeConfig,
  SamplerOptions,
} from "./src/types.ts";
export { TextStreamDecoder, Tokenizer } from "./src/text/tokenizer.ts";
export type { EncodeOptions, PromptPart, SpecialIds } from "./src/text/tokenizer.ts";
export type { ChatTemplates } from "./src/text/template.ts";
export type {
  Checkpoint,
  CheckpointMoeLayer,
  CheckpointTensors,
  LayerTensors,
} from "./src/formats/checkpoint.ts";
export type { Q8Tensor } from "./src/formats/weights.ts";
export { Sampler } from "./src/text/sampler.ts";
export { TsEngine, TsSession } from "./src/reference/ts_engine.ts";
export {
  CEngine,
  type CEngineOptions,
  cpuFeatures,
  type CSampler,
  CSession,
  kernelName,
  nativeVersion,
  selectKernel,
} from "./ffi/c_engine.ts";
export type { NativeModelInfo } from "./ffi/symbols.ts";
export type { DecodeBatchStats } from "./ffi/decode_batcher.ts";
