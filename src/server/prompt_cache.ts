/**
 * The prompt cache: each slot keeps its session (KV cache) and the token ids it holds
 * between requests. A request goes to the free slot that shares the longest prefix with its
 * prompt, rewinds that session to the prefix and prefills only the rest. The engines give
 * the same logits, bit for bit, whether a prompt is prefilled in one pass or in pieces, so
 * a reply is the same with the cache as without it.
 * @module
 */

import type { Generation } from "../api/generate.ts";
import type { Qwen3, Qwen3GenerateOptions } from "../api/qwen3.ts";
import type { EngineSession } from "../types.ts";

/**
 * Length of the longest common prefix of two token sequences.
 *
 * @param a One sequence.
 * @param b The other.
 * @returns How many leading tokens they share.
 */
export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** What one slot keeps between requests. */
interface SlotState {
  /** Opened on the slot's first request; lives until the cache is disposed. */
  session?: EngineSession;
  /** The last run's prompt; with its sampled tokens, what the session may hold. */
  prompt: readonly number[];
  /** The last run (its sampled tokens), undefined before the first. */
  run?: Generation;
  /** When the slot was last used (a counter), to evict the least recently used. */
  used: number;
}

/** Per-slot sessions and the tokens they hold. */
export class PromptCache {
  /** False: every request runs in a fresh session, as `Qwen3.generate` does. */
  readonly enabled: boolean;
  #model: Qwen3;
  #slots: SlotState[];
  #clock = 0;

  /**
   * Makes an empty cache for `parallel` slots; sessions are opened when first used.
   *
   * @param model The model the sessions run.
   * @param parallel Slots.
   * @param enabled Whether to keep sessions between requests.
   */
  constructor(model: Qwen3, parallel: number, enabled: boolean) {
    this.#model = model;
    this.enabled = enabled;
    this.#slots = Array.from({ length: parallel }, () => ({ prompt: [], used: 0 }));
  }

  /**
   * The tokens slot `id` holds in its KV cache: the last prompt and the sampled tokens fed
   * after it, up to the session's position (a run that ended early fed fewer).
   */
  held(id: number): readonly number[] {
    const s = this.#slots[id];
    if (!s.session) return [];
    try {
      const all = s.run ? [...s.prompt, ...s.run.tokens] : s.prompt;
      return all.slice(0, s.session.position);
    } catch {
      // The session was disposed (with its model): start the slot afresh.
      s.session = undefined;
      return [];
    }
  }

  /**
   * Picks the free slot for a prompt: the one sharing the longest prefix with it, when that
   * prefix is at least half of what the slot holds (otherwise a short shared opening, such
   * as `<|im_start|>`, would evict another conversation); failing that, the least recently
   * used (an empty slot first).
   *
   * @param free Ids of the free slots (not empty).
   * @param tokens The prompt.
   * @returns One of `free`.
   */
  pick(free: readonly number[], tokens: readonly number[]): number {
    let best = -1;
    let bestShared = 0;
    if (this.enabled) {
      for (const id of free) {
        const held = this.held(id);
        const shared = commonPrefix(held, tokens);
        if (shared > bestShared && 2 * shared >= held.length) {
          best = id;
          bestShared = shared;
        }
      }
    }
    if (best >= 0) return best;
    return free.reduce((a, b) => this.#slots[b].used < this.#slots[a].used ? b : a);
  }

  /**
   * Starts a generation of `tokens` in slot `id` (which the caller holds until the run has
   * ended): its session is rewound to the prefix it shares with them, at most all but the
   * last token (whose logits are needed), and the rest is prefilled. The run's
   * `stats.startPosition` is the number of prompt tokens taken from the cache.
   *
   * @param id The slot.
   * @param tokens The prompt (not empty).
   * @param opts Sampling, token cap and signal.
   * @returns The generation, not started.
   */
  generate(id: number, tokens: readonly number[], opts: Qwen3GenerateOptions): Generation {
    if (!this.enabled) return this.#model.generate(tokens, opts);
    const s = this.#slots[id];
    s.used = ++this.#clock;
    const reuse = Math.min(commonPrefix(this.held(id), tokens), tokens.length - 1);
    s.session ??= this.#model.engine.createSession();
    s.session.rewind(reuse);
    s.prompt = tokens;
    s.run = this.#model.generate(tokens.slice(reuse), {
      ...opts,
      session: s.session,
      history: tokens.slice(0, reuse), // searched for speculative decoding's drafts
    });
    return s.run;
  }

  /** Frees the sessions (once no generation runs). */
  [Symbol.dispose](): void {
    for (const s of this.#slots) {
      s.session?.[Symbol.dispose]();
      s.session = undefined;
      s.run = undefined;
    }
  }
}
