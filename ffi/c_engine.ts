/**
 * The C engine behind the shared {@link Engine} interface: a loaded `Qwen3Model` and its
 * `Qwen3Context` sessions, with native memory released by `Symbol.dispose` (and by a
 * FinalizationRegistry when an object is dropped without being disposed).
 * @module
 */

import { Qwen3Error, type Qwen3ErrorCode } from "../src/errors.ts";
import { resolveSampler } from "../src/text/sampler.ts";
import { statRegularFile } from "../src/formats/side_file.ts";
import {
  checkKvType,
  type Engine,
  type EngineSession,
  type KvCacheType,
  type ModelConfig,
  type ModelFormat,
  type SamplerOptions,
} from "../src/types.ts";
import { check, lastError, loadLibrary } from "./library.ts";
import { DecodeBatcher, type DecodeBatchStats } from "./decode_batcher.ts";
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

/** A session's C sampler, from {@linkcode CSession.sampler}: the TypeScript sampler's methods. */
export interface CSampler {
  /** Picks a token and counts it for the penalties. */
  sample(logits: Float32Array): number;
  /** Picks a token (drawing from the random generator) without counting it. */
  pick(logits: Float32Array): number;
  /** Counts a kept token for the penalties. */
  record(token: number): void;
}

/** Qwen3KvType of each cache type (csrc/include/qwen3_inference.h). */
const KV_TYPE_IDS: Record<KvCacheType, number> = { f32: 0, q8: 1, f16: 2 };

/** Options of {@link CEngine.load}. */
export interface CEngineOptions {
  /**
   * Context length (positions) for this load; 0 gives the file's, which is also the
   * maximum (larger values are clamped to it).
   *
   * @default {0}
   */
  contextLength?: number;
  /**
   * Threads for a forward pass; 0 gives the number of online CPUs (at most 64).
   *
   * @default {0}
   */
  threads?: number;
  /**
   * KV cache of the sessions: "f16" (IEEE binary16, half of fp32's size, faster decoding
   * on long contexts; docs/numerics.md#fp16-kv-cache); "f32" (the reference numerics); or
   * "q8" (int8 per group of 32 values with an fp32 scale, about 3.6x smaller than f32;
   * docs/numerics.md#int8-kv-cache).
   *
   * @default {"f16"}
   */
  kvType?: KvCacheType;
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
  /** Coalesces its sessions' one-token forward passes into batched steps. */
  batcher: DecodeBatcher;
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

/**
 * A Qwen3 model loaded by the C engine (`qwen3_model_load`): memory-mapped weights, its own
 * tokenizer and templates, and a thread pool. {@linkcode Qwen3.load} uses it by default and
 * adds the TypeScript tokenizer, templates and generation loop; use it directly for the
 * C-side tokenizer and sampler. The library is found as README.md's "How the library is
 * found" says (`QWEN3_LIB`, the local build, the shipped copy, or a download).
 *
 * @example Logits of a prompt
 * ```ts
 * import { CEngine, demoModelPath } from "@q3/qwen3";
 *
 * using engine = await CEngine.load(await demoModelPath(), { contextLength: 64, threads: 1 });
 * using session = engine.createSession();
 * const logits = await session.forward(engine.tokenize("The sea"));
 * console.log(engine.config.dim, session.position, logits.length); // 256 2 4122
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
  /** How its sessions store keys and values (the load's `kvType`). */
  readonly kvType: KvCacheType;
  #handle: ModelHandle;

  private constructor(handle: ModelHandle, path: string, kvType: KvCacheType) {
    this.#handle = handle;
    this.path = path;
    this.kvType = kvType;
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
    const moe = new Uint32Array(3);
    const sparse = new Uint8Array(c.nLayers);
    check(
      lib,
      lib.symbols.qwen3_model_get_moe(handle.ptr, new Uint8Array(moe.buffer), sparse),
      "qwen3_model_get_moe",
    );
    if (moe[0] > 0) {
      const norm = new Uint32Array(1);
      check(
        lib,
        lib.symbols.qwen3_model_get_moe_norm(handle.ptr, new Uint8Array(norm.buffer)),
        "qwen3_model_get_moe_norm",
      );
      this.config.moe = {
        nExperts: moe[0],
        nExpertsUsed: moe[1],
        expertHiddenDim: moe[2],
        normTopkProb: norm[0] === 1,
        sparse: Array.from(sparse, (v) => v === 1),
      };
    }
  }

