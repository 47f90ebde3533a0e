/**
 * The public API: {@link Qwen3} (a loaded model on either engine) and {@link Chat} (a
 * multi-turn conversation with its own KV cache).
 *
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * using model = await Qwen3.load(await demoModelPath());
 * using chat = model.chat();
 * console.log(await chat.send("Hello!", { temperature: 0, maxTokens: 8 }).complete());
 * ```
 * @module
 */

import { CEngine, CSession } from "../../ffi/c_engine.ts";
import {
  embeddingDimensions,
  embeddingTokens,
  type EmbedOptions,
  embedTokenInputs,
} from "./embed.ts";
import { Qwen3Error } from "../errors.ts";
import {
  type GenerateOptions,
  Generation,
  type GenerationResult,
  type GenerationStats,
  runGeneration,
  type TokenConstraint,
  type TokenSampler,
} from "./generate.ts";
import { type GgufFile, ggufShownString } from "../formats/gguf.ts";
import { readGgufMetadata } from "../formats/model_file.ts";
import { Sampler } from "../text/sampler.ts";
import {
  type ChatTemplates,
  encodeTurn,
  loadTemplates,
  STOCK_TEMPLATES,
  TEMPLATE_SUFFIXES,
} from "../text/template.ts";
import { Tokenizer } from "../text/tokenizer.ts";
import { loadedModel, TsEngine } from "../reference/ts_engine.ts";
import type {
  Engine,
  EngineKind,
  EngineSession,
  KvCacheType,
  ModelConfig,
  SamplerOptions,
} from "../types.ts";

/** A GGUF's header: already in memory for the TS engine, read (header only) for the C one. */
async function ggufHeaderOf(path: string, engine: Engine): Promise<GgufFile | undefined> {
  if (engine instanceof TsEngine) return loadedModel(engine).gguf;
  return engine.config.format === "gguf" ? await readGgufMetadata(path) : undefined;
}

/**
 * A GGUF's chat templates: `.template*` side files beside it when there are any, else its
 * `tokenizer.chat_template` rendered with the Jinja engine the exporter uses (so a model's own
 * turn format is kept), else, when it has none or it does not render, the stock Qwen3 ones.
 */
export async function ggufTemplates(g: GgufFile, path: string): Promise<ChatTemplates> {
  for (const suffix of Object.values(TEMPLATE_SUFFIXES)) {
    // Anything at the path but "no such file" (a FIFO, a loop) is for loadTemplates to refuse.
    const present = await Deno.stat(path + suffix).then(
      () => true,
      (e) => !(e instanceof Deno.errors.NotFound),
    );
    if (present) return await loadTemplates(path);
  }
  const source = g.metadata.get("tokenizer.chat_template");
  if (typeof source !== "string") return { ...STOCK_TEMPLATES };
  const tokens = g.metadata.get("tokenizer.ggml.tokens");
  const named: Record<string, string> = {};
  for (
    const [key, meta] of [["bos_token", "bos"], ["eos_token", "eos"], ["pad_token", "padding"]]
  ) {
    const id = g.metadata.get(`tokenizer.ggml.${meta}_token_id`);
    const text = Array.isArray(tokens) && typeof id === "number" ? tokens[id] : undefined;
    if (typeof text === "string") named[key] = text;
  }
  // Loaded only for GGUF files: nothing else needs the Jinja engine.
  const { ChatTemplateLimitError, renderChatTemplates } = await import("../text/chat_template.ts");
  try {
    return renderChatTemplates(source, `${path} (tokenizer.chat_template)`, named);
  } catch (e) {
    // A template that merely does not render here gets the stock turns; one that ran into
    // a rendering limit is hostile (or broken beyond use) and the load is refused.
    if (e instanceof ChatTemplateLimitError) throw e;
    return { ...STOCK_TEMPLATES };
  }
}

/** A GGUF's own tokenizer, else the files beside the model. */
async function modelTokenizer(path: string, gguf: GgufFile | undefined): Promise<Tokenizer> {
  return gguf ? ggufTokenizer(gguf, path) : await Tokenizer.load(path);
}

