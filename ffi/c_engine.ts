/**
 * The C engine behind the shared {@link Engine} interface: a loaded `Qwen3Model` and its
 * `Qwen3Context` sessions, with native memory released by `Symbol.dispose` (and by a
 * FinalizationRegistry when an object is dropped without being disposed).
 * @module
 */

import { Qwen3Error, type Qwen3ErrorCode } from "../src/errors.ts";
import { SAMPLER_DEFAULTS } from "../src/text/sampler.ts";
import { statRegularFile } from "../src/formats/side_file.ts";
import type {
  Engine,
  EngineSession,
  ModelConfig,
  ModelFormat,
  SamplerOptions,
} from "../src/types.ts";
import { check, lastError, loadLibrary } from "./library.ts";
import {
  cString,
  MODEL_INFO_LAYOUT,
  type NativeModelInfo,
  type Qwen3Library,
  readCString,
  readModelConfig,
  readModelInfo,
  STATUS,
  TOKENIZE_SPECIAL,
  writeSamplerConfig,
} from "./symbols.ts";

const FORMATS: Record<number, ModelFormat> = { 1: "qwen3.c", 2: "qwen3-rs", 3: "gguf" };

/** Options of {@link CEngine.load}. */
export interface CEngineOptions {
  /** Context length (positions) for this load; default and maximum: the file's. */
  contextLength?: number;
  /** Threads for a forward pass; default: the number of online CPUs (at most 64). */
  threads?: number;
}

/*
 * Native ownership. The handles live in plain records that the FinalizationRegistry holds,
 * so a dropped engine or session can still be freed, in the right order: a model is freed
 * only when it is released (disposed or collected) AND none of its contexts is alive.
 */
interface ModelHandle {
  lib: Qwen3Library;
  ptr: Deno.PointerObject | null;
  liveContexts: number;
  released: boolean;
  /** The model file, for messages about it. */
  path: string;
}

interface ContextHandle {
  model: ModelHandle;
  ptr: Deno.PointerObject | null;
  /** A nonblocking call in flight: freeing must wait for it. */
  busy: Promise<unknown> | undefined;
}

function freeModelIfUnused(m: ModelHandle): void {
  if (m.ptr !== null && m.released && m.liveContexts === 0) {
    m.lib.symbols.qwen3_model_free(m.ptr);
    m.ptr = null;
  }
}

function freeContext(c: ContextHandle): void {
  if (c.ptr === null) return;
  const finish = () => {
    if (c.ptr === null) return;
    c.model.lib.symbols.qwen3_context_free(c.ptr);
    c.ptr = null;
    c.model.liveContexts--;
    freeModelIfUnused(c.model);
  };
  if (c.busy) c.busy.then(finish, finish);
  else finish();
}

const modelRegistry = new FinalizationRegistry<ModelHandle>((m) => {
  m.released = true;
  freeModelIfUnused(m);
});
const contextRegistry = new FinalizationRegistry<ContextHandle>(freeContext);

/**
 * The Qwen3Error code of a failed `qwen3_model_load`, from its last-error text: the C API
 * returns NULL without a status, and the TypeScript side must give the code the TypeScript
 * engine gives for the same file (tests/engines_agree_test.ts holds them together). The
 * patterns are the C loaders' wording for I/O failures (csrc/src/platform.c, model.c) and
 * for valid files this engine cannot run; everything else is the file's content.
 */
export function loadFailureCode(message: string): Qwen3ErrorCode {
  if (/\bout of memory\b/.test(message)) return "out_of_memory";
  if (
    /: (cannot open|cannot stat|cannot map|cannot read|read error)\b|not a regular file|no tokenizer found|do not fit in this address space/
      .test(message)
  ) return "io";
  if (
    /\bnot supported\b|\bis supported$|cannot run|unknown to this engine|engine runs only|differs from key_length|fp32 scales would be misaligned|weights but a width of/
      .test(message)
  ) return "unsupported";
  return "format";
}