  /**
   * Loads a qwen3.c or qwen3-rs checkpoint, or a `qwen3` GGUF (detected), with its side
   * files (tokenizer, templates).
   *
   * @param path The model file (a regular file).
   * @param opts The context length and threads.
   * @returns The engine; dispose it when done.
   * @throws {Qwen3Error} with the C engine's message naming the file and field: `io` when
   * a file is missing, unreadable or not a regular file, or no tokenizer is found; `format`
   * when it is malformed; `unsupported` for a valid file this engine cannot run;
   * `out_of_memory`; `invalid_argument` for a bad option; `library` when the native
   * library cannot be loaded.
   */
  static async load(path: string, opts: CEngineOptions = {}): Promise<CEngine> {
    const lib = await loadLibrary();
    const ctxLength = valid(opts.contextLength ?? 0, "contextLength");
    const kvType = checkKvType(opts.kvType);
    // qwen3_model_load opens the path itself: a FIFO there would block it (and the thread
    // it runs on) until a writer came, so only a regular file is handed to it.
    await statRegularFile(path, "model file");
    const ptr = lib.symbols.qwen3_model_load(cString(path), ctxLength);
    if (ptr === null) {
      const message = lastError(lib) || `${path}: cannot load the model file`;
      throw new Qwen3Error(loadFailureCode(message), message);
    }
    const handle: ModelHandle = {
      lib,
      ptr,
      liveContexts: 0,
      released: false,
      path,
      batcher: new DecodeBatcher(lib),
    };
    let engine: CEngine;
    try {
      engine = new CEngine(handle, path, kvType);
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

  /**
   * How the one-token forward passes of this model's sessions were batched: passes of
   * `qwen3_context_decode_batch`, the steps they ran (their mean size is `steps /
   * batches`) and the largest. One-token {@linkcode CSession.forward} calls issued in the
   * same turn of the event loop, or while a batch runs, share one pass that reads each
   * weight once (README.md's "Concurrent sessions"). Counts only passes that succeeded.
   *
   * @example Two sessions stepping together
   * ```ts
   * import { CEngine, demoModelPath } from "@q3/qwen3";
   *
   * using engine = await CEngine.load(await demoModelPath(), { contextLength: 64, threads: 1 });
   * using a = engine.createSession();
   * using b = engine.createSession();
   * await Promise.all([a.forward([1]), b.forward([2])]);
   * console.log(engine.decodeBatchStats); // { batches: 1, steps: 2, largest: 2 }
   * ```
   */
  get decodeBatchStats(): DecodeBatchStats {
    return this.#live().batcher.stats;
  }

  /** Threads used by a forward pass. */
  get threads(): number {
    const h = this.#live();
    return h.lib.symbols.qwen3_model_get_threads(h.ptr);
  }

  /**
   * Sets the threads used by forward passes from now on.
   *
   * @param n Threads; 0 gives the number of online CPUs (at most 64).
   * @throws {Qwen3Error} `invalid_argument` for a count that is not a non-negative
   * integer; `disposed` after the engine was disposed.
   */
  setThreads(n: number): void {
    const h = this.#live();
    check(h.lib, h.lib.symbols.qwen3_model_set_threads(h.ptr, valid(n, "threads")), "set threads");
  }

  /**
   * A chat template as the C engine loaded it (printf-style `%s` placeholders: the user
   * text, or the system prompt then the user text).
   *
   * @param kind 0 plain, 1 thinking, 2 system, 3 system and thinking.
   * @returns The template text.
   * @throws {Qwen3Error} `invalid_argument` for another kind; `disposed` after the engine
   * was disposed.
   */
  template(kind: 0 | 1 | 2 | 3): string {
    const h = this.#live();
    const p = h.lib.symbols.qwen3_model_get_template(h.ptr, kind);
    if (p === null) throw new Qwen3Error("invalid_argument", `no template of kind ${kind}`);
    return readCString(p);
  }

  /**
   * Tokenizes with the C engine's tokenizer (the same ids as {@linkcode Tokenizer.encode}).
   *
   * @param text The text.
   * @param opts `special`: turn literal control-token text such as `<|im_end|>` into
   * control tokens (default false: plain text).
   * @returns The token ids.
   * @throws {Qwen3Error} `disposed` after the engine was disposed; `out_of_memory`.
   */
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

  /**
   * The raw bytes of a token.
   *
   * @param id A token id.
   * @returns A copy of its bytes.
   * @throws {Qwen3Error} `invalid_argument` for an id outside the tokenizer; `disposed`
   * after the engine was disposed.
   */
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
   * Opens a session: a KV cache, a position and a C sampler.
   *
   * @param contextLength Positions of the session; 0 or absent gives the load's context
   * length, and larger values are clamped to it.
   * @returns A new session at position 0.
   * @throws {Qwen3Error} `out_of_memory` when the context cannot be allocated;
   * `invalid_argument` for a bad length; `disposed` after the engine was disposed.
   */
  createSession(contextLength?: number): CSession {
    const h = this.#live();
    // 0 = the load's length; larger values are clamped to it (as the TypeScript engine does).
    const n = Math.min(valid(contextLength ?? 0, "contextLength"), this.contextLength);
    // Qwen3ContextOptions: u32 kv_type (Qwen3KvType: 0 f32, 1 q8, 2 f16), u32 reserved[3]
    const options = new Uint32Array([KV_TYPE_IDS[this.kvType], 0, 0, 0]);
    const ptr = h.lib.symbols.qwen3_context_new_ex(h.ptr, n, options);
    if (ptr === null) {
      throw new Qwen3Error("out_of_memory", lastError(h.lib) || "qwen3_context_new_ex failed");
    }
    h.liveContexts++;
    return new CSession(
      { model: h, ptr, busy: undefined },
      this.config.vocabSize,
      this.config.dim,
    );
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#handle.released;
  }

  /**
   * Releases the model (`using` calls it). Native memory is freed now, or when the last
   * open session is disposed. Disposing twice does nothing.
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
 * A C context: KV cache, position and the C sampler, over a shared {@link CEngine}, from
 * {@linkcode CEngine.createSession}. Forward passes run on a worker thread; one call at a
 * time per session.
 *
 * @example Generate with the C sampler
 * ```ts
 * import { CEngine, demoModelPath } from "@q3/qwen3";
 *
 * using engine = await CEngine.load(await demoModelPath());
 * using session = engine.createSession(32);
 * session.setSampler({ temperature: 0 });
 * await session.forward(engine.tokenize("Once upon a")); // 5 tokens
 * let token = session.sample();
 * for (let i = 0; i < 3; i++) token = await session.decode(token); // C samples each step
 * console.log(session.position); // 8
 * ```
 */
export class CSession implements EngineSession {
  /** Positions this session holds. */
  readonly contextLength: number;
  #handle: ContextHandle;
  #vocab: number;
  #dim: number;
  #disposed = false;
  #rows = new Float32Array(0); // (tokens, vocab) logits of the last verify

  /**
   * Wraps a native context. Internal: sessions come from {@linkcode CEngine.createSession}.
   *
   * @param handle The native context and its model.
   * @param vocabSize The model's vocabulary size.
   * @param dim The model's hidden state width.
   * @ignore
   */
  constructor(handle: ContextHandle, vocabSize: number, dim: number) {
    this.#handle = handle;
    this.#vocab = vocabSize;
    this.#dim = dim;
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
   * Runs `tokens` at positions `position ..` (a nonblocking prefill on a worker thread).
   * One token is a decode step: steps of several sessions of this engine issued in the
   * same turn of the event loop, or while a batch runs, go together as one batched pass
   * ({@linkcode CEngine.decodeBatchStats}) with the same logits, bit for bit.
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns The logits of the last one: a view of the C buffer (no copy), valid until the
   * next call.
   * @throws {Qwen3Error} `context_full` (changing nothing) when the tokens do not fit;
   * `invalid_argument` for no tokens, an id outside the vocabulary, or a call while another
   * is in flight; `disposed` after the session was disposed; `io` when the memory-mapped
   * model file was truncated or modified since it was loaded; `out_of_memory` when KV-cache
   * memory cannot be committed.
   */
  async forward(tokens: ArrayLike<number>): Promise<Float32Array> {
    const buf = this.#validate(tokens);
    const { lib, ptr } = this.#live();
    // One token: a decode step, batched with the other sessions' steps of this turn.
    const status = await this.#run(
      buf.length === 1
        ? this.#handle.model.batcher.step(ptr, buf[0])
        : lib.symbols.qwen3_context_prefill_nonblocking(ptr, buf, buf.length),
    );
    if (status < 0) throw this.#asyncFailure(status, "qwen3_context_prefill");
    return this.#logits();
  }

  /**
   * Runs `tokens` as {@linkcode CSession.forward} does (a nonblocking call on a worker
   * thread) but returns the last token's final hidden state (`rmsnorm(x) * final_norm`)
   * instead of logits; the classifier is not run (`qwen3_context_embed`). Afterwards the
   * session has no logits until the next forward pass.
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns A new array of `dim` floats, not normalised.
   * @throws {Qwen3Error} As {@linkcode CSession.forward}.
   */
  async embed(tokens: ArrayLike<number>): Promise<Float32Array> {
    const buf = this.#validate(tokens);
    const { lib, ptr } = this.#live();
    const out = new Float32Array(this.#dim);
    const status = await this.#run(
      lib.symbols.qwen3_context_embed_nonblocking(ptr, buf, buf.length, out, out.length),
    );
    if (status < 0) throw this.#asyncFailure(status, "qwen3_context_embed");
    return out;
  }

  /**
   * Runs `tokens` at positions `position ..` (nonblocking, as {@linkcode CSession.forward})
   * and returns the logits of every one of them, in one batched pass: row `i` is bit for
   * bit what `forward` of `tokens[0..i]` one token at a time would return. Speculative
   * decoding verifies drafted tokens with it, then rewinds past the rejected ones.
   *
   * @param tokens Token ids, at least one, each below the model's `vocabSize`.
   * @returns `tokens.length * vocabSize` floats (row `i` at `i * vocabSize`), valid until
   * the next `verify` on this session.
   * @throws {Qwen3Error} As {@linkcode CSession.forward}.
   */
  async verify(tokens: ArrayLike<number>): Promise<Float32Array> {
    const buf = this.#validate(tokens);
    const { lib, ptr } = this.#live();
    const size = buf.length * this.#vocab;
    if (this.#rows.length < size) this.#rows = new Float32Array(size);
    const rows = this.#rows;
    const status = await this.#run(
      lib.symbols.qwen3_context_verify_nonblocking(ptr, buf, buf.length, rows),
    );
    if (status < 0) throw this.#asyncFailure(status, "qwen3_context_verify");
    return rows.subarray(0, size);
  }

  /**
   * The logits of the last token run, again.
   *
   * @returns A view of the C buffer, as from {@linkcode CSession.forward}.
   * @throws {Qwen3Error} `invalid_argument` before the first forward pass; `disposed`.
   */
  logits(): Float32Array {
    return this.#logits();
  }

  /**
   * Sets the C sampler used by {@linkcode CSession.sample} and {@linkcode CSession.decode};
   * it reseeds it and clears the token counts of its presence and frequency penalties.
   *
   * @param opts The settings and seed, with the same defaults and results as the
   * TypeScript {@linkcode Sampler}.
   * @throws {Qwen3Error} `invalid_argument` naming an option out of range; `disposed`.
   */
  setSampler(opts: SamplerOptions = {}): void {
    const { lib, ptr } = this.#live();
    const buf = writeSamplerConfig(resolveSampler(opts));
    check(lib, lib.symbols.qwen3_context_set_sampler(ptr, buf), "qwen3_context_set_sampler");
  }

  /**
   * The C sampler as a generation loop's sampler: it configures this session's C sampler
   * with `opts` (as {@linkcode CSession.setSampler}) and picks from any logits (this
   * session's, a verify row, a masked copy) exactly as a TypeScript {@linkcode Sampler}
   * with the same options picks (both run the same operations: docs/sampling.md), in less
   * time. `Qwen3.generate` and `Chat.send` sample with it on the C engine.
   *
   * @param opts The settings and seed, checked as {@linkcode Sampler} checks them (no seed,
   * or 0, takes one from the clock here).
   * @returns `sample` (a pick, counted for the penalties), `pick` and `record`, as the
   * TypeScript {@linkcode Sampler}'s methods of those names.
   * @throws {Qwen3Error} `invalid_argument` naming an option out of range; `disposed`.
   */
  sampler(opts: SamplerOptions = {}): CSampler {
    this.setSampler(opts);
    const live = () => this.#live();
    const vocab = this.#vocab;
    const pick = (logits: Float32Array) => {
      if (logits.length !== vocab) {
        throw new Qwen3Error(
          "invalid_argument",
          `sample: ${logits.length} logits, expected the vocabulary size ${vocab}`,
        );
      }
      const { lib, ptr } = live();
      return check(lib, lib.symbols.qwen3_context_pick(ptr, logits), "qwen3_context_pick");
    };
    const record = (token: number) => {
      const { lib, ptr } = live();
      check(lib, lib.symbols.qwen3_context_record(ptr, token), "qwen3_context_record");
    };
    return {
      pick,
      record,
      sample: (logits) => {
        const token = pick(logits);
        record(token);
        return token;
      },
    };
  }

  /**
   * Samples the next token from the current logits with the C sampler.
   *
   * @returns The token id.
   * @throws {Qwen3Error} `invalid_argument` before the first forward pass; `disposed`.
   */
  sample(): number {
    const { lib, ptr } = this.#live();
    return check(lib, lib.symbols.qwen3_context_sample(ptr), "qwen3_context_sample");
  }

  /**
   * Runs one token (nonblocking) and samples the next with the C sampler: one step of
   * generation in one call.
   *
   * @param token The token to run (usually the last one sampled).
   * @returns The token the C sampler picks next.
   * @throws {Qwen3Error} As {@linkcode CSession.forward}.
   */
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

  /**
   * Forgets the tokens from `position` on.
   *
   * @param position The new position, from 0 to the current one.
   * @throws {Qwen3Error} `invalid_argument` for a position outside `0..position`;
   * `disposed`.
   */
  rewind(position: number): void {
    const { lib, ptr } = this.#live();
    check(lib, lib.symbols.qwen3_context_rewind(ptr, valid(position, "position")), "rewind");
  }

  /** True once disposed. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Frees the KV cache (`using` calls it; after a forward pass still in flight). Disposing
   * twice does nothing.
   */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    contextRegistry.unregister(this.#handle);
    freeContext(this.#handle);
  }
}

/**
 * The CPU features the C engine detected.
 *
 * @returns Feature names, e.g. ["sse4.2", "avx2", "avx512vnni"].
 * @throws {Qwen3Error} `library` when the native library cannot be loaded.
 *
 * @example Print them
 * ```ts
 * import { cpuFeatures } from "@q3/qwen3";
 *
 * console.log((await cpuFeatures()).join(" ")); // e.g. sse4.2 avx2 fma
 * ```
 */
export async function cpuFeatures(): Promise<string[]> {
  const lib = await loadLibrary();
  return readCString(lib.symbols.qwen3_cpu_features()).split(/\s+/).filter((s) => s !== "");
}

/**
 * The kernel tier the C engine uses now: the best this CPU supports, unless
 * {@linkcode selectKernel} or `QWEN3_KERNEL` chose another.
 *
 * @returns The tier's name: "scalar", "avx2", "avx512vnni", "amx", "neon", ...
 * @throws {Qwen3Error} `library` when the native library cannot be loaded.
 *
 * @example Print it
 * ```ts
 * import { kernelName } from "@q3/qwen3";
 *
 * console.log(await kernelName()); // e.g. avx2
 * ```
 */
export async function kernelName(): Promise<string> {
  const lib = await loadLibrary();
  return readCString(lib.symbols.qwen3_kernel_name());
}

/**
 * Forces a kernel tier for the whole process. Every tier gives bit-identical results; the
 * scalar one is the reference.
 *
 * @param name A tier's name, as {@linkcode kernelName} returns it.
 * @throws {Qwen3Error} `unsupported` when this CPU or build lacks the tier; `library` when
 * the native library cannot be loaded.
 *
 * @example Run on the scalar kernel, then go back
 * ```ts
 * import { kernelName, selectKernel } from "@q3/qwen3";
 *
 * const best = await kernelName();
 * await selectKernel("scalar"); // the reference kernel, e.g. to compare speed
 * console.log(await kernelName()); // scalar
 * await selectKernel(best);
 * ```
 */
export async function selectKernel(name: string): Promise<void> {
  const lib = await loadLibrary();
  check(lib, lib.symbols.qwen3_kernel_select(cString(name)), `select kernel ${name}`);
}

/**
 * The C library's version.
 *
 * @returns The version string, the package's for a library built with it.
 * @throws {Qwen3Error} `library` when the native library cannot be loaded.
 *
 * @example Print it
 * ```ts
 * import { nativeVersion } from "@q3/qwen3";
 *
 * console.log(await nativeVersion()); // e.g. 0.1.0
 * ```
 */
export async function nativeVersion(): Promise<string> {
  const lib = await loadLibrary();
  return readCString(lib.symbols.qwen3_version());
}