/** Options of {@link Qwen3.load}. */
export interface Qwen3LoadOptions {
  /**
   * The engine that runs the transformer: "c", the native library (loaded with
   * `Deno.dlopen`, so it needs `--allow-ffi`), or "ts", the TypeScript reference engine
   * (slower; runs wherever Deno does).
   *
   * @default {"c"}
   */
  engine?: EngineKind;
  /**
   * Context length (positions) of the model's sessions and chats; 0 gives the file's
   * (`config.seqLen`), which is also the maximum (larger values are clamped to it). Memory
   * for the KV cache grows with the positions used, up to this.
   *
   * @default {0}
   */
  contextLength?: number;
  /**
   * Threads for the C engine's forward passes; 0 gives the number of online CPUs (at most
   * 64). The TypeScript engine always uses one.
   *
   * @default {0}
   */
  threads?: number;
  /**
   * How sessions store keys and values: "f16", IEEE binary16 like llama.cpp's default
   * cache (half of fp32's KV memory and memory traffic; docs/numerics.md#fp16-kv-cache);
   * "f32", the reference numerics; or "q8", int8 per group of 32 values with an fp32 scale
   * (about 3.6x less than f32; docs/numerics.md#int8-kv-cache). f16 and q8 give logits close
   * to but not the same as f32's. Both engines give the same numerics for each; only the C
   * engine saves the memory.
   *
   * @default {"f16"}
   */
  kvType?: KvCacheType;
}

/** Options of {@link Qwen3.generate}: sampling, a token cap, cancellation, and `special`. */
export interface Qwen3GenerateOptions extends GenerateOptions {
  /**
   * Turn literal control-token text such as `<|im_start|>` in a text prompt into control
   * tokens, to write a chat prompt by hand. When false the prompt is plain text, so text
   * from users cannot inject control tokens.
   *
   * @default {false}
   */
  special?: boolean;
  /**
   * Runs in this session (from this model's `engine.createSession()`) after the tokens it
   * already holds, instead of in a fresh one, and leaves it open with the prompt and the
   * fed tokens in its KV cache: a caller that rewinds it to a prompt's shared prefix
   * prefills only the rest (the server's prompt cache). Absent: a fresh session, freed at
   * the end.
   */
  session?: EngineSession;
  /**
   * Log-probabilities: each piece lists the tokens it came from with their log-probability
   * under the model's raw softmax and this many most likely alternatives (an integer in
   * 0..20). Absent: none.
   */
  logprobs?: number;
  /**
   * Restricts the answer's tokens (constrained decoding, such as
   * {@linkcode JsonTokenConstraint} for JSON output); generation ends once it is `closed`.
   */
  constraint?: TokenConstraint;
  /**
   * With `session`: the tokens it already holds, in order, for speculative decoding to
   * search for drafts besides the prompt (the server's prompt cache passes the prefix it
   * reused). Only read for drafts: it changes the speed, never the text.
   */
  history?: readonly number[];
}

/** Options of {@link Qwen3.chat}. */
export interface ChatOptions {
  /** System prompt, sent with the first turn (none when absent or empty). */
  system?: string;
  /**
   * Let the model reason in a `<think>` block before answering (streamed as pieces of kind
   * "thinking"). When false the template gives it an empty block, as Qwen3's own does.
   *
   * @default {false}
   */
  thinking?: boolean;
  /**
   * Positions of this chat's KV cache; 0 gives the model's context length (the load's
   * `contextLength`), which is also the maximum.
   *
   * @default {0}
   */
  contextLength?: number;
}

/** One message of a chat's history. */
export interface ChatMessage {
  /** Who said it. */
  role: "system" | "user" | "assistant";
  /** The text (for the assistant: the answer without the reasoning). */
  content: string;
  /** The assistant's reasoning, when it thought aloud. */
  thinking?: string;
}

