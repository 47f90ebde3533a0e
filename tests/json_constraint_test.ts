/**
 * The JSON recogniser behind `response_format` (src/text/json_constraint.ts): prefixes it
 * accepts and refuses, the schema subset, a fuzz loop over random documents fed byte by byte
 * (every valid one accepted; whatever it accepts as complete parses), the token constraint,
 * and `Qwen3.generate` with it on both engines (the same tokens, logprobs within 2e-3).
 */

import assert from "node:assert/strict";
import {
  ANY_JSON,
  ANY_OBJECT,
  compileSchema,
  JsonRecognizer,
  JsonTokenConstraint,
  MAX_NUMBER_DIGITS,
  MAX_WHITESPACE_RUN,
  SchemaError,
  type SchemaNode,
} from "../src/text/json_constraint.ts";

/** Feeds `text`; the index of the first refused byte, or -1 when all were taken. */
function refusedAt(text: string, root: SchemaNode = ANY_JSON): { at: number; r: JsonRecognizer } {
  const r = new JsonRecognizer(root);
  const bytes = new TextEncoder().encode(text);
  for (let i = 0; i < bytes.length; i++) if (!r.push(bytes[i])) return { at: i, r };
  return { at: -1, r };
}

Deno.test("json: accepts prefixes of valid documents, refuses the first wrong byte", () => {
  const ok: [string, boolean][] = [ // text, complete
    ["", false],
    ["{", false],
    ['{"a": [1, -2.5e+3, true, null, "x\\u00e9\\n"], "b": {}}', true],
    ["[]", true],
    ['"caf\u00e9 \u{1f600}"', true],
    ["-0", true],
    ["12", true],
    ["1.", false],
    ['{"a"', false],
    ["[1,", false],
    ["tr", false],
    ["0.5E-7", true],
    [`-${"9".repeat(MAX_NUMBER_DIGITS)}.${"0".repeat(MAX_NUMBER_DIGITS)}e-308`, true],
  ];
  for (const [text, complete] of ok) {
    const { at, r } = refusedAt(text);
    assert.equal(at, -1, `refused ${JSON.stringify(text)} at ${at}`);
    assert.equal(r.complete, complete, `complete after ${JSON.stringify(text)}`);
  }
  const bad: [string, number][] = [ // text, index of the refused byte
    ["{,", 1],
    ["[1,]", 3],
    ["01", 1],
    ["{'a': 1}", 1],
    ['{"a" 1}', 5],
    ['{"a":1,}', 7],
    ["tru3", 3],
    ['"a\tb"', 2],
    ['"\\x"', 2],
    ['"\\u12g4"', 5],
    ["1.e5", 2],
    ["-", -1], // a prefix, only incomplete
    ["{}}", 2],
    ["[1] 2", 4],
    ["[1]\n \n", 5],
    ["1".repeat(MAX_NUMBER_DIGITS + 1), MAX_NUMBER_DIGITS],
    [`0.${"5".repeat(MAX_NUMBER_DIGITS + 1)}`, MAX_NUMBER_DIGITS + 2],
    ["1e+1234", 6],
    ['{"a":1,"a":2}', 9], // a repeated key: refused at its closing quote
  ];
  for (const [text, at] of bad) {
    assert.equal(refusedAt(text).at, at, JSON.stringify(text));
  }
  // Invalid UTF-8 inside a string: a lone continuation byte, an overlong form, a surrogate.
  for (const bytes of [[0x22, 0x80], [0x22, 0xc0, 0x80], [0x22, 0xe0, 0x80], [0x22, 0xed, 0xa0]]) {
    const r = new JsonRecognizer();
    assert.equal(r.pushBytes(new Uint8Array(bytes)), false, bytes.join(" "));
  }
  // Whitespace between tokens: "", " ", or "\n" and up to MAX_WHITESPACE_RUN spaces or tabs.
  const indent = " \t".repeat(MAX_WHITESPACE_RUN / 2);
  assert.equal(refusedAt(`[\n${indent}[\n${indent}1, 2 ,\n3]]`).at, -1);
  assert.equal(refusedAt(`[\n${indent} `).at, MAX_WHITESPACE_RUN + 2);
  assert.equal(refusedAt(" {").at, 0); // nothing before the document
  assert.equal(refusedAt("[  1]").at, 2);
  assert.equal(refusedAt("[ \n1]").at, 2);
  assert.equal(refusedAt("[\n\n").at, 2);
  assert.equal(refusedAt("[1,\r\n").at, 3);
  assert.equal(refusedAt("\t1").at, 0);
  // json_object: only an object at the top.
  assert.equal(refusedAt("[1]", ANY_OBJECT).at, 0);
  const { at, r } = refusedAt('{"a": [1]}\n', ANY_OBJECT);
  assert.equal(at, -1);
  assert.ok(r.closed && r.complete);
});

