import assert from "node:assert/strict";
import { fmaf } from "../src/reference/fma.ts";

const fround = Math.fround;
const view = new DataView(new ArrayBuffer(8));

/** A finite double as m * 2^e with an integer m (exact). */
function split(x: number): { m: bigint; e: number } {
  view.setFloat64(0, x);
  const hi = view.getUint32(0), lo = view.getUint32(4);
  const sign = hi >>> 31 ? -1n : 1n;
  const exp = (hi >>> 20) & 0x7ff;
  let m = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  if (exp !== 0) m |= 1n << 52n;
  return { m: sign * m, e: (exp === 0 ? 1 : exp) - 1075 };
}

/** m * 2^e (m an integer) rounded to fp32, half to even: the reference for fmaf. */
function roundToFloat(m: bigint, e: number): number {
  if (m === 0n) return 0;
  const neg = m < 0n;
  let a = neg ? -m : m;
  // keep 24 significant bits, or fewer below the normal range (subnormals step by 2^-149)
  const bits = a.toString(2).length;
  const shift = Math.max(bits - 24, -149 - e);
  if (shift > 0) {
    const sb = BigInt(shift);
    const rest = a & ((1n << sb) - 1n), half = 1n << (sb - 1n);
    a >>= sb;
    if (rest > half || (rest === half && (a & 1n) === 1n)) a += 1n;
    e += shift;
  }
  const x = Number(a) * 2 ** e;
  return neg ? -x : x;
}

/** a * b + c exactly, then rounded once to fp32. */
function exactFma(a: number, b: number, c: number): number {
  const x = split(a), y = split(b), z = split(c);
  let pm = x.m * y.m, pe = x.e + y.e, cm = z.m, ce = z.e;
  // bring both to the smaller exponent
  if (pe > ce) {
    pm <<= BigInt(pe - ce);
    pe = ce;
  } else {
    cm <<= BigInt(ce - pe);
    ce = pe;
  }
  const sum = pm + cm;
  if (sum === 0n) return a * b + c; // an exact zero: the sign rule is the double's
  return roundToFloat(sum, pe);
}

let seed = 12345;
function rnd(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 2 ** 32;
}
const randomFloat = (scale: number) =>
  fround((rnd() - 0.5) * scale * 2 ** Math.floor(rnd() * 40 - 20));

const bitsOf = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0];

// fmaf(a, b, c) bit patterns printed by C (glibc's fmaf, gcc -fno-builtin; the same as the FMA
// instruction's): a double-rounding case, a tie,
// overflow and a subnormal result.
const FROM_C: [number, number, number, number][] = [
  [2.98023259e-08, 0.999999881, 0.708391249, 0x3f355921],
  [1.00000012, 1.00000012, -1, 0x34800000],
  [0.100000001, 0.200000003, 0.300000012, 0x3ea3d70b],
  [-3.5, 9.99999994e-09, 2.49999999e-07, 0x3466dac0],
  [1.00000002e+20, 1.00000002e+20, -9.99999968e+37, 0x7f800000],
  [1.17549435e-38, 0.5, -1.17549421e-38, 0x803fffff],
];

Deno.test("fmaf gives C's fmaf bits", () => {
  for (const [a, b, c, want] of FROM_C) {
    const got = fmaf(fround(a), fround(b), fround(c));
    assert.equal(bitsOf(got).toString(16), want.toString(16), `fmaf(${a}, ${b}, ${c})`);
  }
});

Deno.test("fmaf rounds a * b + c once", () => {
  let doubleRounded = 0;
  const check = (a: number, b: number, c: number) => {
    const want = exactFma(a, b, c), got = fmaf(a, b, c);
    assert.ok(Object.is(got, want), `fmaf(${a}, ${b}, ${c}) = ${got}, want ${want}`);
    if (fround(a * b + c) !== want) doubleRounded++;
  };
  // random operands, including cancellations (c near -a * b) and far-apart magnitudes
  for (let i = 0; i < 20000; i++) {
    const a = randomFloat(4), b = randomFloat(4);
    check(a, b, randomFloat(4));
    check(a, b, fround(-a * b));
    check(a, b, fround(-a * b * (1 + (rnd() - 0.5) * 2 ** -20)));
  }
  // the double sum exactly halfway between two floats while the exact sum is just below:
  // c = C * 2^E (C odd, 24 bits), a * b = 2^(E-1) - 2^(E-47); rounding twice goes up
  for (let i = 0; i < 2000; i++) {
    const E = Math.floor(rnd() * 60) - 30;
    const C = (1 << 23) + 2 * Math.floor(rnd() * (1 << 22)) + 1;
    const sign = rnd() < 0.5 ? -1 : 1;
    check(sign * 2 ** (E - 1) * (1 + 2 ** -23), 1 - 2 ** -23, sign * C * 2 ** E);
    check(2 ** (E - 1) * (1 + 2 ** -23), -(1 - 2 ** -23), -C * 2 ** E); // both negative
  }
  // subnormal results and zero signs
  check(2 ** -75, 2 ** -74, 2 ** -149);
  check(-0, 1, 0);
  check(-0, 1, -0);
  check(3, 5, -15);
  assert.ok(doubleRounded > 1000, `only ${doubleRounded} cases where two roundings differ`);
});