function valid(n: number, name: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new Qwen3Error(
      "invalid_argument",
      `${name} must be an integer in 0..4294967295, got ${n}`,
    );
  }
  return n;
}

/** Converts the shared sampler options to the C struct's values (same defaults as TS). */
export function nativeSampler(opts: SamplerOptions = {}) {
  const seed = opts.seed ?? 0;
  const d = SAMPLER_DEFAULTS;
  return {
    temperature: opts.temperature ?? d.temperature,
    topP: opts.topP ?? d.topP,
    topK: opts.topK ?? d.topK,
    minP: opts.minP ?? d.minP,
    presencePenalty: opts.presencePenalty ?? d.presencePenalty,
    seed: BigInt.asUintN(64, BigInt(seed)),
  };
}

/**
 * A Qwen3 model loaded by the C engine (`qwen3_model_load`).
 *
 * @example
 * ```ts
 * import { CEngine } from "@q3/qwen3";
 * import { writeRandomModel } from "../tests/helpers/random_model.ts";
 *
 * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1 });
 * using engine = await CEngine.load(path, { contextLength: 64, threads: 1 });
 * using session = engine.createSession();
 * const logits = await session.forward(engine.tokenize("Hello world"));
 * console.log(engine.config.dim, session.position, logits.length); // 64 2 151936
 * ```
 */
export class CEngine implements Engine {
  /** Always "c". */
  readonly kind = "c" as const;
  /** The model's hyper-parameters. */
  readonly config: ModelConfig;
  /** Everything `qwen3_model_get_info` reports (token ids, tokenizer exactness, file size). */
  readonly info: NativeModelInfo;
  /** Default and maximum context length of sessions (the load's `contextLength`). */
  readonly contextLength: number;
  /** The file the model came from. */
  readonly path: string;
  #handle: ModelHandle;

  private constructor(handle: ModelHandle, path: string) {
    this.#handle = handle;
    this.path = path;
    const lib = handle.lib;
    const cfgPtr = lib.symbols.qwen3_model_get_config(handle.ptr);
    if (cfgPtr === null) throw new Qwen3Error("library", "qwen3_model_get_config returned NULL");
    const c = readModelConfig(cfgPtr);
    const infoBuf = new Uint8Array(MODEL_INFO_LAYOUT.size);
    check(lib, lib.symbols.qwen3_model_get_info(handle.ptr, infoBuf), "qwen3_model_get_info");
    const info = readModelInfo(infoBuf);
    this.info = info;
    this.contextLength = c.maxSeqLen;
    this.config = {
      format: FORMATS[info.format] ?? "qwen3.c",
      dim: c.dim,
      hiddenDim: c.hiddenDim,
      nLayers: c.nLayers,
      nHeads: c.nHeads,
      nKvHeads: c.nKvHeads,
      headDim: info.headDim,
      vocabSize: c.vocabSize,
      seqLen: info.fileSeqLen,
      groupSize: info.groupSize,
      sharedClassifier: info.sharedClassifier,
      ropeTheta: c.ropeTheta,
      rmsEps: info.rmsEps,
    };
  }

  /**
   * Loads a qwen3.c or qwen3-rs checkpoint (auto-detected) with its side files. Throws a
   * Qwen3Error with the C engine's message (naming the file and field) on failure.
   */
  static async load(path: string, opts: CEngineOptions = {}): Promise<CEngine> {
    const lib = await loadLibrary();
    const ctxLength = valid(opts.contextLength ?? 0, "contextLength");
    // qwen3_model_load opens the path itself: a FIFO there would block it (and the thread
    // it runs on) until a writer came, so only a regular file is handed to it.
    await statRegularFile(path, "model file");
    const ptr = lib.symbols.qwen3_model_load(cString(path), ctxLength);
    if (ptr === null) {
      const message = lastError(lib) || `${path}: cannot load the model file`;
      throw new Qwen3Error(loadFailureCode(message), message);
    }
    const handle: ModelHandle = { lib, ptr, liveContexts: 0, released: false, path };
    let engine: CEngine;
    try {
      engine = new CEngine(handle, path);
      if (opts.threads !== undefined) engine.setThreads(opts.threads);
    } catch (e) {
      handle.released = true;
      freeModelIfUnused(handle);
      throw e;
    }
    modelRegistry.register(engine, handle, handle);
    return engine;
  }