Deno.test("json schema: types, properties, required, additionalProperties, enum, const", () => {
  const schema = compileSchema({
    type: "object",
    title: "ignored",
    properties: {
      name: { type: "string", description: "ignored" },
      age: { type: "integer" },
      tags: { type: "array", items: { enum: ["a", "b", 12, 1] } },
      kind: { const: "cat" },
      extra: { type: ["number", "null"] },
    },
    required: ["name", "kind"],
    additionalProperties: false,
  });
  const accepted = [
    '{"name": "Tom", "kind": "cat"}',
    '{"kind":"cat","name":"","age":-3,"tags":["a",12,1,"b"],"extra":null}',
    '{"name": "x", "extra": 1.5e3, "kind": "cat"}',
  ];
  for (const text of accepted) {
    const { at, r } = refusedAt(text, schema);
    assert.equal(at, -1, `${text} refused at ${at}`);
    assert.ok(r.closed, text);
  }
  const refused: [string, number][] = [
    ['{"name": "Tom"}', 14], // "kind" is required
    ['{"nam": 1', 5], // not a property name
    ['{"age": 1.5', 9], // integer
    ['{"kind": "dog"', 10], // const
    ['{"tags": ["c"', 11], // enum
    ['{"name": 1', 9], // a string
    ['{"extra": true', 10],
    ['{"name": "a", "name"', 15], // once: no other property starts with "n"
    ["[", 0],
  ];
  for (const [text, at] of refused) {
    assert.equal(refusedAt(text, schema).at, at, text);
  }
  // 1 and 12 are both in the enum: after "1" either may follow.
  assert.equal(refusedAt('{"tags": [12, 1, 1]', schema).at, -1);
  assert.equal(refusedAt('{"tags": [123', schema).at, 12);

  // Lengths: of arrays in elements, of strings in characters (an escape is one).
  const bounded = compileSchema({
    type: "object",
    properties: {
      a: { type: "array", minItems: 1, maxItems: 2 },
      s: { type: "string", minLength: 2, maxLength: 3 },
    },
  });
  for (const text of ['{"a": [1]}', '{"a": [1, [2, 3]]}', '{"s": "ab"}', '{"s": "\\u00e9\\né"}']) {
    assert.equal(refusedAt(text, bounded).at, -1, text);
  }
  const tooMany: [string, number][] = [
    ['{"a": []', 7],
    ['{"a": [1, 2,', 11],
    ['{"s": "a"', 8],
    ['{"s": "abcd', 10],
    ['{"s": "éééé', 13], // the lead byte of the fourth character
  ];
  for (const [text, at] of tooMany) assert.equal(refusedAt(text, bounded).at, at, text);

  // Unsupported keywords are refused, naming the keyword and where it is.
  const unsupported: [unknown, string, string][] = [
    [{ type: "string", pattern: "^a" }, "", "pattern"],
    [{ properties: { a: { anyOf: [] } } }, "/properties/a", "anyOf"],
    [{ type: "array", items: { $ref: "#" } }, "/items", "$ref"],
    [{ additionalProperties: { type: "string" } }, "/additionalProperties", "not a schema"],
    [{ type: "float" }, "/type", "float"],
    [{ enum: [] }, "/enum", "non-empty"],
    [{ type: "string", enum: [1] }, "", "enum"],
    [{ required: ["a"], additionalProperties: false }, "/required", "no object"],
    [{ maxItems: -1 }, "/maxItems", "integer >= 0"],
    [{ minLength: 3, maxLength: 2 }, "/minLength", "more than maxLength 2"],
  ];
  for (const [s, path, word] of unsupported) {
    assert.throws(() => compileSchema(s), (e) => {
      assert.ok(e instanceof SchemaError, String(e));
      assert.equal(e.path, path, JSON.stringify(s));
      assert.match(e.message, new RegExp(word.replace("$", "\\$")));
      return true;
    });
  }
});

