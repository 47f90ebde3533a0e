/**
 * Writes the seed corpus of the C fuzz harnesses into csrc/fuzz/corpus/<harness>/: small
 * valid inputs (every seed under 100 KB) from which libFuzzer mutates, and which
 * csrc/tests/test_fuzz_replay.c replays in the ordinary C tests.
 *
 *   deno run -A csrc/fuzz/make_corpus.ts
 *
 * Seeds are named `seed_*` and rewritten on every run; reproducers of bugs the fuzzer
 * found (`crash-*`) are kept. Everything is deterministic: the same files every run.
 * @module
 */

import { fileURLToPath as fromFileUrl } from "node:url";
import { checkpointToGguf } from "../../src/formats/gguf_convert.ts";
import { QWEN3_RMS_EPS, QWEN3_ROPE_THETA } from "../../src/formats/checkpoint.ts";
import { readCheckpoint } from "../../src/formats/model_file.ts";
import { STOCK_TEMPLATES } from "../../src/text/template.ts";
import { Tokenizer } from "../../src/text/tokenizer.ts";
import type { ModelConfig } from "../../src/types.ts";
import { TOKENIZER_JSON_PATH, writeRandomCheckpoint } from "../../tests/helpers/random_model.ts";

const corpusDir = fromFileUrl(new URL("./corpus/", import.meta.url));
const MAX_SEED_BYTES = 100 * 1024;
const enc = new TextEncoder();

/** Replaces the seed_* files of one harness with `seeds` (name -> bytes). */
async function writeSeeds(harness: string, seeds: Map<string, Uint8Array>): Promise<void> {
  const dir = `${corpusDir}${harness}`;
  await Deno.mkdir(dir, { recursive: true });
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && e.name.startsWith("seed_")) await Deno.remove(`${dir}/${e.name}`);
  }
  for (const [name, bytes] of seeds) {
    if (bytes.length > MAX_SEED_BYTES) {
      throw new Error(`${harness}/${name}: ${bytes.length} bytes, over the ${MAX_SEED_BYTES} limit`);
    }
    await Deno.writeFile(`${dir}/seed_${name}`, bytes);
  }
  console.log(`${harness}: ${seeds.size} seeds`);
}

/** A tiny model config (the byte tokenizer of fuzz_common.h has 272 tokens). */
function tiny(over: Partial<ModelConfig>): ModelConfig {
  return {
    format: "qwen3.c",
    dim: 8,
    hiddenDim: 16,
    nLayers: 2,
    nHeads: 2,
    nKvHeads: 1,
    headDim: 4,
    vocabSize: 272,
    seqLen: 32,
    groupSize: 4,
    sharedClassifier: true,
    ropeTheta: QWEN3_ROPE_THETA,
    rmsEps: QWEN3_RMS_EPS,
    ...over,
  };
}

async function checkpointBytes(
  config: ModelConfig,
  layout: "qwen3.c" | "qwen3-rs",
  seed: number,
): Promise<Uint8Array> {
  const tmp = await Deno.makeTempFile({ suffix: ".bin" });
  try {
    await writeRandomCheckpoint(tmp, config, layout, seed);
    return await Deno.readFile(tmp);
  } finally {
    await Deno.remove(tmp);
  }
}

async function modelSeeds(): Promise<Map<string, Uint8Array>> {
  const seeds = new Map<string, Uint8Array>();
  const tied = await checkpointBytes(tiny({}), "qwen3.c", 1);
  seeds.set("qwen3c_tied.bin", tied);
  seeds.set(
    "qwen3rs_untied_gs8.bin",
    await checkpointBytes(
      tiny({ hiddenDim: 8, nLayers: 1, nKvHeads: 2, seqLen: 16, groupSize: 8, sharedClassifier: false }),
      "qwen3-rs",
      2,
    ),
  );
  seeds.set(
    "qwen3c_gqa3.bin",
    await checkpointBytes(
      tiny({ dim: 12, hiddenDim: 12, nLayers: 1, nHeads: 3, nKvHeads: 1, vocabSize: 300 }),
      "qwen3.c",
      3,
    ),
  );
  // Qwen3-MoE (version 2): block 0 sparse (4 experts, top 2, width 4), block 1 dense
  const moe = { nExperts: 4, nExpertsUsed: 2, expertHiddenDim: 4, normTopkProb: true };
  seeds.set(
    "qwen3c_moe.bin",
    await checkpointBytes(tiny({ moe: { ...moe, sparse: [true, false] } }), "qwen3.c", 4),
  );
  seeds.set("truncated.bin", tied.slice(0, 300));
  seeds.set("header_only.bin", tied.slice(0, 256));
  // Non-finite and denormal values where the loader cannot check them (it never reads the
  // weights): a NaN norm weight, an infinite matmul scale, denormal embedding scales.
  const bad = tied.slice();
  const dv = new DataView(bad.buffer);
  dv.setFloat32(256, NaN, true); // attn_norm[0][0]
  const c = tiny({});
  const floats = 2 * c.nLayers * c.dim + c.dim + 2 * c.nLayers * c.headDim;
  const embed = 256 + 4 * floats;
  const embedValues = c.vocabSize * c.dim;
  for (let g = 0; g < embedValues / c.groupSize; g++) {
    dv.setFloat32(embed + embedValues + 4 * g, g % 3 === 0 ? 1e-42 : 3e-39, true);
  }
  const wq = embed + embedValues * (1 + 4 / c.groupSize);
  dv.setFloat32(wq + c.nHeads * c.headDim * c.dim, Infinity, true); // wq[0]'s first scale
  seeds.set("nonfinite_weights.bin", bad);
  return seeds;
}

