/**
 * The GGUF export's block quantisers against llama.cpp itself, from the committed fixture
 * tests/fixtures/kquant_export/ (written by tools/make_kquant_fixture.py with
 * llama-cpp-python 0.3.36):
 * - the block quantisers (Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) give llama_model_quantize's
 *   bytes for 64 rows of varied values and edge cases, every block;
 * - the dequantisers give gguf-py's `gguf.quants.dequantize` values, every value.
 */

import assert from "node:assert/strict";
import { Qwen3Error } from "../src/errors.ts";
import {
  dequantizeQ4_1,
  dequantizeQ5_0,
  dequantizeQ5_1,
  quantizeQ4_1,
  quantizeQ5_0,
  quantizeQ5_1,
} from "../src/formats/block32_quants.ts";
import {
  dequantizeQ4_K,
  dequantizeQ5_K,
  dequantizeQ6_K,
  quantizeQ4_K,
  quantizeQ5_K,
  quantizeQ6_K,
} from "../src/formats/kquants.ts";
import { BLOCK } from "../src/formats/kquant_blocks.ts";
import { GgmlType } from "../src/formats/gguf.ts";

const FIXTURE = new URL("./fixtures/kquant_export/", import.meta.url);

type Quantizer = (values: Float32Array) => Uint8Array;
type Dequantizer = (bytes: Uint8Array) => Float32Array;

const CODECS: Record<string, { q: Quantizer; dq: Dequantizer; bytes: number; values: number }> = {
  Q4_1: { q: quantizeQ4_1, dq: dequantizeQ4_1, ...BLOCK.Q4_1 },
  Q5_0: { q: quantizeQ5_0, dq: dequantizeQ5_0, ...BLOCK.Q5_0 },
  Q5_1: { q: quantizeQ5_1, dq: dequantizeQ5_1, ...BLOCK.Q5_1 },
  Q4_K: { q: quantizeQ4_K, dq: dequantizeQ4_K, ...BLOCK.Q4_K },
  Q5_K: { q: quantizeQ5_K, dq: dequantizeQ5_K, ...BLOCK.Q5_K },
  Q6_K: { q: quantizeQ6_K, dq: dequantizeQ6_K, ...BLOCK.Q6_K },
};

interface Manifest {
  rows: number;
  cols: number;
  types: Record<string, { type: number; bytes: number }>;
}

const manifest: Manifest = JSON.parse(
  await Deno.readTextFile(new URL("manifest.json", FIXTURE)),
);

async function fixtureBytes(name: string): Promise<Uint8Array> {
  return await Deno.readFile(new URL(name, FIXTURE));
}

async function fixtureFloats(name: string): Promise<Float32Array> {
  const b = await fixtureBytes(name);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

Deno.test("block quantisers give llama.cpp's bytes, dequantisers gguf-py's values", async () => {
  const input = await fixtureFloats("input.f32");
  assert.equal(input.length, manifest.rows * manifest.cols);
  for (const [name, codec] of Object.entries(CODECS)) {
    const want = await fixtureBytes(`${name}.bin`);
    assert.equal(manifest.types[name].type, GgmlType[name as keyof typeof GgmlType]);
    assert.equal(want.length, (input.length / codec.values) * codec.bytes, name);
    const got = codec.q(input);
    const blocks = want.length / codec.bytes;
    const differing: number[] = [];
    for (let b = 0; b < blocks; b++) {
      for (let i = b * codec.bytes; i < (b + 1) * codec.bytes; i++) {
        if (got[i] !== want[i]) {
          differing.push(b);
          break;
        }
      }
    }
    const row = (b: number) => Math.floor((b * codec.values) / manifest.cols);
    assert.deepEqual(
      differing.map(row),
      [],
      `${name}: ${differing.length} of ${blocks} blocks differ from llama.cpp's (rows listed)`,
    );

    const deq = await fixtureFloats(`${name}.dequant.f32`);
    const ours = codec.dq(want);
    assert.equal(ours.length, deq.length);
    for (let i = 0; i < deq.length; i++) {
      if (ours[i] !== deq[i]) assert.fail(`${name} value ${i}: ${ours[i]}, gguf-py ${deq[i]}`);
    }
  }
});

Deno.test("block quantisers and dequantisers refuse partial blocks and short outputs", () => {
  for (const [name, codec] of Object.entries(CODECS)) {
    assert.throws(
      () => codec.q(new Float32Array(codec.values + 1)),
      (e) => e instanceof Qwen3Error && e.code === "invalid_argument" && e.message.includes(name),
    );
    assert.throws(
      () => codec.dq(new Uint8Array(codec.bytes - 1)),
      (e) => e instanceof Qwen3Error && e.code === "invalid_argument" && e.message.includes(name),
    );
  }
  assert.throws(
    () => quantizeQ4_K(new Float32Array(512), new Uint8Array(143)),
    /Q4_K: output of 143 bytes is smaller than the 288 needed/,
  );
});