/** A tiny seeded generator (xorshift32). */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

const CHARS = [
  "a",
  "Z",
  " ",
  '"',
  "\\",
  "/",
  "\n",
  "\t",
  "\u00e9",
  "\u4e2d",
  "\u{1f600}",
  "\u0001",
];

function randomValue(g: ReturnType<typeof rng>, depth: number): unknown {
  const kind = g.int(depth > 3 ? 5 : 7);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return g.next() < 0.5;
    case 2:
      return [0, -1, 7, 123456789, 0.5, -2.25e-7, 1e21, 3.14159][g.int(8)];
    case 3:
    case 4:
      return Array.from({ length: g.int(6) }, () => CHARS[g.int(CHARS.length)]).join("");
    case 5:
      return Array.from({ length: g.int(4) }, () => randomValue(g, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = g.int(4); i > 0; i--) o[randomValue(g, 9) as string] = randomValue(g, depth + 1);
      return o;
    }
  }
}

/** A schema the value matches: its types, its keys required, no others. */
function schemaOf(v: unknown, g: ReturnType<typeof rng>): unknown {
  if (v === null) return { type: "null" };
  if (Array.isArray(v)) {
    const n = v.length;
    return g.next() < 0.5 ? { type: "array", items: {} } : { minItems: n, maxItems: n + g.int(2) };
  }
  if (typeof v === "object") {
    const properties: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) properties[k] = schemaOf(x, g);
    return { type: "object", properties, required: Object.keys(v), additionalProperties: false };
  }
  if (typeof v === "string" && g.next() < 0.3) return { enum: ["zz", v] };
  if (typeof v === "string" && g.next() < 0.5) {
    const n = [...v].length;
    return { type: "string", minLength: Math.max(0, n - g.int(2)), maxLength: n };
  }
  if (typeof v === "number") {
    // An integer is written with digits only (docs/sampling.md#json-output): not 1e+21.
    return { type: /^-?\d+$/.test(JSON.stringify(v)) ? "integer" : "number" };
  }
  return { type: typeof v };
}

/** A plain validator of the supported subset, to check what the recogniser lets through. */
// deno-lint-ignore no-explicit-any
function matches(v: unknown, s: any): boolean {
  if (s === true || s === undefined) return true;
  const same = (x: unknown) => JSON.stringify(x) === JSON.stringify(v);
  if (s.const !== undefined && !same(s.const)) return false;
  if (s.enum !== undefined && !s.enum.some(same)) return false;
  const is: Record<string, (x: unknown) => boolean> = {
    null: (x) => x === null,
    boolean: (x) => typeof x === "boolean",
    integer: (x) => Number.isInteger(x),
    number: (x) => typeof x === "number",
    string: (x) => typeof x === "string",
    array: Array.isArray,
    object: (x) => x !== null && typeof x === "object" && !Array.isArray(x),
  };
  if (s.type !== undefined && ![s.type].flat().some((t: string) => is[t](v))) return false;
  if (is.object(v)) {
    const o = v as Record<string, unknown>;
    if ((s.required ?? []).some((r: string) => !(r in o))) return false;
    for (const [k, x] of Object.entries(o)) {
      if (s.properties?.[k] !== undefined) {
        if (!matches(x, s.properties[k])) return false;
      } else if (s.additionalProperties === false) return false;
    }
  }
  if (Array.isArray(v)) {
    if (v.length < (s.minItems ?? 0) || v.length > (s.maxItems ?? Infinity)) return false;
    if (s.items !== undefined && !v.every((x) => matches(x, s.items))) return false;
  }
  if (typeof v === "string") {
    const n = [...v].length; // code points
    if (n < (s.minLength ?? 0) || n > (s.maxLength ?? Infinity)) return false;
  }
  return true;
}

