/**
 * demoModelPath(): the shipped demo model from a checkout, and from a remote module (the
 * repository served over http on 127.0.0.1, as JSR would serve the package) downloaded once
 * into QWEN3_CACHE_DIR and loadable from there.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { demoModelPath, Qwen3, Qwen3Error } from "../mod.ts";
import { demoModelPathAt } from "../src/api/demo.ts";

const repoRoot = new URL("../", import.meta.url);
const shipped = fileURLToPath(new URL("models/demo/", repoRoot));

/** The files a download must bring, as the package publishes them. */
const DOWNLOADED = [
  "model.bin",
  "tokenizer.json",
  "model.bin.tokenizer",
  "model.bin.template",
  "model.bin.template.with-thinking",
  "model.bin.template.with-system",
  "model.bin.template.with-system-and-thinking",
  "README.md",
  "SOURCES.md",
];

Deno.test("demoModelPath: from a file: module, the shipped model.bin", async () => {
  const path = await demoModelPath();
  assert.equal(path, `${shipped}model.bin`);
  assert.ok((await Deno.stat(path)).isFile);
});

Deno.test("demoModelPath: a missing local model is an io error naming the path", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qwen3_demo_missing_" });
  try {
    await assert.rejects(
      demoModelPathAt(new URL(`file://${dir}/`)),
      (e) => e instanceof Qwen3Error && e.code === "io" && e.message.includes(`${dir}/models/demo`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Serves the repository read-only, logging the demo-model requests. */
function serveRepo(requests: string[]) {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      if (path.startsWith("/models/demo/")) requests.push(path.slice("/models/demo/".length));
      try {
        if (path.includes("..")) throw new Error("outside the repository");
        const body = await Deno.readFile(new URL(`.${path}`, repoRoot));
        const type = path.endsWith(".json")
          ? "application/json"
          : path.endsWith(".ts")
          ? "application/typescript"
          : "application/octet-stream";
        return new Response(body, { headers: { "content-type": type } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    async close() {
      ac.abort();
      await server.finished;
    },
  };
}

Deno.test("demoModelPath: from a remote module, downloaded once into the cache", async () => {
  const dir = await Deno.makeTempDir({ prefix: "qwen3_demo_remote_" });
  const requests: string[] = [];
  const server = serveRepo(requests);
  try {
    const cache = `${dir}/cache`;
    const host = new URL(server.url).host;
    const run = async () => {
      const r = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          "--no-lock",
          `--allow-import=${host}`,
          `const m = await import(${JSON.stringify(`${server.url}/mod.ts`)});
           console.log(await m.demoModelPath());`,
        ],
        env: { QWEN3_CACHE_DIR: cache, DENO_DIR: `${dir}/deno_dir` },
        cwd: fileURLToPath(repoRoot),
        stdout: "piped",
        stderr: "piped",
      }).output();
      const dec = new TextDecoder();
      assert.equal(r.code, 0, dec.decode(r.stderr));
      return dec.decode(r.stdout).trim();
    };
    const path = await run();
    assert.equal(path, `${cache}/models/demo/model.bin`);
    assert.deepEqual(requests.toSorted(), DOWNLOADED.toSorted());
    for (const file of DOWNLOADED) {
      assert.deepEqual(
        await Deno.readFile(`${cache}/models/demo/${file}`),
        await Deno.readFile(`${shipped}${file}`),
        file,
      );
    }
    // A second run reuses the cached files.
    assert.equal(await run(), path);
    assert.equal(requests.length, DOWNLOADED.length);
    // And the downloaded copy loads with its tokenizer and templates.
    using model = await Qwen3.load(path, { engine: "ts", contextLength: 64 });
    assert.equal(model.config.nLayers, 4);
    assert.equal(model.tokenizer.source, `${cache}/models/demo/tokenizer.json`);
    assert.equal(
      model.templates.plain,
      await Deno.readTextFile(`${shipped}model.bin.template`),
    );
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});
