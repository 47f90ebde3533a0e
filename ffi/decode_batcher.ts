/**
 * Coalesces the one-token forward passes of several sessions of one C model into batched
 * decode steps (`qwen3_context_decode_batch`, docs/numerics.md#batched-decode): each weight
 * is read once for all of them, and every session gets the logits its own step would have
 * given, bit for bit. Callers change nothing: `CSession.forward` of one token queues its
 * step here.
 *
 * A batch starts at the `setImmediate` after the first step is queued (microseconds, not
 * a timer's millisecond), so every session whose step is issued in the same turn of the
 * event loop joins it; steps queued while a batch runs wait for it. When a session of the
 * last batch has not queued its next step yet, the batch waits for it once, one timer
 * turn: the sessions that batch answered can then join the ones already waiting (instead
 * of two groups taking turns forever, each alone), while a lone session, or sessions that
 * keep stepping together, never wait.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { Qwen3Library } from "./symbols.ts";

/** Counts of one model's batched decode steps, since it was loaded. */
export interface DecodeBatchStats {
  /** Native batched passes run (`qwen3_context_decode_batch` calls). */
  batches: number;
  /** One-token steps they ran: the sum of the batch sizes. */
  steps: number;
  /** The largest batch so far. */
  largest: number;
}

/** A context's address, as a set key and for the C array of pointers. */
function key(ctx: Deno.PointerObject): bigint {
  return BigInt(Deno.UnsafePointer.value(ctx));
}

interface QueuedStep {
  ctx: Deno.PointerObject;
  token: number;
  resolve: (status: number) => void;
  reject: (e: unknown) => void;
}

/** The queue of one model's pending one-token steps. Internal to the C engine. */
export class DecodeBatcher {
  #lib: Qwen3Library;
  #queue: QueuedStep[] = [];
  #running = false;
  #scheduled = false;
  #waited = false; // the current wait for the last batch's sessions was spent
  #last = new Set<bigint>(); // the contexts of the last batch
  #stats: DecodeBatchStats = { batches: 0, steps: 0, largest: 0 };

  /** @param lib The library the model was loaded with. */
  constructor(lib: Qwen3Library) {
    this.#lib = lib;
  }

  /** A copy of the counts so far. */
  get stats(): DecodeBatchStats {
    return { ...this.#stats };
  }

  /**
   * Queues one step: `token` at the context's position. The caller has validated the id
   * and the room left, and keeps the context busy until the promise settles.
   *
   * @returns The step's status (`QWEN3_OK` or a negative status of its own).
   */
  step(ctx: Deno.PointerObject, token: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ ctx, token, resolve, reject });
      this.#schedule();
    });
  }

  #schedule(): void {
    if (this.#running || this.#scheduled || this.#queue.length === 0) return;
    this.#scheduled = true;
    setImmediate(() => this.#tick());
  }

  #tick(): void {
    this.#scheduled = false;
    if (this.#running || this.#queue.length === 0) return;
    if (!this.#waited) {
      const queued = new Set(this.#queue.map((s) => key(s.ctx)));
      if ([...this.#last].some((c) => !queued.has(c))) {
        this.#waited = true;
        this.#scheduled = true;
        setTimeout(() => this.#tick(), 0);
        return;
      }
    }
    this.#flush();
  }

  async #flush(): Promise<void> {
    const steps = this.#queue.splice(0);
    this.#waited = false;
    this.#last = new Set(steps.map((s) => key(s.ctx)));
    this.#running = true;
    try {
      let status = await this.#run(steps);
      if (status === 0) {
        for (const s of steps) s.resolve(0);
      } else if (steps.length === 1) {
        steps[0].resolve(status);
      } else {
        // A failed batch changed nothing: run each step alone, so each gets its own status.
        for (const s of steps) {
          status = await this.#run([s]);
          s.resolve(status);
        }
      }
    } catch (e) {
      for (const s of steps) s.reject(e);
    } finally {
      this.#running = false;
      this.#schedule();
    }
  }

  async #run(steps: QueuedStep[]): Promise<number> {
    const n = steps.length;
    const ptrs = new BigUint64Array(n);
    const tokens = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      ptrs[i] = key(steps[i].ctx);
      tokens[i] = steps[i].token;
    }
    const status = await this.#lib.symbols.qwen3_context_decode_batch_nonblocking(
      new Uint8Array(ptrs.buffer),
      tokens,
      n,
    );
    if (status === 0) {
      this.#stats.batches++;
      this.#stats.steps += n;
      if (n > this.#stats.largest) this.#stats.largest = n;
    }
    return status;
  }
}
