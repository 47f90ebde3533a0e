import assert from "node:assert/strict";
import { exp32 } from "../src/reference/exp.ts";

const bitsOf = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0];

// Bit patterns printed by the C engine's qwen3_exp_ref (csrc/src/kernels_exp_loops.h) for these
// fp32 inputs: the TypeScript steps must give the same bits (subnormal and overflow-edge
// results included), as the engines' agreement relies on it.
const FROM_C: [number, number][] = [
  [-103.5, 0x00000001],
  [-90.25, 0x0006f2e7],
  [-20.1229992, 0x30fa7f34],
  [-1, 0x3ebc5ab2],
  [-0.346569985, 0x3f35051e],
  [0.00100000005, 0x3f8020c9],
  [0.5, 0x3fd3094c],
  [1, 0x402df854],
  [10, 0x46ac14ee],
  [26.6888409, 0x52b5810c],
  [59.270813, 0x6a363dd4],
  [88.5, 0x7f4cdcc4],
];

Deno.test("exp32 gives the C engine's bits", () => {
  for (const [x, want] of FROM_C) {
    assert.equal(bitsOf(exp32(x)).toString(16), want.toString(16), `exp32(${x})`);
  }
});

Deno.test("exp32 is within about 1 ulp of e^x and handles the ends", () => {
  let worst = 0;
  let state = 12345;
  for (let i = 0; i < 200000; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const x = Math.fround((state / 2 ** 32 - 0.5386) * 193);
    const want = Math.exp(x);
    const got = exp32(x);
    if (!isFinite(Math.fround(want))) {
      assert.equal(got, Infinity, `exp32(${x})`);
      continue;
    }
    const e = Math.floor(Math.log2(want));
    const ulp = Math.max(2 ** (e - 23), 2 ** -149);
    worst = Math.max(worst, Math.abs(got - want) / ulp);
  }
  assert.ok(worst <= 1.05, `worst error ${worst} ulp`);
  assert.equal(exp32(0), 1);
  assert.equal(exp32(-200), 0);
  assert.equal(exp32(89), Infinity);
  assert.equal(exp32(-Infinity), 0);
  assert.equal(exp32(Infinity), Infinity);
  assert.ok(Number.isNaN(exp32(NaN)));
});
