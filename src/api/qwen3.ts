/**
 * The public API: {@link Qwen3} (a loaded model on either engine) and {@link Chat} (a
 * multi-turn conversation with its own KV cache).
 * @module
 */

import { CEngine } from "../../ffi/c_engine.ts";
import { Qwen3Error } from "../errors.ts";
import {
  type GenerateOptions,
  Generation,
  type GenerationResult,
  type GenerationStats,
  runGeneration,
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
import type { Engine, EngineKind, EngineSession, ModelConfig } from "../types.ts";

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
  /** "c" (default): the native engine; "ts": the TypeScript reference engine. */
  engine?: EngineKind;
  /** Context length (positions) of sessions; default and maximum: the file's. */
  contextLength?: number;
  /** Threads for the C engine's forward passes (default: online CPUs). */
  threads?: number;
}

/** Options of {@link Qwen3.generate}. */
export interface Qwen3GenerateOptions extends GenerateOptions {
  /** Turn literal control-token text such as `<|im_start|>` in the prompt into control
   * tokens (default false: the prompt is plain text). */
  special?: boolean;
}

/** Options of {@link Qwen3.chat}. */
export interface ChatOptions {
  /** System prompt, sent with the first turn. */
  system?: string;
  /** Let the model reason in `<think>` before answering (default false). */
  thinking?: boolean;
  /** Positions of this chat's KV cache (default: the model's context length). */
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

/** The control tokens generation needs, looked up once per model. */
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
 * A Qwen3 model loaded on the C engine (default) or the TypeScript engine, with its
 * tokenizer and chat templates.
 *
 * @example
 * ```ts
 * import { Qwen3 } from "@q3/qwen3";
 * import { writeRandomModel } from "../../tests/helpers/random_model.ts";
 *
 * // A tiny random-weight model, so the example runs anywhere; use a real model.bin instead.
 * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1 });
 * using model = await Qwen3.load(path, { engine: "ts", contextLength: 128 });
 * const run = model.generate("The future of AI is", { temperature: 0, maxTokens: 8 });
 * for await (const piece of run) console.log(piece.kind, JSON.stringify(piece.text));
 * console.log(run.stats?.generatedTokens, run.stats?.stopReason);
 * ```
 */
export class Qwen3 implements Disposable {
  /** The engine running the transformer. */
  readonly engine: Engine;
  /** The model's tokenizer (exact Hugging Face Qwen3 tokenization). */
  readonly tokenizer: Tokenizer;
  /** The chat templates (`.template*` side files, a GGUF's own chat template, or the stock Qwen3 ones). */
  readonly templates: ChatTemplates;
  /** The model file. */
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
   * embedding rows is refused. Errors are Qwen3Errors naming the file.
   *
   * @example
   * ```ts
   * import { Qwen3 } from "@q3/qwen3";
   * import { writeRandomModel } from "../../tests/helpers/random_model.ts";
   *
   * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1 });
   * using model = await Qwen3.load(path, { engine: "ts" });
   * console.log(model.engine.kind, model.config.dim, model.tokenizer.encode("Hello world"));
   * ```
   */
  static async load(path: string, opts: Qwen3LoadOptions = {}): Promise<Qwen3> {
    const kind = opts.engine ?? "c";
    if (kind !== "c" && kind !== "ts") {
      throw new Qwen3Error("invalid_argument", `engine must be "c" or "ts", got ${String(kind)}`);
    }
    // The engine first: its errors name what is wrong with the model file itself.
    const engine = kind === "c"
      ? await CEngine.load(path, { contextLength: opts.contextLength, threads: opts.threads })
      : await TsEngine.load(path, { contextLength: opts.contextLength });
    try {
      // The C loader's order (csrc/src/model.c), so a model with several faults gets the
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

  /** The model's hyper-parameters. */
  get config(): ModelConfig {
    return this.engine.config;
  }

  #live(): void {
    if (this.#disposed) throw MODEL_DISPOSED();
  }

  /** Control-token ids generation needs (internal to Chat). */
  get specialTokens(): Readonly<SpecialTokens> {
    return this.#special;
  }

  /**
   * Continues `prompt` (text, or token ids) in a fresh session: an async iterable of
   * text pieces; afterwards the returned Generation holds the text and stats.
   *
   * @example
   * ```ts
   * import { Qwen3 } from "@q3/qwen3";
   * import { writeRandomModel } from "../../tests/helpers/random_model.ts";
   *
   * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1 });
   * using model = await Qwen3.load(path, { engine: "ts" });
   * const signal = AbortSignal.timeout(60_000);
   * const run = model.generate("Once upon a time", { temperature: 0.8, topP: 0.9, seed: 42, maxTokens: 5, signal });
   * console.log(await run.complete(), run.stats?.decodeTokensPerSecond);
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
    return new Generation(async function* (result: GenerationResult) {
      using session = engine.createSession();
      yield* runGeneration({
        session,
        tokenizer,
        sampler: new Sampler(opts, engine.config.vocabSize),
        prompt: tokens,
        stopTokens: new Set([special.imEnd, special.endOfText]),
        think: special.think,
        maxTokens: opts.maxTokens,
        signal: opts.signal,
        live,
      }, result);
    });
  }

  /**
   * Starts a conversation with its own KV cache (so chats on one model never disturb each
   * other).
   *
   * @example
   * ```ts
   * import { Qwen3 } from "@q3/qwen3";
   * import { writeRandomModel } from "../../tests/helpers/random_model.ts";
   *
   * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1 });
   * using model = await Qwen3.load(path, { engine: "ts", contextLength: 256 });
   * using chat = model.chat({ system: "You are terse.", thinking: false });
   * for await (const ev of chat.send("Hello!", { temperature: 0, maxTokens: 6 })) {
   *   console.log(ev.kind, JSON.stringify(ev.text));
   * }
   * console.log(chat.stats, chat.history.length);
   * ```
   */
  chat(opts: ChatOptions = {}): Chat {
    this.#live();
    return new Chat(this, opts);
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Releases the model. Generations and chat turns streaming on it end at their next token
   * boundary (a forward pass already running finishes first): the stream throws a
   * Qwen3Error "disposed", and the text so far stays in the Generation (stats.stopReason
   * "aborted"). Afterwards `generate`, `chat` and `send` on its chats throw "disposed". The
   * C engine's memory is freed once no chat of the model holds a KV cache. Idempotent.
   */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.engine[Symbol.dispose]();
  }
}

/**
 * A multi-turn conversation: every turn's tokens stay in this chat's KV cache, so the
 * model sees the whole conversation without re-reading it.
 *
 * @example
 * ```ts
 * import { Qwen3 } from "@q3/qwen3";
 * import { writeRandomModel } from "../../tests/helpers/random_model.ts";
 *
 * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1 });
 * using model = await Qwen3.load(path, { engine: "ts", contextLength: 256 });
 * using chat = model.chat();
 * await chat.send("My name is Ada.", { temperature: 0, maxTokens: 4 }).complete();
 * const second = chat.send("What is my name?", { temperature: 0, maxTokens: 4 });
 * console.log(await second.complete(), second.stats?.startPosition, chat.position);
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
  #turns = 0;
  #busy = false;
  #stats: GenerationStats | undefined;
  #disposed = false;

  /** Use {@link Qwen3.chat}. */
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

  /** The conversation so far (system, user and assistant messages). */
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
   * message is always plain text: typing `<|im_end|>` cannot end the turn. One send at
   * a time per chat.
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
    const prompt = (free: number) => [
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
        sampler: new Sampler(opts, model.config.vocabSize),
        prompt,
        stopTokens: new Set([special.imEnd, special.endOfText]),
        think: special.think,
        maxTokens: opts.maxTokens,
        signal: opts.signal,
        live: () => this.#live(),
      }, result);
    } finally {
      this.#busy = false;
      this.#stats = result.stats;
      if (result.promptFed) {
        // The reply is closed in the cache as the template would have it, however it ended:
        // its last unfed token (if any), then <|im_end|> and a newline, fed with the next turn.
        this.#carry = [...result.unfed, special.imEnd, ...special.newline];
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
   * Frees this chat's KV cache. A turn streaming on it ends at its next token boundary with
   * a Qwen3Error "disposed", as when its model is disposed. Idempotent.
   */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#session[Symbol.dispose]();
  }
}
