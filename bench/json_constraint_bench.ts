/**
 * The cost of JSON-constrained decoding's worst step (src/text/json_constraint.ts,
 * docs/sampling.md#json-output): after 16 refused picks the generation loop checks every
 * token of the vocabulary at once. Here: that full check over the 151669 tokens of Qwen3's
 * tokenizer at four states of a document, and the check of a single token (what each pick
 * costs).
 *
 *   deno bench -A bench/json_constraint_bench.ts
 * @module
 */

import {
  ANY_OBJECT,
  compileSchema,
  JsonTokenConstraint,
  type SchemaNode,
} from "../src/text/json_constraint.ts";
import { qwen3Tokenizer } from "../tests/helpers/tokenizer_path.ts";

const tokenizer = qwen3Tokenizer();
const V = tokenizer.size;
const PET = compileSchema({
  type: "object",
  properties: { name: { type: "string" }, kind: { enum: ["cat", "dog"] }, n: { type: "integer" } },
  required: ["name", "kind", "n"],
  additionalProperties: false,
});

/** A constraint that has taken `prefix`'s tokens. */
function at(prefix: string, root: SchemaNode): JsonTokenConstraint {
  const c = new JsonTokenConstraint(tokenizer, root);
  for (const id of tokenizer.encode(prefix)) c.accept(id);
  return c;
}

const STATES: [string, JsonTokenConstraint][] = [
  ["json_object, after {", at("{", ANY_OBJECT)],
  ["json_object, inside a string", at('{"a": "hello', ANY_OBJECT)],
  ["schema, before a closed key", at('{"name": "x", ', PET)],
  ["schema, inside an enum", at('{"name": "x", "kind": "', PET)],
];

for (const [name, c] of STATES) {
  Deno.bench(`full mask over ${V} tokens: ${name}`, { group: "mask" }, () => {
    let n = 0;
    for (let t = 0; t < V; t++) if (c.allows(t)) n++;
    if (n === 0) throw new Error(`${name}: no token allowed`);
  });
}

const one = STATES[1][1];
const hello = tokenizer.encode(" world")[0];
Deno.bench("one token checked (inside a string)", { group: "one" }, () => {
  if (!one.allows(hello)) throw new Error("refused");
});
