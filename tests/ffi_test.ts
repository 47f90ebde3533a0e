/**
 * The Deno binding of the C engine: library resolution, struct layouts (read back from a
 * model whose shape we chose), errors carrying the C text, sessions and dispose rules.
 * Needs the library built (`deno task build`): these tests fail, not skip, without it.
 */

import assert from "node:assert/strict";
import meta from "../deno.json" with { type: "json" };
import { CEngine, cpuFeatures, kernelName, nativeVersion, selectKernel } from "../ffi/c_engine.ts";
import {
  libraryFileName,
  libraryPath,
  loadLibrary,
  localCandidates,
  targetDir,
} from "../ffi/library.ts";
import { Qwen3Error } from "../src/errors.ts";
import { argmax, Sampler } from "../src/text/sampler.ts";
import { Tokenizer } from "../src/text/tokenizer.ts";
import type { SamplerOptions } from "../src/types.ts";
import { writeRandomModel } from "./helpers/random_model.ts";

const dir = await Deno.makeTempDir({ prefix: "qwen3_ffi_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
const modelPath = await writeRandomModel(`${dir}/tied`, {
  dim: 64,
  hiddenDim: 128,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 16,
  seqLen: 48,
  groupSize: 16,
  seed: 11,
});
const tokenizer = await Tokenizer.load(modelPath);
const repoRoot = new URL("../", import.meta.url);

async function rejects(p: Promise<unknown>, code: string, ...fragments: string[]) {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof Qwen3Error, `expected a Qwen3Error, got ${e}`);
    assert.equal(e.code, code, e.message);
    for (const f of fragments) assert.ok(e.message.includes(f), `"${e.message}" lacks "${f}"`);
    return e;
  }
  assert.fail("expected a rejection");
}

Deno.test("library: opens, and the C version is the package version", async () => {
  await loadLibrary();
  assert.ok(libraryPath()?.endsWith(libraryFileName()));
  assert.equal(await nativeVersion(), meta.version);
});

Deno.test("library: search paths follow the OS/arch naming of zig build cross", () => {
  assert.equal(targetDir("linux", "x86_64"), "linux-x86_64");
  assert.equal(targetDir("darwin", "aarch64"), "macos-aarch64");
  assert.equal(targetDir("windows", "x86_64"), "windows-x86_64");
  assert.equal(libraryFileName("windows"), "qwen3_inference.dll");
  assert.equal(libraryFileName("darwin"), "libqwen3_inference.dylib");
  const c = localCandidates(new URL("file:///repo/"));
  const file = libraryFileName();
  assert.deepEqual(
    c.map((p) => p.replaceAll("\\", "/").replace(/^[A-Za-z]:/, "")),
    [
      `/repo/zig-out/lib/${file}`,
      `/repo/zig-out/lib/${targetDir()}/${file}`,
      `/repo/lib/${targetDir()}/${file}`,
    ],
  );
});

async function denoEval(code: string, env: Record<string, string>) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-lock", code],
    env,
    cwd: decodeURIComponent(repoRoot.pathname),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

Deno.test("library: a bad QWEN3_LIB fails with the path and the fix", async () => {
  const missing = `${dir}/no_such_library.so`;
  const r = await denoEval(
    `import { loadLibrary } from "./ffi/library.ts";
     try { await loadLibrary(); console.log("loaded"); }
     catch (e) { console.log(e.code + " " + e.message); }`,
    { QWEN3_LIB: missing },
  );
  assert.match(r.stdout, /^library /, r.stderr);
  assert.ok(r.stdout.includes(missing), r.stdout);
  assert.ok(r.stdout.includes("deno task build"), r.stdout);
});