Deno.test("json fuzz: random documents byte by byte; whatever completes, parses", () => {
  const g = rng(20261203);
  let accepted = 0;
  let mutatedComplete = 0;
  let mutatedMatching = 0;
  for (let trial = 0; trial < 400; trial++) {
    const value = randomValue(g, 0);
    const text = JSON.stringify(value, null, trial % 3 === 0 ? 2 : undefined);
    const schemaJson = schemaOf(value, g);
    const schemaText = JSON.stringify(schemaJson);
    const schema = compileSchema(schemaJson);
    assert.ok(matches(value, schemaJson), schemaText);
    for (const root of [ANY_JSON, schema]) {
      const { at, r } = refusedAt(text, root);
      assert.equal(at, -1, `${text} refused at byte ${at}`);
      assert.ok(r.complete, `${text} not complete`);
      accepted++;
    }
    // A random byte changed, dropped or added: if the recogniser takes it all as complete,
    // it must parse (and match the schema's types at the top).
    const bytes = [...new TextEncoder().encode(text)];
    const at = g.int(bytes.length + 1);
    const op = g.int(3);
    const noise = [0x22, 0x2c, 0x7d, 0x5d, 0x3a, 0x31, 0x20, 0x5c, 0x80, 0x65][g.int(10)];
    if (op === 0) bytes[at] = noise;
    else if (op === 1) bytes.splice(at, 1);
    else bytes.splice(at, 0, noise);
    const mutant = new Uint8Array(bytes.filter((b) => b !== undefined));
    const r = new JsonRecognizer();
    if (r.pushBytes(mutant) && r.complete) {
      const mutated = new TextDecoder().decode(mutant);
      assert.doesNotThrow(() => JSON.parse(mutated), mutated);
      mutatedComplete++;
      const held = new JsonRecognizer(schema);
      if (held.pushBytes(mutant) && held.complete) {
        assert.ok(matches(JSON.parse(mutated), schemaJson), `${mutated} vs ${schemaText}`);
        mutatedMatching++;
      }
    }
  }
  assert.equal(accepted, 800);
  assert.ok(mutatedComplete > 10 && mutatedComplete < 400, `${mutatedComplete} mutants complete`);
  assert.ok(mutatedMatching > 5, `${mutatedMatching} mutants match their schema`);
});

Deno.test("json tokens: control tokens and empty tokens never, stop only when complete", () => {
  const texts = ["{", '"a', '":', " 1", "}", "<|im_end|>", "", "},", "1"];
  const vocab = {
    tokenBytes: (id: number) => new TextEncoder().encode(texts[id] ?? ""),
    isAdded: (id: number) => id === 5,
  };
  const c = new JsonTokenConstraint(vocab, ANY_OBJECT);
  const allowed = () => texts.map((_, id) => id).filter((id) => c.allows(id));
  assert.deepEqual(allowed(), [0]);
  c.accept(0);
  assert.deepEqual(allowed(), [1, 2, 4]); // '":' opens a key named ":...
  c.accept(1);
  c.accept(2);
  assert.deepEqual(allowed(), [0, 1, 2, 3, 8]); // an object, a string or a number
  c.accept(3);
  assert.ok(!c.complete);
  assert.deepEqual(allowed(), [4, 8]); // "}," would follow the top-level value with a comma
  c.accept(4);
  assert.ok(c.complete && c.closed);
  assert.throws(() => c.accept(8));
});