/** The control tokens generation needs, looked up once per model ({@link Qwen3.specialTokens}). */
export interface SpecialTokens {
  /** `<|im_end|>`: ends a chat turn. */
  imEnd: number;
  /** `<|endoftext|>`: ends a document. */
  endOfText: number;
  /** The tokens of "\n" (fed after `<|im_end|>`). */
  newline: number[];
  /** `<think>` and `</think>`, when the vocabulary has them. */
  think?: { open: number; close: number };
}

const MODEL_DISPOSED = () =>
  new Qwen3Error("disposed", "this Qwen3 model was disposed; load it again");

function requireToken(tok: Tokenizer, text: string): number {
  const id = tok.tokenId(text);
  if (id === undefined) {
    throw new Qwen3Error("format", `the tokenizer has no ${text} token; is this a Qwen3 model?`);
  }
  return id;
}

/**
 * The tokenizer a GGUF file carries: `tokenizer.ggml.tokens`, `token_type` and `merges`
 * (byte-level BPE, `tokenizer.ggml.model` "gpt2"), exact as a tokenizer.json.
 */
export function ggufTokenizer(g: GgufFile, path: string): Tokenizer {
  const model = g.metadata.get("tokenizer.ggml.model");
  if (model === undefined) {
    throw new Qwen3Error("format", `${path}: GGUF metadata lacks 'tokenizer.ggml.model'`);
  }
  if (typeof model !== "string") {
    throw new Qwen3Error(
      "format",
      `${path}: GGUF metadata 'tokenizer.ggml.model' is not a string, expected a string`,
    );
  }
  if (model !== "gpt2") {
    throw new Qwen3Error(
      "unsupported",
      `${path}: GGUF tokenizer.ggml.model is '${
        ggufShownString(g, "tokenizer.ggml.model")
      }'; only 'gpt2' (byte-level BPE, as Qwen3 uses) is supported`,
    );
  }
  const tokens = g.metadata.get("tokenizer.ggml.tokens");
  const merges = g.metadata.get("tokenizer.ggml.merges");
  const types = g.metadata.get("tokenizer.ggml.token_type");
  const strings = (v: unknown): v is string[] =>
    Array.isArray(v) && v.every((x) => typeof x === "string");
  if (!strings(tokens) || tokens.length === 0) {
    throw new Qwen3Error(
      "format",
      `${path}: GGUF lacks a valid tokenizer.ggml.tokens (an array of strings)`,
    );
  }
  if (!strings(merges)) {
    throw new Qwen3Error(
      "format",
      `${path}: GGUF lacks a valid tokenizer.ggml.merges (an array of strings)`,
    );
  }
  if (
    types !== undefined &&
    (!(types instanceof Int32Array || types instanceof Uint32Array) ||
      types.length !== tokens.length)
  ) {
    throw new Qwen3Error(
      "format",
      `${path}: GGUF lacks a valid tokenizer.ggml.token_type (an array of one i32 per token)`,
    );
  }
  return Tokenizer.fromLists(tokens, merges, types, `${path} (GGUF tokenizer)`);
}

function specialTokens(tok: Tokenizer): SpecialTokens {
  const open = tok.tokenId("<think>");
  const close = tok.tokenId("</think>");
  return {
    imEnd: requireToken(tok, "<|im_end|>"),
    endOfText: requireToken(tok, "<|endoftext|>"),
    newline: tok.encode("\n"),
    think: open !== undefined && close !== undefined ? { open, close } : undefined,
  };
}

/**
 * A generation's sampler: a C session's own C sampler (the same tokens as the TypeScript
 * one for the same options and seed, docs/sampling.md, in less time: the sampler runs
 * between every two decode steps), else the TypeScript {@linkcode Sampler}.
 */
function samplerFor(session: EngineSession, opts: SamplerOptions, vocabSize: number): TokenSampler {
  return session instanceof CSession ? session.sampler(opts) : new Sampler(opts, vocabSize);
}

