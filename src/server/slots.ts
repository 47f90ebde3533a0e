/**
 * Generation slots: at most `parallel` requests generate at once (their forward passes
 * take turns on the model's lock, token by token); up to `queue` more wait in order, and
 * beyond that a request is refused with 503 and `Retry-After`.
 * @module
 */

import { ApiError } from "./errors.ts";

/** A held slot; release it (or `using`) when the generation ends. */
export interface Slot extends Disposable {
  /** The slot's index, 0 .. parallel-1. */
  readonly id: number;
}

interface Waiter {
  grant: (id: number) => void;
}

/** A fixed set of slots with a bounded wait queue. */
export class SlotPool {
  /** How many generations run at once. */
  readonly parallel: number;
  /** How many requests may wait for a slot. */
  readonly queueLimit: number;
  #free: number[];
  #waiting: Waiter[] = [];

  /**
   * Makes `parallel` free slots and an empty line.
   *
   * @param parallel Slots (an integer >= 1).
   * @param queueLimit Waiting requests allowed (an integer >= 0).
   */
  constructor(parallel: number, queueLimit: number) {
    this.parallel = parallel;
    this.queueLimit = queueLimit;
    this.#free = Array.from({ length: parallel }, (_, i) => parallel - 1 - i);
  }

  /** Slots in use. */
  get busy(): number {
    return this.parallel - this.#free.length;
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#waiting.length;
  }

  /**
   * Takes a slot, waiting in line when none is free.
   *
   * @param signal Leaves the line when aborted (a client that went away).
   * @param pick Chooses among the free slots' ids (default: any); a request that waited
   * takes the slot freed for it.
   * @returns The slot.
   * @throws {ApiError} 503 with `Retry-After` when the line is full; the signal's reason
   * when aborted while waiting.
   */
  acquire(signal?: AbortSignal, pick?: (free: readonly number[]) => number): Promise<Slot> {
    signal?.throwIfAborted();
    if (this.#free.length > 0) {
      const id = pick ? pick(this.#free) : this.#free[this.#free.length - 1];
      this.#free.splice(this.#free.indexOf(id), 1);
      return Promise.resolve(this.#slot(id));
    }
    if (this.#waiting.length >= this.queueLimit) {
      return Promise.reject(
        new ApiError(
          503,
          "server_busy",
          `all ${this.parallel} slots are busy and ${this.queueLimit} requests are waiting; ` +
            "retry later",
          { headers: { "retry-after": "1" } },
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        grant: (slot) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(this.#slot(slot));
        },
      };
      const onAbort = () => {
        const at = this.#waiting.indexOf(waiter);
        if (at >= 0) this.#waiting.splice(at, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  #slot(id: number): Slot {
    let released = false;
    return {
      id,
      [Symbol.dispose]: () => {
        if (released) return;
        released = true;
        const next = this.#waiting.shift();
        if (next) next.grant(id);
        else this.#free.push(id);
      },
    };
  }
}