/** The qwen3.c .tokenizer record layout for the given tokens (bytes, score). */
function qwen3cTokenizer(records: { bytes: Uint8Array; score: number }[]): Uint8Array {
  let total = 12;
  let maxLen = 0;
  for (const r of records) {
    total += 8 + r.bytes.length;
    maxLen = Math.max(maxLen, r.bytes.length);
  }
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, maxLen, true);
  dv.setUint32(4, 0, true);
  dv.setUint32(8, Math.max(0, records.length - 1), true);
  let off = 12;
  for (const r of records) {
    dv.setFloat32(off, r.score, true);
    dv.setUint32(off + 4, r.bytes.length, true);
    out.set(r.bytes, off + 8);
    off += 8 + r.bytes.length;
  }
  return out;
}

function tokenizerBinSeeds(tok: Tokenizer): Map<string, Uint8Array> {
  const seeds = new Map<string, Uint8Array>();
  const added = (text: string) => ({ bytes: enc.encode(text), score: -1e6 });
  const bytes = Array.from({ length: 256 }, (_, b) => ({ bytes: new Uint8Array([b]), score: -1e6 }));
  seeds.set(
    "bytes_and_specials.tokenizer",
    qwen3cTokenizer([...bytes, added("<|endoftext|>"), added("<|im_start|>"), added("<|im_end|>")]),
  );
  // The first 1200 real Qwen3 tokens with their merge ranks, then the 26 added tokens.
  const real = [];
  for (let id = 0; id < 1200; id++) {
    const rank = tok.mergeRank(id);
    real.push({ bytes: tok.tokenBytes(id), score: rank >= 0 ? -Math.log(rank + 1) : -1e6 });
  }
  for (let id = 151643; id < tok.size; id++) real.push({ bytes: tok.tokenBytes(id), score: -1e6 });
  seeds.set("qwen3_first1200.tokenizer", qwen3cTokenizer(real));
  seeds.set(
    "empty_records.tokenizer",
    qwen3cTokenizer([{ bytes: new Uint8Array(0), score: 0 }, ...bytes.slice(0, 4), {
      bytes: new Uint8Array(0),
      score: -1e6,
    }]),
  );
  return seeds;
}

async function tokenizerJsonSeeds(): Promise<Map<string, Uint8Array>> {
  const seeds = new Map<string, Uint8Array>();
  const full = JSON.parse(await Deno.readTextFile(TOKENIZER_JSON_PATH));
  // A small tokenizer.json with the real one's structure: ids below 700, the merges among
  // them, and the added tokens renumbered right after.
  const keep = 700;
  const vocab: Record<string, number> = {};
  for (const [piece, id] of Object.entries(full.model.vocab as Record<string, number>)) {
    if (id < keep) vocab[piece] = id;
  }
  const merges = (full.model.merges as [string, string][]).filter(([a, b]) =>
    a in vocab && b in vocab && (a + b) in vocab
  );
  const addedTokens = (full.added_tokens as { id: number }[]).map((t, i) => ({ ...t, id: keep + i }));
  const mini = { ...full, added_tokens: addedTokens, model: { ...full.model, vocab, merges } };
  seeds.set("mini_qwen3.json", enc.encode(JSON.stringify(mini)));
  const stringMerges = { ...mini, model: { ...mini.model, merges: merges.map((m) => m.join(" ")) } };
  seeds.set("mini_qwen3_string_merges.json", enc.encode(JSON.stringify(stringMerges, null, 1)));
  const noPipeline = { model: { type: "BPE", vocab: { a: 0, b: 1, ab: 2 }, merges: ["a b"] } };
  seeds.set("bare_bpe.json", enc.encode(JSON.stringify(noPipeline)));
  seeds.set(
    "json_values.json",
    enc.encode(
      '{"n":[0,-0,1.5e-3,-2E+10,123456789012345678901234567890,1e400,5e-324],' +
        '"s":["\\u00e9\\ud83d\\ude00\\n\\t\\"\\\\\\/","caf\u00e9",""],"t":[true,false,null],"o":{"":{}}}',
    ),
  );
  seeds.set("deep.json", enc.encode("[".repeat(250) + "]".repeat(250)));
  return seeds;
}

