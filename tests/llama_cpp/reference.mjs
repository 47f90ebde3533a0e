// llama.cpp as an independent reference, through node-llama-cpp's CPU prebuilt (run by
// tests/llama_cpp_test.ts with Node: under Deno the npm: import works too, but Deno installs
// every platform-matching optional package of node-llama-cpp, CUDA and Vulkan builds
// included, about 730 MB, where npm with --omit=optional and the one CPU package takes 83 MB).
//
//   node reference.mjs REQUEST.json OUT_PREFIX
//
// REQUEST: { model, texts: string[], prompt: number[], positions: number[],
//            kvType: "F32" | "F16", threads }
// Writes OUT_PREFIX.json: { vocabSize, tokens: number[][] (each text tokenized with added
// tokens such as <|im_end|> and <think> recognised, as Hugging Face's encode does; no BOS),
// loadMs, evalMs } and OUT_PREFIX.probs: float32 little-endian, one row of
// vocabSize next-token probabilities (softmax of the logits, temperature 1, no top-k/p) after
// prompt[0..=p] for each p of positions.
import { readFileSync, writeFileSync } from "node:fs";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";

const [requestPath, outPrefix] = process.argv.slice(2);
const req = JSON.parse(readFileSync(requestPath, "utf8"));
const t0 = performance.now();
const llama = await getLlama({
  gpu: false,
  build: "never",
  logLevel: LlamaLogLevel.error,
  progressLogs: false,
});
const model = await llama.loadModel({ modelPath: req.model });
const tokens = req.texts.map((text) => Array.from(model.tokenize(text, true)));
const loadMs = performance.now() - t0;

const t1 = performance.now();
const context = await model.createContext({
  contextSize: Math.max(32, req.prompt.length + 1),
  threads: req.threads ?? 1,
  flashAttention: false,
  experimentalKvCacheKeyType: req.kvType ?? "F16",
  experimentalKvCacheValueType: req.kvType ?? "F16",
});
const sequence = context.getSequence();
const wanted = new Set(req.positions);
const sampling = { temperature: 1, topK: 0, topP: 1, minP: 0 };
const input = req.prompt.map((t, i) =>
  wanted.has(i) ? [t, { generateNext: { probabilities: true, options: sampling } }] : t
);
const out = await sequence.controlledEvaluate(input);
// with top-k off every token of the vocabulary (the embedding rows) has an entry
const maps = req.positions.map((p) => {
  const probs = out[p]?.next?.probabilities;
  if (!probs) throw new Error(`llama.cpp gave no probabilities at position ${p}`);
  return probs;
});
const vocabSize = Math.max(...maps.map((m) => m.size));
const rows = new Float32Array(req.positions.length * vocabSize);
maps.forEach((probs, row) => {
  for (const [token, prob] of probs) rows[row * vocabSize + token] = prob;
});
const evalMs = performance.now() - t1;
writeFileSync(`${outPrefix}.probs`, new Uint8Array(rows.buffer));
writeFileSync(
  `${outPrefix}.json`,
  JSON.stringify({ vocabSize, tokens, loadMs, evalMs }),
);
await context.dispose();
await model.dispose();
await llama.dispose();