/**
 * A Qwen3 model loaded on the C engine (default) or the TypeScript engine, with its
 * tokenizer and chat templates. Load one with {@linkcode Qwen3.load}; continue text with
 * {@linkcode Qwen3.generate}, or hold a conversation with {@linkcode Qwen3.chat}. A model
 * holds native memory: dispose it (`using`) when done.
 *
 * @example Continue a prompt, streaming the text
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * // The small demo model that ships with the package; pass any Qwen3 model.bin or GGUF.
 * using model = await Qwen3.load(await demoModelPath());
 * const run = model.generate("The future of the sea is", { temperature: 0, maxTokens: 8 });
 * for await (const piece of run) console.log(piece.kind, JSON.stringify(piece.text));
 * console.log(run.stats?.generatedTokens, run.stats?.stopReason); // 3 stop_token
 * ```
 */
export class Qwen3 implements Disposable {
  /** The engine running the transformer. */
  readonly engine: Engine;
  /** The model's tokenizer (exact Hugging Face Qwen3 tokenization). */
  readonly tokenizer: Tokenizer;
  /** The chat templates (`.template*` side files, a GGUF's own chat template, or the stock Qwen3 ones). */
  readonly templates: ChatTemplates;
  /** The model file, as given to {@linkcode Qwen3.load}. */
  readonly path: string;
  #special: SpecialTokens;
  #disposed = false;

  private constructor(
    path: string,
    engine: Engine,
    tokenizer: Tokenizer,
    templates: ChatTemplates,
  ) {
    this.path = path;
    this.engine = engine;
    this.tokenizer = tokenizer;
    this.templates = templates;
    this.#special = specialTokens(tokenizer);
  }

  /**
   * Loads a model file (qwen3.c `model.bin`, qwen3-rs checkpoint, or a `qwen3` GGUF) with its
   * tokenizer (a GGUF's own lists; else the first of `model.bin.tokenizer.json`,
   * `tokenizer.json` and `model.bin.tokenizer` beside it: {@linkcode Tokenizer.load}) and
   * templates (`.template*` side files, else a GGUF's own chat template, else the stock
   * Qwen3 ones). The model path must be a regular file and side files regular files within
   * their size limits (src/formats/side_file.ts); a tokenizer with more tokens than the model's
   * embedding rows is refused.
   *
   * @param path The model file.
   * @param opts The engine, context length and threads.
   * @returns The loaded model; dispose it when done.
   * @throws {Qwen3Error} naming the file: `io` when a file is missing, not a regular file,
   * unreadable or over its size limit, or no tokenizer is found; `format` when the model,
   * tokenizer or a template is malformed (a GGUF chat template that runs into a rendering
   * limit included); `unsupported` for a valid file this engine cannot run (a GGUF tensor
   * type, a tokenizer kind); `invalid_argument` for a bad option; `out_of_memory`; with the
   * C engine, `library` when the native library cannot be loaded (the message says how to
   * build it, or use `engine: "ts"`).
   *
   * @example Load on either engine
   * ```ts
   * import { demoModelPath, Qwen3 } from "@q3/qwen3";
   *
   * using model = await Qwen3.load(await demoModelPath(), { contextLength: 512, threads: 2 });
   * console.log(model.engine.kind, model.config.nLayers, model.config.vocabSize); // c 4 4122
   * using reference = await Qwen3.load(model.path, { engine: "ts" });
   * console.log(reference.engine.kind, reference.engine.threads); // ts 1
   * ```
   */
  static async load(path: string, opts: Qwen3LoadOptions = {}): Promise<Qwen3> {
    const kind = opts.engine ?? "c";
    if (kind !== "c" && kind !== "ts") {
      throw new Qwen3Error("invalid_argument", `engine must be "c" or "ts", got ${String(kind)}`);
    }
    // The engine first: its errors name what is wrong with the model file itself.
    const engine = kind === "c"
      ? await CEngine.load(path, {
        contextLength: opts.contextLength,
        threads: opts.threads,
        kvType: opts.kvType,
      })
      : await TsEngine.load(path, { contextLength: opts.contextLength, kvType: opts.kvType });
    try {
      // The C loader's order (csrc/src/model.c, model_checkpoint.c), so a model with several faults gets the
      // same error from both engines: tokenizer, its size, then the templates.
      const gguf = await ggufHeaderOf(path, engine);
      const tokenizer = await modelTokenizer(path, gguf);
      const rows = engine.config.vocabSize;
      if (tokenizer.size > rows) {
        // Ids past the embedding would fail mid-run; the C engine refuses them at load.
        throw new Qwen3Error(
          "format",
          `${path}: the tokenizer ${tokenizer.source} has ${tokenizer.size} tokens, more than ` +
            `the model's vocab_size ${rows}`,
        );
      }
      const templates = gguf ? await ggufTemplates(gguf, path) : await loadTemplates(path);
      return new Qwen3(path, engine, tokenizer, templates);
    } catch (e) {
      engine[Symbol.dispose]();
      throw e;
    }
  }