  #live(): ModelHandle {
    const h = this.#handle;
    if (h.released || h.ptr === null) {
      throw new Qwen3Error("disposed", "this CEngine was disposed; load the model again");
    }
    return h;
  }

  /** Threads used by a forward pass. */
  get threads(): number {
    const h = this.#live();
    return h.lib.symbols.qwen3_model_get_threads(h.ptr);
  }

  /** Sets the threads used by forward passes (0 = the number of online CPUs). */
  setThreads(n: number): void {
    const h = this.#live();
    check(h.lib, h.lib.symbols.qwen3_model_set_threads(h.ptr, valid(n, "threads")), "set threads");
  }

  /**
   * The chat template text the C engine loaded (printf-style `%s` placeholders).
   * kind: 0 plain, 1 thinking, 2 system, 3 system and thinking.
   */
  template(kind: 0 | 1 | 2 | 3): string {
    const h = this.#live();
    const p = h.lib.symbols.qwen3_model_get_template(h.ptr, kind);
    if (p === null) throw new Qwen3Error("invalid_argument", `no template of kind ${kind}`);
    return readCString(p);
  }

  /** Tokenizes with the C engine's tokenizer (`special`: literal control-token text counts). */
  tokenize(text: string, opts: { special?: boolean } = {}): number[] {
    const h = this.#live();
    const bytes = new TextEncoder().encode(text);
    const flags = opts.special ? TOKENIZE_SPECIAL : 0;
    let out = new Int32Array(bytes.length + 8);
    let n = check(
      h.lib,
      h.lib.symbols.qwen3_tokenize(h.ptr, bytes, bytes.length, flags, out, out.length),
      "qwen3_tokenize",
    );
    if (n > out.length) {
      out = new Int32Array(n);
      n = check(
        h.lib,
        h.lib.symbols.qwen3_tokenize(h.ptr, bytes, bytes.length, flags, out, out.length),
        "qwen3_tokenize",
      );
    }
    return Array.from(out.subarray(0, n));
  }

  /** The raw bytes of a token (a copy); throws for an id outside the tokenizer. */
  tokenBytes(id: number): Uint8Array {
    const h = this.#live();
    const len = new Uint32Array(1);
    const p = h.lib.symbols.qwen3_token_bytes(h.ptr, id, new Uint8Array(len.buffer));
    if (p === null) {
      throw new Qwen3Error("invalid_argument", lastError(h.lib) || `no token with id ${id}`);
    }
    if (len[0] === 0) return new Uint8Array(0);
    return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p, len[0]).slice(0));
  }

  /**
   * Opens a session (KV cache and position) of `contextLength` positions (0 or absent = the
   * load's context length; larger values are clamped to it).
   */
  createSession(contextLength?: number): CSession {
    const h = this.#live();
    // 0 = the load's length; larger values are clamped to it (as the TypeScript engine does).
    const n = Math.min(valid(contextLength ?? 0, "contextLength"), this.contextLength);
    const ptr = h.lib.symbols.qwen3_context_new(h.ptr, n);
    if (ptr === null) {
      throw new Qwen3Error("out_of_memory", lastError(h.lib) || "qwen3_context_new failed");
    }
    h.liveContexts++;
    return new CSession({ model: h, ptr, busy: undefined }, this.config.vocabSize);
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#handle.released;
  }

  /**
   * Releases the model. Native memory is freed now, or when the last open session is
   * disposed. Disposing twice does nothing.
   */
  [Symbol.dispose](): void {
    const h = this.#handle;
    if (h.released) return;
    modelRegistry.unregister(h);
    h.released = true;
    freeModelIfUnused(h);
  }
}

