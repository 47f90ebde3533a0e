/**
 * Stop strings over streamed text: text that may be the start of a stop string is held
 * back until the next piece decides, so a stop string is never split across chunks and
 * nothing after it is ever sent.
 * @module
 */

/**
 * Filters one stream of text (one per kind: reasoning and answer are filtered apart).
 *
 * @example
 * ```ts
 * import { StopFilter } from "./stop.ts";
 * const f = new StopFilter(["END"]);
 * console.log(f.push("abc E"), f.push("NDxyz"), f.stopped); // "abc " "" true
 * ```
 */
export class StopFilter {
  #stops: readonly string[];
  #held = "";
  #stopped = false;

  /**
   * Starts an empty stream.
   *
   * @param stops The stop strings (non-empty).
   */
  constructor(stops: readonly string[]) {
    this.#stops = stops;
  }

  /** True once a stop string was seen: the caller ends generation. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Adds generated text.
   *
   * @param text The next piece.
   * @returns The text now safe to send (possibly empty).
   */
  push(text: string): string {
    if (this.#stopped) return "";
    const all = this.#held + text;
    let cut = -1;
    for (const s of this.#stops) {
      const at = all.indexOf(s);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.#stopped = true;
      this.#held = "";
      return all.slice(0, cut);
    }
    // Hold back the longest tail that begins some stop string.
    let keep = 0;
    for (const s of this.#stops) {
      for (let n = Math.min(s.length - 1, all.length); n > keep; n--) {
        if (all.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.#held = all.slice(all.length - keep);
    return all.slice(0, all.length - keep);
  }

  /**
   * Ends the stream.
   *
   * @returns The text held back (it did not become a stop string).
   */
  flush(): string {
    const rest = this.#stopped ? "" : this.#held;
    this.#held = "";
    return rest;
  }
}