  /** The model's hyper-parameters (those of its {@linkcode Qwen3.engine}). */
  get config(): ModelConfig {
    return this.engine.config;
  }

  #live(): void {
    if (this.#disposed) throw MODEL_DISPOSED();
  }

  /** The control-token ids generation needs: `<|im_end|>`, `<|endoftext|>`, `<think>`, ... */
  get specialTokens(): Readonly<SpecialTokens> {
    return this.#special;
  }

  /**
   * Continues `prompt` in a fresh session (its own KV cache, freed at the end). Nothing
   * runs until the returned Generation is iterated; it stops at `<|im_end|>` or
   * `<|endoftext|>`, at `maxTokens`, when `signal` aborts, or when the context is full. A
   * prompt that does not fit in the context runs nothing (`stats.stopReason`
   * "context_full"); it is never truncated.
   *
   * @param prompt Text (plain unless `special`), or token ids.
   * @param opts Sampling, `maxTokens`, `signal` and `special`.
   * @returns The generation: an async iterable of text pieces; afterwards it holds the
   * text, tokens and stats.
   * @throws {Qwen3Error} `disposed` when the model was disposed. The Generation's own
   * errors come when it is iterated ({@linkcode Generation}).
   *
   * @example Seeded sampling with a time limit
   * ```ts
   * import { demoModelPath, Qwen3 } from "@q3/qwen3";
   *
   * using model = await Qwen3.load(await demoModelPath());
   * const signal = AbortSignal.timeout(60_000);
   * const opts = { temperature: 0.8, topP: 0.9, seed: 42, maxTokens: 16, signal };
   * const run = model.generate("And it came to pass", opts);
   * console.log(await run.complete()); // the same text every run with seed 42
   * console.log(run.stats?.decodeTokensPerSecond);
   * ```
   *
   * @example A chat prompt written by hand
   * ```ts
   * import { demoModelPath, Qwen3 } from "@q3/qwen3";
   *
   * using model = await Qwen3.load(await demoModelPath());
   * const prompt = "<|im_start|>user\nWhat is a cat?<|im_end|>\n<|im_start|>assistant\n";
   * const run = model.generate(prompt, { special: true, temperature: 0, maxTokens: 24 });
   * for await (const piece of run) console.log(piece.kind, JSON.stringify(piece.text));
   * ```
   */
  generate(prompt: string | readonly number[], opts: Qwen3GenerateOptions = {}): Generation {
    this.#live();
    const tokenizer = this.tokenizer;
    // Text is encoded against the session's free positions: a prompt that cannot fit ends
    // the run as context_full at a cost bounded by the context, not by the text.
    const tokens = typeof prompt === "string"
      ? (free: number) => tokenizer.encode(prompt, { special: opts.special ?? false, limit: free })
      : Array.from(prompt);
    const engine = this.engine;
    const special = this.#special;
    const live = () => this.#live();
    const given = opts.session;
    return new Generation(async function* (result: GenerationResult) {
      using fresh = given ? undefined : engine.createSession();
      yield* runGeneration({
        session: given ?? fresh!,
        tokenizer,
        sampler: samplerFor(given ?? fresh!, opts, engine.config.vocabSize),
        prompt: tokens,
        stopTokens: new Set([special.imEnd, special.endOfText]),
        think: special.think,
        maxTokens: opts.maxTokens,
        signal: opts.signal,
        speculate: opts.speculate ?? engine.kind === "c",
        history: opts.history,
        logprobs: opts.logprobs,
        constraint: opts.constraint,
        live,
      }, result);
    });
  }

