/**
 * `GET /metrics` (with `--metrics`): counters and gauges in Prometheus's text format,
 * version 0.0.4, as llama-server's `/metrics` offers them.
 * @module
 */

import type { Outcome } from "./completion.ts";
import type { SlotPool } from "./slots.ts";
import type { DecodeBatchStats } from "../../ffi/decode_batcher.ts";

/** The server's counters; requests are counted by route and status. */
export class Metrics {
  #requests = new Map<string, number>();
  #promptTokens = 0;
  #cachedTokens = 0;
  #generatedTokens = 0;
  #prefillTps = 0;
  #decodeTps = 0;

  /**
   * Counts a reply.
   *
   * @param endpoint The route's path, or "other" for a path no route serves.
   * @param status The reply's HTTP status.
   */
  request(endpoint: string, status: number): void {
    const key = `endpoint="${endpoint}",status="${status}"`;
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
  }

  /**
   * Counts a finished generation's tokens and keeps its speeds.
   *
   * @param o The generation's outcome.
   */
  generation(o: Outcome): void {
    this.#promptTokens += o.promptTokens;
    this.#cachedTokens += o.cachedTokens;
    this.#generatedTokens += o.completionTokens;
    if (o.prefillTokensPerSecond > 0) this.#prefillTps = o.prefillTokensPerSecond;
    if (o.decodeTokensPerSecond > 0) this.#decodeTps = o.decodeTokensPerSecond;
  }

  /**
   * The exposition text.
   *
   * @param pool The slots (busy and waiting now).
   * @param batch The C engine's batched decode counts (absent on the TypeScript engine,
   * which does not batch).
   * @returns Prometheus text format.
   */
  render(pool: SlotPool, batch?: DecodeBatchStats): string {
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [string, number][]) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) lines.push(`${name}${labels ? `{${labels}}` : ""} ${v}`);
    };
    metric(
      "qwen3_requests_total",
      "counter",
      "HTTP requests answered, by endpoint and status.",
      [...this.#requests].sort(([a], [b]) => a < b ? -1 : 1),
    );
    metric("qwen3_prompt_tokens_total", "counter", "Prompt tokens of finished generations.", [[
      "",
      this.#promptTokens,
    ]]);
    metric(
      "qwen3_prompt_tokens_cached_total",
      "counter",
      "Prompt tokens taken from a slot's KV cache instead of prefilled.",
      [["", this.#cachedTokens]],
    );
    metric("qwen3_generated_tokens_total", "counter", "Tokens generated.", [[
      "",
      this.#generatedTokens,
    ]]);
    metric(
      "qwen3_prefill_tokens_per_second",
      "gauge",
      "Prefill speed of the last generation that prefilled.",
      [["", round(this.#prefillTps)]],
    );
    metric(
      "qwen3_decode_tokens_per_second",
      "gauge",
      "Decode speed of the last generation that generated.",
      [["", round(this.#decodeTps)]],
    );
    metric("qwen3_slots_busy", "gauge", "Slots generating now.", [["", pool.busy]]);
    metric("qwen3_slots_total", "gauge", "Slots (--parallel).", [["", pool.parallel]]);
    metric("qwen3_queue_length", "gauge", "Requests waiting for a slot.", [["", pool.queued]]);
    if (batch) {
      metric(
        "qwen3_decode_batches_total",
        "counter",
        "Batched decode passes: one-token steps of the slots that ran together, each weight read once.",
        [["", batch.batches]],
      );
      metric(
        "qwen3_decode_batch_steps_total",
        "counter",
        "One-token decode steps those passes ran (the sum of the batch sizes).",
        [["", batch.steps]],
      );
      metric(
        "qwen3_decode_batch_size_mean",
        "gauge",
        "Mean decode batch size so far: steps per pass (1 when the slots never decoded together).",
        [["", round(batch.batches ? batch.steps / batch.batches : 0)]],
      );
      metric("qwen3_decode_batch_size_max", "gauge", "The largest decode batch so far.", [[
        "",
        batch.largest,
      ]]);
    }
    return lines.join("\n") + "\n";
  }
}

function round(v: number): number {
  return Math.round(v * 100) / 100;
}
