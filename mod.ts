/**
 * `@q3/qwen3`: run Qwen3 language models on the CPU from Deno, through a native C engine
 * (a shared library built by Zig) or a pure TypeScript reference engine.
 *
 * @example
 * ```ts
 * import { Qwen3 } from "@q3/qwen3";
 * import { writeRandomModel } from "./tests/helpers/random_model.ts";
 *
 * // A tiny random-weight model keeps this example self-contained; pass a real
 * // Qwen3 model.bin (qwen3.c or qwen3-rs export) to get real answers.
 * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1 });
 * using model = await Qwen3.load(path, { engine: "ts", contextLength: 256 });
 * using chat = model.chat({ system: "You are terse.", thinking: false });
 * for await (const piece of chat.send("Hello!", { temperature: 0, maxTokens: 8 })) {
 *   console.log(piece.kind, JSON.stringify(piece.text));
 * }
 * console.log(chat.stats?.prefillTokensPerSecond, chat.stats?.decodeTokensPerSecond);
 * ```
 * @module
 */

export { Chat, Qwen3 } from "./src/api/qwen3.ts";
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
} from "./src/api/generate.ts";
export { Qwen3Error } from "./src/errors.ts";
export type { Qwen3ErrorCode } from "./src/errors.ts";
export type {
  Engine,
  EngineKind,
  EngineSession,
  ModelConfig,
  ModelFormat,
  SamplerOptions,
} from "./src/types.ts";
export { TextStreamDecoder, Tokenizer } from "./src/text/tokenizer.ts";
export type { EncodeOptions, PromptPart, SpecialIds } from "./src/text/tokenizer.ts";
export type { ChatTemplates } from "./src/text/template.ts";
export type { Checkpoint, CheckpointTensors, LayerTensors } from "./src/formats/checkpoint.ts";
export type { Q8Tensor } from "./src/formats/weights.ts";
export { Sampler } from "./src/text/sampler.ts";
export { TsEngine, TsSession } from "./src/reference/ts_engine.ts";
export {
  CEngine,
  type CEngineOptions,
  cpuFeatures,
  CSession,
  kernelName,
  nativeVersion,
  selectKernel,
} from "./ffi/c_engine.ts";
export type { NativeModelInfo } from "./ffi/symbols.ts";
