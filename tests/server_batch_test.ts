/**
 * The server's slots decode together: with `--parallel 2`, two concurrent greedy requests
 * give the texts they give one after the other (their decode steps ran as batched passes
 * of the C engine, bit-identical to separate steps), and `/metrics` shows the batches.
 */

import assert from "node:assert/strict";
import { demoModelPath } from "../src/api/demo.ts";
import { Qwen3 } from "../src/api/qwen3.ts";
import { startServer } from "../src/server/server.ts";

Deno.test("server: concurrent greedy requests decode together, with the sequential texts", async () => {
  using model = await Qwen3.load(await demoModelPath(), { contextLength: 256, threads: 1 });
  const server = startServer(model, { port: 0, parallel: 2, metrics: true, promptCache: false });
  try {
    await server.ready;
    const complete = async (prompt: string) => {
      const res = await fetch(`${server.url}/v1/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt, max_tokens: 24, temperature: 0 }),
      });
      assert.equal(res.status, 200);
      return (await res.json()).choices[0].text as string;
    };
    const prompts = ["The sea is", "Once upon a time there was"];
    const sequential: string[] = [];
    for (const p of prompts) sequential.push(await complete(p));
    const concurrent = await Promise.all(prompts.map(complete));
    assert.deepEqual(concurrent, sequential);
    assert.ok(sequential.every((t) => t.length > 0), "the demo model answers something");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const value = (name: string) => Number(metrics.match(new RegExp(`^${name} (\\S+)$`, "m"))?.[1]);
    assert.equal(value("qwen3_decode_batch_size_max"), 2, metrics);
    assert.ok(value("qwen3_decode_batch_steps_total") > value("qwen3_decode_batches_total"));
    assert.ok(value("qwen3_decode_batch_size_mean") > 1);
  } finally {
    await server.shutdown();
  }
});
