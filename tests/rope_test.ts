import assert from "node:assert/strict";
import { ropePow, ropeSinCos } from "../src/reference/rope.ts";

const fround = Math.fround;
const bitsOf = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0];

// Bits printed by csrc/tests/test_transformer.c (test_rope_math) for qwen3_rope_sincos and
// qwen3_rope_pow: the TypeScript steps must give the C engine's bits, the engines'
// agreement rests on it (docs/numerics.md#rope).
const SINCOS_FROM_C: [number, number, number][] = [
  [0, 0x3f800000, 0x00000000],
  [0.400000006, 0x3f6bcaa7, 0x3ec761d7],
  [3.14159274, 0xbf800000, 0xb3bbbd2e],
  [100.25, 0x3f75f639, 0xbe8df805],
  [0.194786802, 0x3f7b28a5, 0x3e4633e7],
  [40000, 0x3ea52a2f, 0x3f72506c],
];
const POW_FROM_C: [number, number][] = [
  [-0.25, 0x3d0186e2],
  [-0.5, 0x3a83126f],
  [-0.984375, 0x35a68e4c],
];

Deno.test("ropeSinCos and ropePow give the C engine's bits", () => {
  for (const [x, c, s] of SINCOS_FROM_C) {
    const [gc, gs] = ropeSinCos(fround(x));
    assert.equal(bitsOf(gc).toString(16), c.toString(16), `cos ${x}`);
    assert.equal(bitsOf(gs).toString(16), s.toString(16), `sin ${x}`);
  }
  for (const [e, want] of POW_FROM_C) {
    assert.equal(
      bitsOf(ropePow(fround(1e6), fround(e))).toString(16),
      want.toString(16),
      `pow ${e}`,
    );
  }
});

Deno.test("ropeSinCos and ropePow are within 1 fp32 ulp of the exact values", () => {
  const ulp = (x: number) => {
    const b = bitsOf(Math.abs(fround(x)) || 1e-45);
    return Math.abs(new Float32Array(new Uint32Array([b + 1]).buffer)[0] - Math.abs(fround(x)));
  };
  // at sin(40000), x's own rounding is what matters: compare with the angle as given
  for (let n = 0; n < 20000; n++) {
    const x = fround(n < 500 ? n * 0.01 : ((n * 7919) % 100003) * 1.3107);
    const [c, s] = ropeSinCos(x);
    assert.ok(Math.abs(c - Math.cos(x)) <= ulp(Math.cos(x)), `cos ${x}: ${c} vs ${Math.cos(x)}`);
    assert.ok(Math.abs(s - Math.sin(x)) <= ulp(Math.sin(x)), `sin ${x}: ${s} vs ${Math.sin(x)}`);
  }
  for (const half of [32, 64, 128]) {
    for (let i = 0; i < half; i++) {
      const e = fround(-i / half), want = Math.pow(1e6, e);
      assert.ok(Math.abs(ropePow(fround(1e6), e) - want) <= ulp(want), `pow ${e}`);
    }
  }
});