Deno.test("Qwen3.generate with a constraint: the same JSON and logprobs on both engines", async () => {
  const { Qwen3 } = await import("../src/api/qwen3.ts");
  const { demoModelPath } = await import("../src/api/demo.ts");
  const { renderChatRequest, stockChatTemplate } = await import("../src/server/prompt.ts");
  const schema = compileSchema({
    type: "object",
    properties: { ok: { type: "boolean" }, n: { type: "array", items: { type: "null" } } },
    required: ["ok", "n"],
    additionalProperties: false,
  });
  const runs: { text: string; tokens: readonly number[]; logprobs: number[] }[] = [];
  for (const engine of ["c", "ts"] as const) {
    using m = await Qwen3.load(await demoModelPath(), { engine, contextLength: 128 });
    const prompt = m.tokenizer.encodeParts(
      renderChatRequest(stockChatTemplate(), {
        messages: [{ role: "user", content: "A pet?" }],
        thinking: false,
        tools: { tools: [], choice: { kind: "auto" } },
      }).parts,
    );
    const constraint = new JsonTokenConstraint(m.tokenizer, schema);
    const run = m.generate(prompt, { temperature: 0, maxTokens: 40, logprobs: 0, constraint });
    const logprobs: number[] = [];
    for await (const piece of run) logprobs.push(...piece.logprobs!.map((e) => e.logprob));
    assert.equal(logprobs.length, run.tokens.length);
    assert.ok(new JsonRecognizer(schema).pushText(run.text), run.text);
    if (run.stats!.stopReason === "constraint_closed") assert.ok(JSON.parse(run.text));
    runs.push({ text: run.text, tokens: run.tokens, logprobs });
  }
  assert.deepEqual(runs[1].tokens, runs[0].tokens);
  // The engines agree to ~1e-6 in the logits, not bit for bit (RoPE's sin and cos come from
  // different libraries: docs/numerics.md#c-and-typescript-engines), and an
  // int8-quantised activation that lands on a rounding edge moves a whole step on one engine:
  // a 2^-22 nudge to exp alone shifts later logprobs by ~1e-2 on the demo model. So the
  // bound is a few such steps, far below what a wrong mask or position would give.
  runs[0].logprobs.forEach((v, i) =>
    assert.ok(Math.abs(v - runs[1].logprobs[i]) < 5e-2, `logprob ${i}`)
  );
});

Deno.test("generation loop: refused picks masked, then every refused token at once", async () => {
  const { runGeneration, emptyResult } = await import("../src/api/generate.ts");
  const { Sampler } = await import("../src/text/sampler.ts");
  // 20 capitals the model prefers (never JSON outside a string), then what JSON needs; 25 is
  // a control (stop) token.
  const texts = [..."ABCDEFGHIJKLMNOPQRST", "{", "}", '"k"', ":", "1", "<|im_end|>"];
  const vocab = {
    tokenBytes: (id: number) => new TextEncoder().encode(texts[id]),
    isAdded: (id: number) => id === 25,
  };
  const logits = new Float32Array(texts.map((_, id) => id < 20 ? 100 - id : 0));
  logits.set([50, 40, 30, 20, 10, 60], 20);
  let position = 0;
  const session = {
    contextLength: 64,
    get position() {
      return position;
    },
    forward: (tokens: ArrayLike<number>) => {
      position += tokens.length;
      return Promise.resolve(logits);
    },
    rewind: (p: number) => void (position = p),
    embed: () => Promise.reject(new Error("a generation never embeds")),
    [Symbol.dispose]: () => {},
  };
  const run = (temperature: number, seed = 1) => {
    position = 0;
    const result = emptyResult();
    return {
      result,
      pieces: runGeneration({
        session,
        tokenizer: vocab,
        sampler: new Sampler({ temperature, seed, topP: 1 }, texts.length),
        prompt: [0],
        stopTokens: new Set([25]),
        maxTokens: 12,
        logprobs: 1,
        constraint: new JsonTokenConstraint(vocab, ANY_OBJECT),
      }, result),
    };
  };
  // Greedy: 21 refusals (the letters and the stop token, more likely than "{"), then "{";
  // then "}" closes the object and generation.
  const greedy = run(0);
  const lps: number[] = [];
  for await (const p of greedy.pieces) lps.push(...p.logprobs!.map((e) => e.token));
  assert.equal(greedy.result.text, "{}");
  assert.deepEqual(lps, [20, 21]);
  assert.equal(greedy.result.stats?.stopReason, "constraint_closed");
  // Sampling: whatever the seed, only tokens that keep a valid prefix.
  const seen = new Set<string>();
  for (let seed = 1; seed <= 20; seed++) {
    const sampled = run(30, seed);
    for await (const _ of sampled.pieces) { /* drain */ }
    const { text, stats } = sampled.result;
    assert.ok(new JsonRecognizer(ANY_OBJECT).pushText(text), text);
    if (stats?.stopReason === "constraint_closed") assert.ok(JSON.parse(text));
    else assert.equal(stats?.stopReason, "max_tokens", text);
    seen.add(text);
  }
  assert.ok(seen.size > 2, `20 seeds, only ${[...seen].join(" ")}`);
});