async function tokenizeSeeds(): Promise<Map<string, Uint8Array>> {
  const seeds = new Map<string, Uint8Array>();
  const cases = JSON.parse(
    await Deno.readTextFile(
      fromFileUrl(new URL("../../tests/fixtures/tokenizer_cases.json", import.meta.url)),
    ),
  ) as { text: string; special: boolean }[];
  const withFlag = (flag: number, text: Uint8Array) => {
    const out = new Uint8Array(text.length + 1);
    out[0] = flag;
    out.set(text, 1);
    return out;
  };
  // Every fourth fixture case (the real-text ones are long), and all with special tokens on.
  cases.forEach((c, i) => {
    if (i % 4 !== 0 && !c.special) return;
    const name = `case_${String(i).padStart(3, "0")}.txt`;
    seeds.set(name, withFlag(c.special ? 1 : 0, enc.encode(c.text)));
  });
  seeds.set("invalid_utf8.txt", withFlag(0, new Uint8Array([0xff, 0x41, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0xf4, 0x90])));
  seeds.set("nul_bytes.txt", withFlag(1, new Uint8Array([0x61, 0, 0x20, 0, 0, 0x3c, 0x7c])));
  seeds.set("long_spaces.txt", withFlag(2, enc.encode("   \n\t ")));
  seeds.set("long_word.txt", withFlag(3, enc.encode("supercalifragilistic<think>")));
  seeds.set("combining_after_special.txt", withFlag(1, enc.encode("<|im_end|>\u0338e\u0301")));
  return seeds;
}

/** Small qwen3 GGUF files (Q8_0 weights, F32 norms, the mini tokenizer's lists). */
async function ggufSeeds(): Promise<Map<string, Uint8Array>> {
  const seeds = new Map<string, Uint8Array>();
  const tmp = await Deno.makeTempDir({ prefix: "qwen3_corpus_" });
  try {
    const tokenizerJson = `${corpusDir}fuzz_tokenizer_json/seed_mini_qwen3.json`;
    const shape = { dim: 32, hiddenDim: 32, nLayers: 1, nHeads: 2, headDim: 16, vocabSize: 726 };
    for (const [name, over] of [
      ["tied_q8_0.gguf", { ...shape, nKvHeads: 1, groupSize: 32 }],
      ["untied_q8_0.gguf", { ...shape, nKvHeads: 2, groupSize: 32, sharedClassifier: false }],
    ] as const) {
      const bin = `${tmp}/${name}.bin`;
      await writeRandomCheckpoint(bin, tiny(over), "qwen3.c", 5);
      await checkpointToGguf(await readCheckpoint(bin), `${tmp}/${name}`, { tokenizerJson });
      seeds.set(name, await Deno.readFile(`${tmp}/${name}`));
    }
    const tied = seeds.get("tied_q8_0.gguf")!;
    seeds.set("truncated.gguf", tied.slice(0, 4096));
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  return seeds;
}

function templateSeeds(): Map<string, Uint8Array> {
  const seeds = new Map<string, Uint8Array>();
  const withKind = (kind: number, text: string) => {
    const t = enc.encode(text);
    const out = new Uint8Array(t.length + 1);
    out[0] = kind;
    out.set(t, 1);
    return out;
  };
  seeds.set("plain.txt", withKind(0, STOCK_TEMPLATES.plain));
  seeds.set("thinking.txt", withKind(1, STOCK_TEMPLATES.thinking));
  seeds.set("system.txt", withKind(2, STOCK_TEMPLATES.system));
  seeds.set("system_thinking.txt", withKind(3, STOCK_TEMPLATES.systemThinking));
  seeds.set("percent.txt", withKind(0, "100%% sure: %s<|im_end|>"));
  seeds.set("bad_directive.txt", withKind(2, "%s then %d and %s"));
  return seeds;
}

if (import.meta.main) {
  const tok = Tokenizer.fromJson(await Deno.readTextFile(TOKENIZER_JSON_PATH));
  await writeSeeds("fuzz_model_header", await modelSeeds());
  await writeSeeds("fuzz_tokenizer_bin", tokenizerBinSeeds(tok));
  await writeSeeds("fuzz_tokenizer_json", await tokenizerJsonSeeds());
  await writeSeeds("fuzz_tokenize", await tokenizeSeeds());
  await writeSeeds("fuzz_template", templateSeeds());
  await writeSeeds("fuzz_gguf", await ggufSeeds());
}