/**
 * A C context: KV cache, position and the C sampler, over a shared {@link CEngine}.
 *
 * @example
 * ```ts
 * import { CEngine } from "@q3/qwen3";
 * import { writeRandomModel } from "../tests/helpers/random_model.ts";
 *
 * const path = await writeRandomModel(await Deno.makeTempDir(), { nLayers: 1 });
 * using engine = await CEngine.load(path);
 * using session = engine.createSession(32);
 * session.setSampler({ temperature: 0 });
 * await session.forward(engine.tokenize("Once upon a"));
 * let token = session.sample();
 * for (let i = 0; i < 3; i++) token = await session.decode(token); // C samples each step
 * console.log(session.position); // 6
 * ```
 */
export class CSession implements EngineSession {
  /** Positions this session holds. */
  readonly contextLength: number;
  #handle: ContextHandle;
  #vocab: number;
  #disposed = false;

  /** Use {@link CEngine.createSession}. */
  constructor(handle: ContextHandle, vocabSize: number) {
    this.#handle = handle;
    this.#vocab = vocabSize;
    this.contextLength = handle.model.lib.symbols.qwen3_context_length(handle.ptr);
    contextRegistry.register(this, handle, handle);
  }

  #live(): { lib: Qwen3Library; ptr: Deno.PointerObject } {
    const h = this.#handle;
    if (this.#disposed || h.ptr === null) {
      throw new Qwen3Error("disposed", "this session was disposed; create a new one");
    }
    if (h.busy) {
      throw new Qwen3Error(
        "invalid_argument",
        "this session is busy with a forward pass; await it before the next call",
      );
    }
    return { lib: h.model.lib, ptr: h.ptr };
  }

  /** Tokens in the KV cache (the position of the next token). */
  get position(): number {
    const { lib, ptr } = this.#live();
    return lib.symbols.qwen3_context_position(ptr);
  }

  #validate(tokens: ArrayLike<number>): Int32Array<ArrayBuffer> {
    // Nonblocking calls run on another thread, where the C last-error text cannot be read
    // back: catch the documented failures here, with the message C would have given.
    const { lib, ptr } = this.#live();
    if (tokens.length === 0) throw new Qwen3Error("invalid_argument", "no tokens to run");
    const buf = new Int32Array(tokens.length);
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= this.#vocab) {
        throw new Qwen3Error(
          "invalid_argument",
          `token id ${t} at index ${i} is outside the vocabulary (0..${this.#vocab - 1})`,
        );
      }
      buf[i] = t;
    }
    const pos = lib.symbols.qwen3_context_position(ptr);
    if (pos + tokens.length > this.contextLength) {
      throw new Qwen3Error(
        "context_full",
        `context full: ${tokens.length} tokens at position ${pos} exceed the context length ${this.contextLength}`,
      );
    }
    return buf;
  }

  async #run<T>(call: Promise<T>): Promise<T> {
    const h = this.#handle;
    h.busy = call;
    try {
      return await call;
    } finally {
      h.busy = undefined;
    }
  }

  #logits(): Float32Array<ArrayBuffer> {
    const { lib, ptr } = this.#live();
    const p = lib.symbols.qwen3_context_logits(ptr);
    if (p === null) {
      throw new Qwen3Error("invalid_argument", "no logits yet: run a forward pass first");
    }
    return new Float32Array(Deno.UnsafePointerView.getArrayBuffer(p, this.#vocab * 4));
  }

  /**
   * Runs `tokens` (a nonblocking prefill on a worker thread) and returns the logits of
   * the last one: a view of the C buffer (no copy), valid until the next call.
   */
  async forward(tokens: ArrayLike<number>): Promise<Float32Array> {
    const buf = this.#validate(tokens);
    const { lib, ptr } = this.#live();
    const status = await this.#run(
      lib.symbols.qwen3_context_prefill_nonblocking(ptr, buf, buf.length),
    );
    if (status < 0) throw this.#asyncFailure(status, "qwen3_context_prefill");
    return this.#logits();
  }

  /** The logits of the last token run (a view, as from {@link forward}). */
  logits(): Float32Array {
    return this.#logits();
  }

  /** Sets the C sampler (reseeds it and clears its presence-penalty history). */
  setSampler(opts: SamplerOptions = {}): void {
    const { lib, ptr } = this.#live();
    const buf = writeSamplerConfig(nativeSampler(opts));
    check(lib, lib.symbols.qwen3_context_set_sampler(ptr, buf), "qwen3_context_set_sampler");
  }

  /** Samples the next token from the current logits with the C sampler. */
  sample(): number {
    const { lib, ptr } = this.#live();
    return check(lib, lib.symbols.qwen3_context_sample(ptr), "qwen3_context_sample");
  }

  /** Runs one token (nonblocking) and returns the token the C sampler picks next. */
  async decode(token: number): Promise<number> {
    this.#validate([token]);
    const { lib, ptr } = this.#live();
    const next = await this.#run(lib.symbols.qwen3_context_decode_nonblocking(ptr, token));
    if (next < 0) throw this.#asyncFailure(next, "qwen3_context_decode");
    return next;
  }

  #asyncFailure(status: number, what: string): Qwen3Error {
    // The C message is thread-local to the worker thread that ran the call, so the
    // documented causes are spelled out here.
    let why = "";
    if (status === STATUS.OUT_OF_MEMORY) why = " (KV cache memory could not be committed)";
    if (status === STATUS.IO) {
      why = `: the model file ${this.#handle.model.path} was truncated or modified since it ` +
        "was loaded (its weights are memory-mapped), so it was not read; load it again, and " +
        "replace model files by renaming a new file over them, never by rewriting them in place";
    }
    return Qwen3Error.fromStatus(status, `${what} failed with status ${status}${why}`);
  }

  /** Forgets the tokens from `position` on. */
  rewind(position: number): void {
    const { lib, ptr } = this.#live();
    check(lib, lib.symbols.qwen3_context_rewind(ptr, valid(position, "position")), "rewind");
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /** Frees the KV cache (after a forward pass still in flight). Disposing twice does nothing. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    contextRegistry.unregister(this.#handle);
    freeContext(this.#handle);
  }
}

/**
 * The CPU features the C engine detected, e.g. ["sse4.2", "avx2", "avx512vnni"].
 *
 * @example
 * ```ts
 * import { cpuFeatures } from "@q3/qwen3";
 * console.log((await cpuFeatures()).join(" "));
 * ```
 */
export async function cpuFeatures(): Promise<string[]> {
  const lib = await loadLibrary();
  return readCString(lib.symbols.qwen3_cpu_features()).split(/\s+/).filter((s) => s !== "");
}

/**
 * The kernel tier the C engine uses now ("scalar", "avx2", "avx512vnni", "neon", ...).
 *
 * @example
 * ```ts
 * import { kernelName } from "@q3/qwen3";
 * console.log(await kernelName());
 * ```
 */
export async function kernelName(): Promise<string> {
  const lib = await loadLibrary();
  return readCString(lib.symbols.qwen3_kernel_name());
}

/**
 * Forces a kernel tier for the whole process. Throws a Qwen3Error ("unsupported") when
 * this CPU or build lacks it.
 *
 * @example
 * ```ts
 * import { kernelName, selectKernel } from "@q3/qwen3";
 * const best = await kernelName();
 * await selectKernel("scalar"); // the reference kernel, e.g. to compare results
 * await selectKernel(best);
 * ```
 */
export async function selectKernel(name: string): Promise<void> {
  const lib = await loadLibrary();
  check(lib, lib.symbols.qwen3_kernel_select(cString(name)), `select kernel ${name}`);
}

/**
 * The C library's version string.
 *
 * @example
 * ```ts
 * import { nativeVersion } from "@q3/qwen3";
 * console.log(await nativeVersion()); // e.g. "0.1.0"
 * ```
 */
export async function nativeVersion(): Promise<string> {
  const lib = await loadLibrary();
  return readCString(lib.symbols.qwen3_version());
}