  /**
   * Starts a conversation with its own KV cache, so chats on one model never disturb each
   * other.
   *
   * @param opts The system prompt, thinking, and the chat's context length.
   * @returns The chat; dispose it to free its KV cache.
   * @throws {Qwen3Error} `disposed` when the model was disposed; `invalid_argument` for a
   * bad `contextLength`; `out_of_memory` when the C engine cannot allocate the context.
   *
   * @example A chat with a system prompt and reasoning
   * ```ts
   * import { demoModelPath, Qwen3 } from "@q3/qwen3";
   *
   * using model = await Qwen3.load(await demoModelPath());
   * using chat = model.chat({ system: "You are terse.", thinking: true });
   * for await (const piece of chat.send("Hello!", { temperature: 0, maxTokens: 24 })) {
   *   console.log(piece.kind, JSON.stringify(piece.text)); // kind: "thinking" or "answer"
   * }
   * console.log(chat.stats?.stopReason, chat.history.length); // max_tokens 3
   * ```
   */
  chat(opts: ChatOptions = {}): Chat {
    this.#live();
    return new Chat(this, opts);
  }

  /**
   * Embeds text for retrieval with a Qwen3-Embedding model (0.6B, 4B, 8B, exported with
   * `qwen3 export`): each text (a query with `opts.instruction` becomes
   * `Instruct: {instruction}\nQuery:{text}`) is tokenized as plain text, followed by
   * `<|endoftext|>`, and run through the model in prefill blocks without computing logits;
   * the embedding is the last token's final hidden state (last-token pooling), truncated to
   * `opts.dimensions` and L2-normalised. Texts run one after another in one session of the
   * model's engine (both engines give the same bits). docs/embeddings.md says where the
   * format comes from. A model that is not an embedding model gives vectors too, but they
   * mean little.
   *
   * @param texts One text, or several.
   * @param opts `dimensions` (Matryoshka truncation), `instruction` (for queries), `signal`.
   * @returns One Float32Array of unit length for a string; one per text, in order, for an
   * array.
   * @throws {Qwen3Error} `disposed` when the model was disposed; `invalid_argument` for a
   * bad `dimensions`; `context_full` naming a text longer than the context (nothing is
   * truncated); the engine's errors.
   *
   * @example Which document answers a query
   * ```ts
   * import { demoModelPath, Qwen3 } from "@q3/qwen3";
   *
   * // The demo model is a chat model: pass a Qwen3-Embedding model for meaningful vectors.
   * using model = await Qwen3.load(await demoModelPath());
   * const instruction = "Given a question, retrieve passages that answer it";
   * const query = await model.embed("Where do fish live?", { instruction });
   * const docs = await model.embed(["Fish live in the sea.", "The sun is hot."]);
   * const scores = docs.map((d) => d.reduce((s, v, i) => s + v * query[i], 0));
   * console.log(query.length, scores.length); // 256 2
   * ```
   */
  embed(texts: string, opts?: EmbedOptions): Promise<Float32Array>;
  /**
   * Embeds several texts as {@linkcode Qwen3.embed} embeds one, in one session, one after
   * another.
   *
   * @param texts The texts (queries when `opts.instruction` is given).
   * @param opts `dimensions`, `instruction` (for all of them) and `signal`.
   * @returns One unit-length Float32Array per text, in order.
   * @throws {Qwen3Error} As for one text; `context_full` names the index of the text that
   * does not fit, before any runs.
   */
  embed(texts: readonly string[], opts?: EmbedOptions): Promise<Float32Array[]>;
  async embed(
    texts: string | readonly string[],
    opts: EmbedOptions = {},
  ): Promise<Float32Array | Float32Array[]> {
    this.#live();
    const dims = embeddingDimensions(opts.dimensions, this.config.dim);
    const list = typeof texts === "string" ? [texts] : texts;
    const inputs = list.map((t) => this.embeddingTokens(t, opts.instruction));
    const out = await embedTokenInputs(this.engine, inputs, dims, opts.signal);
    return typeof texts === "string" ? out[0] : out;
  }

