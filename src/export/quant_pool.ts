/**
 * Block quantisation on several threads. The K-quant searches cost about a microsecond per
 * value in TypeScript (every fp32 step is a `Math.fround`), so a pool of workers takes the
 * blocks of a row chunk in equal contiguous pieces. Blocks are quantised independently, so
 * the bytes are the same whatever the thread count (the tests check it).
 * @module
 */

import { Qwen3Error } from "../errors.ts";
import { GGML_TYPE_NAMES, GGML_TYPE_TRAITS, GgmlType, quantizeQ8_0 } from "../formats/gguf.ts";
import { quantizeQ4_1, quantizeQ5_0, quantizeQ5_1 } from "../formats/block32_quants.ts";
import { quantizeQ4_K, quantizeQ5_K, quantizeQ6_K } from "../formats/kquants.ts";

/** The block quantisers by ggml type. */
const QUANTIZERS: Readonly<Record<number, (values: Float32Array) => Uint8Array>> = {
  [GgmlType.Q8_0]: (v) => quantizeQ8_0(v),
  [GgmlType.Q4_1]: (v) => quantizeQ4_1(v),
  [GgmlType.Q5_0]: (v) => quantizeQ5_0(v),
  [GgmlType.Q5_1]: (v) => quantizeQ5_1(v),
  [GgmlType.Q4_K]: (v) => quantizeQ4_K(v),
  [GgmlType.Q5_K]: (v) => quantizeQ5_K(v),
  [GgmlType.Q6_K]: (v) => quantizeQ6_K(v),
};

/**
 * Quantises fp32 values to one block type on this thread.
 *
 * @param type A quantised {@linkcode GgmlType} (Q8_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K).
 * @param values Whole blocks of values.
 * @returns The blocks, in a fresh buffer.
 * @throws {Qwen3Error} `unsupported` for another type; `invalid_argument` for partial blocks.
 */
export function quantizeBlocks(type: number, values: Float32Array): Uint8Array {
  const quantize = QUANTIZERS[type];
  if (!quantize) {
    throw new Qwen3Error(
      "unsupported",
      `cannot quantise to ggml type ${type} (${GGML_TYPE_NAMES[type] ?? "unknown"})`,
    );
  }
  return quantize(values);
}

/** Whether {@linkcode quantizeBlocks} handles `type`. */
export function isQuantizedType(type: number): boolean {
  return type in QUANTIZERS;
}

/** Values below which a chunk is quantised on the calling thread (posting costs more). */
const MIN_PARALLEL_VALUES = 1 << 16;

/**
 * A pool of workers quantising blocks; `threads` 1 runs everything on the calling thread.
 * Dispose of it (`using`) to end the workers.
 */
export class QuantPool implements Disposable {
  readonly threads: number;
  #workers: Worker[] = [];
  #pending = new Map<number, { resolve: (b: Uint8Array) => void; reject: (e: Error) => void }>();
  #nextId = 0;

  /**
   * @param threads Workers to start (1: none, quantise on the calling thread).
   * @throws {Qwen3Error} `invalid_argument` when `threads` is not an integer in 1..1024.
   */
  constructor(threads: number) {
    if (!Number.isInteger(threads) || threads < 1 || threads > 1024) {
      throw new Qwen3Error(
        "invalid_argument",
        `quantisation threads must be an integer in 1..1024, got ${threads}`,
      );
    }
    this.threads = threads;
    if (threads === 1) return;
    for (let i = 0; i < threads; i++) {
      const w = new Worker(new URL("./quant_worker.ts", import.meta.url).href, { type: "module" });
      w.onmessage = (e) => this.#settle(e.data);
      w.onerror = (e) => {
        e.preventDefault();
        this.#failAll(new Qwen3Error("io", `quantisation worker failed: ${e.message}`));
      };
      this.#workers.push(w);
    }
  }

  #settle(msg: { id: number; bytes?: Uint8Array; error?: string }) {
    const p = this.#pending.get(msg.id);
    if (!p) return;
    this.#pending.delete(msg.id);
    if (msg.bytes) p.resolve(msg.bytes);
    else p.reject(new Qwen3Error("invalid_argument", msg.error ?? "quantisation failed"));
  }

  #failAll(e: Error) {
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }

  /**
   * Quantises `values` (whole blocks) to `type`, split over the workers by whole blocks.
   *
   * @param type A type {@linkcode quantizeBlocks} handles.
   * @param values The values; not modified.
   * @returns The blocks, in order, in a fresh buffer.
   * @throws {Qwen3Error} as {@linkcode quantizeBlocks} does; `io` when a worker dies.
   */
  async quantize(type: number, values: Float32Array): Promise<Uint8Array> {
    const block = GGML_TYPE_TRAITS[type];
    if (this.#workers.length === 0 || values.length < MIN_PARALLEL_VALUES || !block) {
      return quantizeBlocks(type, values);
    }
    if (values.length % block.values !== 0) return quantizeBlocks(type, values); // throws
    const blocks = values.length / block.values;
    const per = Math.ceil(blocks / this.#workers.length);
    const parts: Promise<Uint8Array>[] = [];
    for (let i = 0; i * per < blocks; i++) {
      const from = i * per * block.values;
      const to = Math.min(blocks, (i + 1) * per) * block.values;
      const piece = values.slice(from, to);
      const id = this.#nextId++;
      parts.push(
        new Promise((resolve, reject) => this.#pending.set(id, { resolve, reject })),
      );
      this.#workers[i].postMessage({ id, type, values: piece }, [piece.buffer]);
    }
    const pieces = await Promise.all(parts);
    const out = new Uint8Array(blocks * block.bytes);
    let at = 0;
    for (const p of pieces) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Ends the workers; pending work is rejected. */
  [Symbol.dispose](): void {
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
    this.#failAll(new Qwen3Error("io", "quantisation pool closed"));
  }
}