Deno.test("library: from a remote (http) module it is downloaded into the cache and opened", async () => {
  // Serve the repository as a "remote" package, with the built library where a published
  // package ships it (lib/<os>-<arch>/).
  await loadLibrary();
  const built = libraryPath()!;
  const shippedPath = `/lib/${targetDir()}/${libraryFileName()}`;
  const ac = new AbortController();
  let served = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      try {
        if (path === shippedPath) {
          served++;
          return new Response(await Deno.readFile(built));
        }
        const body = await Deno.readFile(new URL(`.${path}`, repoRoot));
        const type = path.endsWith(".json") ? "application/json" : "application/typescript";
        return new Response(body, { headers: { "content-type": type } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  try {
    const cache = `${dir}/cache`;
    const url = `http://127.0.0.1:${server.addr.port}/ffi/c_engine.ts`;
    const r = await denoEval(
      `const m = await import(${JSON.stringify(url)});
       const lib = await import(${JSON.stringify(url.replace("c_engine", "library"))});
       console.log(await m.nativeVersion());
       console.log(lib.libraryPath());`,
      { QWEN3_CACHE_DIR: cache, DENO_DIR: `${dir}/deno_dir` },
    );
    assert.equal(r.code, 0, r.stderr);
    const [version, path] = r.stdout.trim().split("\n");
    assert.equal(version, meta.version);
    assert.equal(path, `${cache}/${libraryFileName()}`);
    assert.equal(served, 1);
    assert.deepEqual(await Deno.readFile(path), await Deno.readFile(built));
  } finally {
    ac.abort();
    await server.finished;
  }
});

Deno.test("cpu features and kernel tiers", async () => {
  const features = await cpuFeatures();
  assert.ok(Array.isArray(features));
  for (const f of features) assert.match(f, /^[a-z0-9._-]+$/);
  const initial = await kernelName();
  assert.ok(initial.length > 0);
  try {
    await selectKernel("scalar");
    assert.equal(await kernelName(), "scalar");
    await rejects(selectKernel("no-such-tier"), "unsupported", "no-such-tier");
    assert.equal(await kernelName(), "scalar");
  } finally {
    await selectKernel(initial);
  }
  assert.equal(await kernelName(), initial);
});

Deno.test("model config and info structs read back the shape written", async () => {
  using engine = await CEngine.load(modelPath);
  const c = engine.config;
  assert.deepEqual(
    [c.format, c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.headDim],
    ["qwen3.c", 64, 128, 2, 4, 2, 16],
  );
  assert.deepEqual([c.vocabSize, c.seqLen, c.groupSize, c.sharedClassifier], [
    151936,
    48,
    16,
    true,
  ]);
  assert.equal(c.ropeTheta, 1e6);
  assert.equal(c.rmsEps, Math.fround(1e-6));
  assert.equal(engine.contextLength, 48);
  const info = engine.info;
  assert.equal(info.fileSize, (await Deno.stat(modelPath)).size);
  assert.equal(info.eosId, 151643);
  assert.equal(info.imStartId, 151644);
  assert.equal(info.imEndId, 151645);
  assert.equal(info.thinkId, 151667);
  assert.equal(info.endThinkId, 151668);
  assert.equal(info.nTokens, 151669);
  assert.equal(info.exactTokenizer, true);
  assert.ok(engine.template(0).includes("%s"));
  assert.ok(engine.template(3).indexOf("%s") < engine.template(3).lastIndexOf("%s"));
});

Deno.test("contextLength at load is clamped to the file's; sessions inherit it", async () => {
  using short = await CEngine.load(modelPath, { contextLength: 20 });
  assert.equal(short.contextLength, 20);
  using s = short.createSession();
  assert.equal(s.contextLength, 20);
  using s2 = short.createSession(8);
  assert.equal(s2.contextLength, 8);
  using long = await CEngine.load(modelPath, { contextLength: 100000 });
  assert.equal(long.contextLength, 48);
});

Deno.test("threads option reaches qwen3_model_set_threads", async () => {
  using engine = await CEngine.load(modelPath, { threads: 1 });
  assert.equal(engine.threads, 1);
  engine.setThreads(2);
  assert.equal(engine.threads, 2);
  assert.throws(() => engine.setThreads(-1), Qwen3Error);
});

Deno.test("a missing model file: Qwen3Error 'io' with the C engine's text", async () => {
  const missing = `${dir}/absent/model.bin`;
  await rejects(CEngine.load(missing), "io", missing);
});

Deno.test("corrupt model files: Qwen3Error 'format' naming the file", async () => {
  const garbage = `${dir}/garbage.bin`;
  await Deno.writeFile(garbage, new Uint8Array(400).fill(7));
  await rejects(CEngine.load(garbage), "format", garbage);

  const truncated = `${dir}/truncated.bin`;
  const bytes = await Deno.readFile(modelPath);
  await Deno.writeFile(truncated, bytes.subarray(0, bytes.length - 100));
  await rejects(CEngine.load(truncated), "format", truncated);

  const tooLong = `${dir}/too_long.bin`;
  const longer = new Uint8Array(bytes.length + 1);
  longer.set(bytes);
  await Deno.writeFile(tooLong, longer);
  await rejects(CEngine.load(tooLong), "format", tooLong);
});

Deno.test("C tokenizer agrees with the TypeScript tokenizer", async () => {
  using engine = await CEngine.load(modelPath);
  for (
    const text of [
      "Hello world",
      " Hello world",
      "20250101",
      "naïve café 日本語 🤖\n\n  x",
      "<|im_end|> and <think>",
    ]
  ) {
    assert.deepEqual(engine.tokenize(text), tokenizer.encode(text), text);
    assert.deepEqual(
      engine.tokenize(text, { special: true }),
      tokenizer.encode(text, { special: true }),
      text,
    );
  }
  assert.deepEqual(engine.tokenize("Hello world"), [9707, 1879]);
  assert.deepEqual(engine.tokenBytes(9707), new TextEncoder().encode("Hello"));
  assert.deepEqual(engine.tokenBytes(151645), new TextEncoder().encode("<|im_end|>"));
  assert.throws(() => engine.tokenBytes(-3), Qwen3Error);
  const long = "word ".repeat(3000);
  assert.deepEqual(engine.tokenize(long), tokenizer.encode(long));
});

Deno.test("session: forward returns a logits view; position, rewind, context full", async () => {
  using engine = await CEngine.load(modelPath);
  using s = engine.createSession();
  assert.equal(s.position, 0);
  const prompt = tokenizer.encode("Hello world, how are you?");
  const logits = await s.forward(prompt);
  assert.equal(logits.length, 151936);
  assert.ok(logits.every(Number.isFinite));
  assert.equal(s.position, prompt.length);
  const first = logits.slice();

  // Rewind and rerun: the same logits (the KV cache really was forgotten and rebuilt).
  s.rewind(0);
  assert.equal(s.position, 0);
  const again = await s.forward(prompt);
  assert.deepEqual(again, first);

  // One-by-one equals all-at-once.
  s.rewind(0);
  let step: Float32Array = new Float32Array();
  for (const t of prompt) step = await s.forward([t]);
  assert.deepEqual(Array.from(step), Array.from(first));

  await rejects(s.forward([151936]), "invalid_argument", "151936");
  await rejects(s.forward([]), "invalid_argument");
  const fill = new Array(s.contextLength - s.position).fill(9707);
  await s.forward(fill);
  assert.equal(s.position, s.contextLength);
  await rejects(s.forward([9707]), "context_full", "context");
  assert.equal(s.position, s.contextLength);
  assert.throws(() => s.rewind(s.contextLength + 1), Qwen3Error);
});

async function samplerLogits(): Promise<Float32Array> {
  using engine = await CEngine.load(modelPath);
  using s = engine.createSession();
  return (await s.forward(tokenizer.encode("The quick brown fox"))).slice();
}

/** The C sampler (configured through the Qwen3SamplerConfig buffer) against the TS one. */
async function compareSamplers(logits: Float32Array, opts: SamplerOptions, draws = 20) {
  using engine = await CEngine.load(modelPath);
  using s = engine.createSession();
  await s.forward(tokenizer.encode("The quick brown fox"));
  s.setSampler(opts);
  const ts = new Sampler(opts, 151936);
  const label = JSON.stringify(opts, (_, v) => typeof v === "bigint" ? `${v}n` : v);
  for (let i = 0; i < draws; i++) assert.equal(s.sample(), ts.sample(logits), `${label} draw ${i}`);
}

Deno.test("C sampler: greedy, top-p, top-k and min-p (struct layout) match the TS sampler", async () => {
  const logits = await samplerLogits();
  await compareSamplers(logits, { temperature: 0 });
  await compareSamplers(logits, { temperature: 1.2, topP: 0.95, seed: 7 });
  await compareSamplers(logits, { temperature: 1.5, topP: 0.5, seed: 42n });
  await compareSamplers(logits, {
    temperature: 2,
    topP: 1,
    topK: 20,
    minP: 0.01,
    seed: 12345678901234n,
  });
  await compareSamplers(logits, { temperature: 0.9, topK: 50, presencePenalty: 1.5, seed: 3 });
  // frequency_penalty sits at offset 20 (what was padding): a wrong offset changes draws.
  await compareSamplers(logits, { temperature: 0.9, topK: 50, frequencyPenalty: 0.7, seed: 3 });
});

Deno.test("C sampler: plain temperature sampling (no filter) matches the TS sampler", async () => {
  // docs/sampling.md#algorithm / csrc/src/sampler.c step 5: walk ids in index order with the unscaled coin.
  await compareSamplers(await samplerLogits(), { temperature: 1.5, topP: 0, seed: 42n });
});

Deno.test("CSession.sampler: pick and record on any logits give the TS sampler's tokens", async () => {
  // What the generation loop does with it on the C engine: picks from the session's own
  // logits (a view of C memory), from copies, from masked copies (a refused pick), and
  // records only kept tokens; the penalties and the coins must follow the TS sampler's.
  const settings: SamplerOptions[] = [
    { temperature: 0.6, topP: 0.95, topK: 20, seed: 11 },
    { temperature: 1, topP: 0.9, presencePenalty: 1.2, frequencyPenalty: 0.4, seed: 5n },
    { temperature: 0.8, minP: 0.05, seed: 99 },
    { temperature: 1.3, topP: 0, seed: 3 },
  ];
  using engine = await CEngine.load(modelPath);
  for (const opts of settings) {
    using s = engine.createSession();
    let logits = await s.forward(tokenizer.encode("Once upon a time"));
    const c = s.sampler(opts);
    const ts = new Sampler(opts, 151936);
    for (let step = 0; step < 24; step++) {
      let token: number;
      if (step % 3 === 2) {
        // a refused pick: masked, picked again, then the kept one recorded
        const first = c.pick(logits);
        assert.equal(first, ts.pick(logits), `step ${step}: first pick`);
        const masked = logits.slice();
        masked[first] = -Infinity;
        token = c.pick(masked);
        assert.equal(token, ts.pick(masked), `step ${step}: pick after the mask`);
        c.record(token);
        ts.record(token);
      } else {
        token = c.sample(step % 3 === 0 ? logits : logits.slice());
        assert.equal(
          token,
          ts.sample(logits),
          `${JSON.stringify({ ...opts, seed: 0 })} step ${step}`,
        );
      }
      logits = await s.forward([token]);
    }
    assert.throws(() => c.pick(new Float32Array(10)), Qwen3Error);
    assert.throws(() => c.record(151936), Qwen3Error);
  }
  using bad = engine.createSession();
  assert.throws(() => bad.sampler({ topK: -1 }), /topK/);
});

Deno.test("session: nonblocking decode = forward + greedy sample", async () => {
  using engine = await CEngine.load(modelPath);
  using a = engine.createSession();
  using b = engine.createSession();
  const prompt = tokenizer.encode("Once upon a time");
  a.setSampler({ temperature: 0 });
  await a.forward(prompt.slice(0, -1));
  const viaDecode = await a.decode(prompt[prompt.length - 1]);
  const viaForward = argmax(await b.forward(prompt));
  assert.equal(viaDecode, viaForward);
  assert.equal(a.position, b.position);
});

Deno.test("session: a second call while a forward pass runs is refused", async () => {
  using engine = await CEngine.load(modelPath);
  using s = engine.createSession();
  const p = s.forward(tokenizer.encode("Hello there"));
  assert.throws(() => s.position, /busy/);
  await p;
  assert.ok(s.position > 0);
});

Deno.test("dispose: twice is harmless, use after dispose throws, model outlives its sessions", async () => {
  const engine = await CEngine.load(modelPath);
  const s = engine.createSession();
  engine[Symbol.dispose]();
  engine[Symbol.dispose]();
  assert.ok(engine.disposed);
  assert.throws(() => engine.createSession(), /disposed/);
  assert.throws(() => engine.threads, /disposed/);
  // The native model is still alive for the open session.
  const logits = await s.forward(tokenizer.encode("still alive"));
  assert.equal(logits.length, 151936);
  s[Symbol.dispose]();
  s[Symbol.dispose]();
  assert.throws(() => s.position, /disposed/);
  await rejects(s.forward([1]), "disposed", "disposed");
});

Deno.test("dispose during a nonblocking forward waits for it", async () => {
  using engine = await CEngine.load(modelPath);
  const s = engine.createSession();
  const p = s.forward(tokenizer.encode("a fairly long prompt to keep the worker busy"));
  s[Symbol.dispose]();
  await rejects(p, "disposed", "disposed");
});

Deno.test("a script that ends right after a call, its model never disposed, exits cleanly", async () => {
  // The pool's threads spin for a few milliseconds after each call, and Deno unloads the
  // library when the script ends: before qwen3_library_pin kept it loaded, 3 in 10 such
  // scripts died of SIGSEGV (exit 139) instead of exiting 0.
  const code = `import { CEngine } from "./ffi/c_engine.ts";
    const engine = await CEngine.load(${JSON.stringify(modelPath)}, { threads: 2 });
    await engine.createSession().forward([1, 2, 3]);
    console.log("done");`;
  for (let i = 0; i < 8; i++) {
    const r = await denoEval(code, {});
    assert.equal(r.code, 0, `run ${i} exited ${r.code}: ${r.stderr}`);
    assert.equal(r.stdout.trim(), "done");
  }
});

Deno.test("forward runs off the JS thread: timers fire while a prefill is computing", async () => {
  const path = await writeRandomModel(`${dir}/wide`, {
    dim: 64,
    hiddenDim: 1024,
    nLayers: 6,
    nHeads: 4,
    nKvHeads: 2,
    headDim: 64,
    seqLen: 4096,
    seed: 12,
  });
  using engine = await CEngine.load(path, { threads: 1 });
  using s = engine.createSession();
  // A long prompt: attention grows with its square, so the prefill takes long enough to
  // tell a blocking call from a non-blocking one even with the batched GEMM kernels.
  const prompt = tokenizer.encode("The quick brown fox jumps over the lazy dog. ".repeat(380));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  try {
    const t0 = performance.now();
    const pending = s.forward(prompt);
    const returnedAfter = performance.now() - t0;
    await pending;
    const total = performance.now() - t0;
    assert.ok(total > 20, `prefill too quick (${total} ms) to tell blocking from not`);
    assert.ok(
      returnedAfter < total / 4,
      `forward() held the thread ${returnedAfter} of ${total} ms`,
    );
    assert.ok(ticks > 0, `no timer fired during a ${total} ms prefill`);
  } finally {
    clearInterval(timer);
  }
});