  /**
   * The token ids {@linkcode Qwen3.embed} runs for a text: `Instruct: {instruction}\nQuery:{text}`
   * (or the text alone) as plain text, then `<|endoftext|>`.
   *
   * @param text The query or document.
   * @param instruction The task description, for queries.
   * @returns The ids, ending with `<|endoftext|>`.
   *
   * @example Count a query's tokens
   * ```ts
   * import { demoModelPath, Qwen3 } from "@q3/qwen3";
   *
   * using model = await Qwen3.load(await demoModelPath());
   * const ids = model.embeddingTokens("Where do fish live?", "Find answers");
   * console.log(ids.at(-1) === model.specialTokens.endOfText); // true
   * ```
   */
  embeddingTokens(text: string, instruction?: string): number[] {
    return embeddingTokens(this.tokenizer, this.#special.endOfText, text, instruction);
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Releases the model (`using` calls it). Generations and chat turns streaming on it end
   * at their next token boundary (a forward pass already running finishes first): the
   * stream throws a Qwen3Error "disposed", and the text so far stays in the Generation
   * (stats.stopReason "aborted"). Afterwards `generate`, `chat` and `send` on its chats
   * throw "disposed". The C engine's memory is freed once no chat of the model holds a KV
   * cache. Disposing twice does nothing.
   */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.engine[Symbol.dispose]();
  }
}

/**
 * A multi-turn conversation, from {@linkcode Qwen3.chat}: every turn's tokens stay in this
 * chat's KV cache, so the model sees the whole conversation without re-reading it. A turn
 * that does not fit in the free positions runs nothing and ends with `stats.stopReason`
 * "context_full"; start a new chat (or load with a longer `contextLength`) then.
 *
 * @example Two turns; the second sees the first
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * using model = await Qwen3.load(await demoModelPath());
 * using chat = model.chat();
 * await chat.send("My name is Ada.", { temperature: 0, maxTokens: 8 }).complete();
 * const second = chat.send("What is my name?", { temperature: 0, maxTokens: 8 });
 * console.log(await second.complete());
 * console.log(second.stats?.startPosition, chat.position, chat.history.length); // 25 52 4
 * ```
 */
export class Chat implements Disposable {
  /** Whether turns use the thinking template. */
  readonly thinking: boolean;
  /** The system prompt, if any. */
  readonly system: string | undefined;
  #model: Qwen3;
  #session: EngineSession;
  #history: ChatMessage[] = [];
  /** Tokens owed to the KV cache before the next turn: the end of the last reply. */
  #carry: number[] = [];
  #fed: number[] = []; // every token in the session's KV cache, in order (prompt lookup reads it)
  #turns = 0;
  #busy = false;
  #stats: GenerationStats | undefined;
  #disposed = false;

  /**
   * Starts a chat on `model`; {@linkcode Qwen3.chat} does the same and checks first that
   * the model is not disposed.
   *
   * @param model The model to chat with.
   * @param opts The system prompt, thinking, and the chat's context length.
   * @throws {Qwen3Error} As {@linkcode Qwen3.chat}.
   */
  constructor(model: Qwen3, opts: ChatOptions = {}) {
    this.#model = model;
    this.thinking = opts.thinking ?? false;
    this.system = opts.system;
    this.#session = model.engine.createSession(opts.contextLength);
    if (opts.system !== undefined) this.#history.push({ role: "system", content: opts.system });
  }

  /** The stats of the last turn (undefined before the first ends). */
  get stats(): GenerationStats | undefined {
    return this.#stats;
  }

  /**
   * The conversation so far: the system message, if any, then each finished turn's user
   * and assistant messages (a turn that ran nothing is not there).
   */
  get history(): readonly ChatMessage[] {
    return this.#history;
  }

  /** Tokens in this chat's KV cache. */
  get position(): number {
    return this.#session.position;
  }

  /** Positions this chat can hold. */
  get contextLength(): number {
    return this.#session.contextLength;
  }

  /**
   * Sends a user message and streams the reply as pieces ("thinking" / "answer"). The
   * message is always plain text: typing `<|im_end|>` cannot end the turn. One send at a
   * time per chat: finish (or break out of) a turn before the next. Nothing runs until the
   * returned Generation is iterated; the turn joins {@linkcode Chat.history} when it ends.
   *
   * @param text The user's message.
   * @param opts Sampling, `maxTokens` and `signal` for this turn.
   * @returns The reply as a Generation, iterated once.
   * @throws {Qwen3Error} `disposed` when the chat or its model was disposed; when iterated,
   * `invalid_argument` while the previous turn is still answering, and what any
   * {@linkcode Generation} throws.
   *
   * @example Stream a reply
   * ```ts
   * import { demoModelPath, Qwen3 } from "@q3/qwen3";
   *
   * using model = await Qwen3.load(await demoModelPath());
   * using chat = model.chat();
   * const reply = chat.send("What does a dictionary mean?", { temperature: 0, maxTokens: 16 });
   * for await (const piece of reply) await Deno.stdout.write(new TextEncoder().encode(piece.text));
   * console.log("\n", reply.stats?.decodeTokensPerSecond, "tokens/s");
   * ```
   */
  send(text: string, opts: GenerateOptions = {}): Generation {
    this.#live();
    return new Generation((result) => this.#turn(text, opts, result));
  }

  /** Throws "disposed" once this chat or its model is disposed. */
  #live(): void {
    if (this.#model.disposed) throw MODEL_DISPOSED();
    if (this.#disposed) throw new Qwen3Error("disposed", "this chat was disposed; start a new one");
  }

  async *#turn(text: string, opts: GenerateOptions, result: GenerationResult) {
    this.#live();
    if (this.#busy) {
      throw new Qwen3Error(
        "invalid_argument",
        "this chat is still answering; finish (or break out of) the previous send first",
      );
    }
    const model = this.#model;
    const special = model.specialTokens;
    const first = this.#turns === 0;
    const carry = this.#carry;
    // Encoded against the free positions, so a turn that cannot fit (a 10 MB paste) ends as
    // context_full after work bounded by the context, not by the text.
    let fed: readonly number[] = [];
    const prompt = (free: number) =>
      fed = [
        ...carry,
        ...encodeTurn(model.tokenizer, model.templates, {
          user: text,
          system: first ? this.system : undefined,
          thinking: this.thinking,
          first,
        }, { limit: Math.max(0, free - carry.length) }),
      ];
    this.#busy = true;
    try {
      yield* runGeneration({
        session: this.#session,
        tokenizer: model.tokenizer,
        sampler: samplerFor(this.#session, opts, model.config.vocabSize),
        prompt,
        stopTokens: new Set([special.imEnd, special.endOfText]),
        think: special.think,
        maxTokens: opts.maxTokens,
        signal: opts.signal,
        speculate: opts.speculate ?? model.engine.kind === "c",
        history: this.#fed,
        live: () => this.#live(),
      }, result);
    } finally {
      this.#busy = false;
      this.#stats = result.stats;
      if (result.promptFed) {
        // The reply is closed in the cache as the template would have it, however it ended:
        // its last unfed token (if any), then <|im_end|> and a newline, fed with the next turn.
        this.#carry = [...result.unfed, special.imEnd, ...special.newline];
        this.#fed.push(
          ...fed,
          ...result.tokens.slice(0, result.tokens.length - result.unfed.length),
        );
        this.#turns++;
        this.#history.push({ role: "user", content: text });
        const reply: ChatMessage = { role: "assistant", content: result.text };
        if (result.thinking !== "") reply.thinking = result.thinking;
        this.#history.push(reply);
      }
    }
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Frees this chat's KV cache (`using` calls it). A turn streaming on it ends at its next
   * token boundary with a Qwen3Error "disposed", as when its model is disposed. Disposing
   * twice does nothing.
   */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#session[Symbol.dispose]();
  }
}
