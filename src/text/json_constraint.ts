/**
 * Constrained decoding to JSON: a byte-level JSON recogniser (RFC 8259), optionally held to a
 * subset of JSON Schema, that tells which tokens can extend what was generated so far
 * (docs/sampling.md#json-output). The server's `response_format` uses it: generation may only
 * pick tokens whose bytes keep the answer a valid prefix of a matching JSON document, may end
 * only where the document is complete, and stops as soon as its top-level value closes.
 *
 * The schema subset: `type` (a name or a list of names among object, array, string, number,
 * integer, boolean, null), `properties`, `required`, `additionalProperties` (true or false),
 * `items`, `minItems`, `maxItems`, `minLength`, `maxLength`, `enum` and `const`, nested to any
 * depth; the annotations `title`, `description`,
 * `$schema`, `$comment`, `examples` and `default` are ignored. Any other keyword is refused
 * ({@linkcode SchemaError} names it) rather than silently not enforced.
 * @module
 */

/** A schema keyword this recogniser cannot enforce, or a malformed schema. */
export class SchemaError extends Error {
  /** Where in the schema, as a JSON pointer-like path ("" for the root, "/properties/a"). */
  readonly path: string;
  /** What is wrong there (the message without the path). */
  readonly detail: string;

  /**
   * Makes the error.
   *
   * @param path Where in the schema.
   * @param detail What is wrong there.
   */
  constructor(path: string, detail: string) {
    super(`${path === "" ? "the schema" : `schema at ${path}`}: ${detail}`);
    this.name = "SchemaError";
    this.path = path;
    this.detail = detail;
  }
}

/** A JSON Schema type name. */
export type JsonTypeName =
  | "object"
  | "array"
  | "string"
  | "number"
  | "integer"
  | "boolean"
  | "null";
const TYPE_NAMES: readonly JsonTypeName[] = [
  "object",
  "array",
  "string",
  "number",
  "integer",
  "boolean",
  "null",
];
const ANNOTATIONS = new Set(["title", "description", "$schema", "$comment", "examples", "default"]);
const KEYWORDS = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "enum",
  "const",
  "minItems",
  "maxItems",
  "minLength",
  "maxLength",
]);

/** A checked schema node, ready for the recogniser. */
export interface SchemaNode {
  /** The types allowed; undefined: any. */
  types?: ReadonlySet<JsonTypeName>;
  /** Named properties and their schemas (an object value). */
  properties: ReadonlyMap<string, SchemaNode>;
  /** Property names that must appear. */
  required: readonly string[];
  /** Whether properties not named in `properties` may appear. */
  additional: boolean;
  /** Schema of every array element; undefined: any. */
  items?: SchemaNode;
  /** `enum` / `const`: the allowed values, each as the UTF-8 bytes of its compact JSON text
   * (`JSON.stringify`), held as a string of byte values. */
  literals?: readonly string[];
  /** `minItems` / `maxItems` of an array (0 and Infinity when not given). */
  itemCount: { min: number; max: number };
  /** `minLength` / `maxLength` of a string, in characters (code points; an escape is one). */
  length: { min: number; max: number };
}

const UNBOUNDED = { min: 0, max: Infinity } as const;

/** Any JSON value. */
export const ANY_JSON: SchemaNode = {
  properties: new Map(),
  required: [],
  additional: true,
  itemCount: UNBOUNDED,
  length: UNBOUNDED,
};

/** Any JSON object: `response_format` `{"type": "json_object"}`. */
export const ANY_OBJECT: SchemaNode = { ...ANY_JSON, types: new Set<JsonTypeName>(["object"]) };

const UTF8 = new TextEncoder();

/** The UTF-8 bytes of `text` as a string of byte values (one char per byte). */
function byteString(text: string): string {
  let s = "";
  for (const b of UTF8.encode(text)) s += String.fromCharCode(b);
  return s;
}

function typeOf(v: unknown): JsonTypeName[] {
  if (v === null) return ["null"];
  if (Array.isArray(v)) return ["array"];
  if (typeof v === "number") return Number.isInteger(v) ? ["integer", "number"] : ["number"];
  return [typeof v as JsonTypeName];
}

/**
 * Checks a JSON Schema against the supported subset and compiles it.
 *
 * @param schema The schema (parsed JSON).
 * @param path Where it sits in an enclosing schema (for messages).
 * @returns The compiled node.
 * @throws {SchemaError} naming the first unsupported keyword or malformed value.
 */
export function compileSchema(schema: unknown, path = ""): SchemaNode {
  if (schema === true) return ANY_JSON;
  if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
    throw new SchemaError(path, "must be an object");
  }
  const s = schema as Record<string, unknown>;
  for (const key of Object.keys(s)) {
    if (!KEYWORDS.has(key) && !ANNOTATIONS.has(key)) {
      throw new SchemaError(
        path,
        `the keyword "${key}" is not supported (supported: ${[...KEYWORDS].join(", ")})`,
      );
    }
  }
  let types: Set<JsonTypeName> | undefined;
  if (s.type !== undefined) {
    const list = Array.isArray(s.type) ? s.type : [s.type];
    if (list.length === 0) throw new SchemaError(`${path}/type`, "must name at least one type");
    for (const t of list) {
      if (!TYPE_NAMES.includes(t as JsonTypeName)) {
        throw new SchemaError(
          `${path}/type`,
          `${JSON.stringify(t)} is not one of ${TYPE_NAMES.join(", ")}`,
        );
      }
    }
    types = new Set(list as JsonTypeName[]);
    // An integer is a number: "number" admits it, so "integer" adds nothing beside it.
  }
  const properties = new Map<string, SchemaNode>();
  if (s.properties !== undefined) {
    const p = s.properties;
    if (p === null || typeof p !== "object" || Array.isArray(p)) {
      throw new SchemaError(`${path}/properties`, "must be an object");
    }
    for (const [name, sub] of Object.entries(p)) {
      properties.set(name, compileSchema(sub, `${path}/properties/${name}`));
    }
  }
  let required: string[] = [];
  if (s.required !== undefined) {
    if (!Array.isArray(s.required) || s.required.some((r) => typeof r !== "string")) {
      throw new SchemaError(`${path}/required`, "must be an array of property names");
    }
    required = [...new Set(s.required as string[])];
  }
  let additional = true;
  if (s.additionalProperties !== undefined) {
    if (typeof s.additionalProperties !== "boolean") {
      throw new SchemaError(
        `${path}/additionalProperties`,
        "only true or false is supported (not a schema)",
      );
    }
    additional = s.additionalProperties;
  }
  if (!additional) {
    const missing = required.filter((r) => !properties.has(r));
    if (missing.length > 0) {
      throw new SchemaError(
        `${path}/required`,
        `${JSON.stringify(missing[0])} is required but additionalProperties is false and ` +
          "properties does not name it: no object could match",
      );
    }
  }
  const items = s.items === undefined ? undefined : compileSchema(s.items, `${path}/items`);
  let literals: string[] | undefined;
  if (s.const !== undefined || s.enum !== undefined) {
    let values: unknown[];
    if (s.const !== undefined) values = [s.const];
    else if (Array.isArray(s.enum) && s.enum.length > 0) values = s.enum;
    else throw new SchemaError(`${path}/enum`, "must be a non-empty array");
    if (types) values = values.filter((v) => typeOf(v).some((t) => types!.has(t)));
    if (values.length === 0) {
      throw new SchemaError(path, "no enum / const value has one of the allowed types");
    }
    literals = [...new Set(values.map((v) => byteString(JSON.stringify(v))))];
  }
  const bounds = (min: string, max: string) => {
    const count = (name: string) => {
      const v = s[name];
      if (v === undefined) return undefined;
      if (!(Number.isInteger(v) && (v as number) >= 0)) {
        throw new SchemaError(
          `${path}/${name}`,
          `must be an integer >= 0, got ${JSON.stringify(v)}`,
        );
      }
      return v as number;
    };
    const b = { min: count(min) ?? 0, max: count(max) ?? Infinity };
    if (b.min > b.max) throw new SchemaError(`${path}/${min}`, `is more than ${max} ${b.max}`);
    return b;
  };
  return {
    types,
    properties,
    required,
    additional,
    items,
    literals,
    itemCount: bounds("minItems", "maxItems"),
    length: bounds("minLength", "maxLength"),
  };
}

// ---------------------------------------------------------------------------------------------
// The recogniser

/**
 * Whitespace outside strings, between two tokens of JSON: nothing, one space, or a newline
 * followed by at most this many spaces or tabs, as llama.cpp's JSON grammar has it (the rule
 * `ws ::= | " " | "\n" [ \t]{0,20}` of its grammars/json.gbnf). Without a bound a model could
 * pad forever, as random weights do.
 */
export const MAX_WHITESPACE_RUN = 20;

/** Where a frame of the stack stands. Frames are copied, never shared, when cloning; their
 * arrays are replaced, never changed in place, so a shallow copy is a full one. */
type Frame =
  | { k: "value"; s: SchemaNode }
  // st 0: after "{" (a key or "}"); 1: after a key (":"); 2: after a value ("," or "}");
  // 3: after "," (a key)
  | { k: "obj"; s: SchemaNode; st: 0 | 1 | 2 | 3; seen: readonly string[] }
  // st 0: after "[" (a value or "]"); 1: after a value ("," or "]"); 2: after "," (a value)
  | { k: "arr"; s: SchemaNode; st: 0 | 1 | 2; n: number } // n: elements begun
  // esc: 0 none, 1 after "\", 2..5 hex digits of \u read so far + 2; utf: continuation
  // bytes still due, the next one in lo..hi (RFC 3629's table: no overlong forms, no
  // surrogates, nothing past U+10FFFF); key: the raw bytes of an object key (undefined
  // for a value)
  // n: characters so far, within length (the schema's minLength / maxLength)
  | {
    k: "str";
    esc: number;
    utf: number;
    lo: number;
    hi: number;
    key?: string;
    n: number;
    length: { min: number; max: number };
  }
  // st as in number(): 0 start, 1 "-", 2 "0", 3 int digits, 4 ".", 5 fraction, 6 "e",
  // 7 exponent sign, 8 exponent digits; digits: how many the current part holds
  | { k: "num"; st: number; integer: boolean; digits: number }
  // a choice among fixed byte strings (true / false / null / enum / const / a closed set of
  // keys): those still possible, and how many bytes of them were read
  | { k: "lit"; cands: readonly string[]; pos: number; isKey: boolean };

const isWs = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
const NUMBER_END = new Set([2, 3, 5, 8]);
const DECODER = new TextDecoder("utf-8", { fatal: true });

/** The text of a finished key's raw bytes (between the quotes, escapes undone). */
function keyText(raw: string): string {
  const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  return JSON.parse(`"${DECODER.decode(bytes)}"`);
}

/**
 * A JSON document read byte by byte: `push` says whether a byte can extend what was read
 * into a prefix of a document matching the schema. A refused byte leaves the recogniser
 * unusable: test candidates on a {@linkcode JsonRecognizer.clone}.
 *
 * @example
 * ```ts
 * import { ANY_OBJECT, JsonRecognizer } from "./json_constraint.ts";
 *
 * const r = new JsonRecognizer(ANY_OBJECT);
 * console.log(r.pushText('{"a": [1, 2'), r.complete); // true false
 * console.log(r.pushText("]}"), r.closed); // true true
 * ```
 */
export class JsonRecognizer {
  #stack: Frame[];
  // The current whitespace run: -1 none yet, -2 one space (nothing more), n >= 0 a newline
  // and n spaces or tabs.
  #ws = -1;

  /**
   * Starts before the top-level value.
   *
   * @param root The schema of the top-level value (default: any JSON value).
   */
  constructor(root: SchemaNode = ANY_JSON) {
    this.#stack = [{ k: "value", s: root }];
  }

  /** A copy that can be fed without changing this one. */
  clone(): JsonRecognizer {
    const c = new JsonRecognizer();
    c.#stack = this.#stack.map((f) => ({ ...f }));
    c.#ws = this.#ws;
    return c;
  }

  /** True when the bytes so far are a whole document (a top-level number may go on). */
  get complete(): boolean {
    const st = this.#stack;
    if (st.length === 0) return true;
    if (st.length !== 1) return false;
    const f = st[0];
    if (f.k === "num") return NUMBER_END.has(f.st);
    if (f.k === "lit") return f.cands.some((c) => c.length === f.pos);
    return false;
  }

  /** True when the top-level value has closed: only whitespace may follow. */
  get closed(): boolean {
    return this.#stack.length === 0;
  }

  /**
   * Feeds a string's UTF-8 bytes.
   *
   * @param text The text.
   * @returns False at the first byte that cannot extend a matching document.
   */
  pushText(text: string): boolean {
    for (const b of UTF8.encode(text)) if (!this.push(b)) return false;
    return true;
  }

  /**
   * Feeds bytes.
   *
   * @param bytes The bytes.
   * @returns False at the first byte that cannot extend a matching document.
   */
  pushBytes(bytes: Uint8Array): boolean {
    for (let i = 0; i < bytes.length; i++) if (!this.push(bytes[i])) return false;
    return true;
  }

  /**
   * Feeds one byte.
   *
   * @param b A byte value (0..255).
   * @returns Whether the bytes so far are still a prefix of a matching document.
   */
  push(b: number): boolean {
    const st = this.#stack;
    for (;;) {
      const f = st[st.length - 1];
      if (f === undefined) return this.#space(b); // after the top-level value
      // The document starts with its value, as llama.cpp's `root ::= object` does.
      if (f.k === "value" && st.length === 1 && isWs(b)) return false;
      if (f.k !== "str") {
        if (isWs(b) && f.k !== "num" && !(f.k === "lit" && f.pos > 0)) return this.#space(b);
        if (!isWs(b)) this.#endSpace();
      }
      switch (f.k) {
        case "value":
          return this.#startValue(f.s, b);
        case "obj":
          return this.#object(f, b);
        case "arr":
          if (b === 0x5d && f.st !== 2) { // "]"
            if (f.n < f.s.itemCount.min) return false;
            st.pop();
            return true;
          }
          if (f.st === 1) {
            if (b !== 0x2c || f.n >= f.s.itemCount.max) return false; // ","
            f.st = 2;
            return true;
          }
          if (f.n >= f.s.itemCount.max) return false;
          f.st = 1;
          f.n++;
          st.push({ k: "value", s: f.s.items ?? ANY_JSON });
          continue;
        case "str":
          return this.#string(f, b);
        case "num": {
          const next = number(f.st, b, f.integer);
          const digits = isDigit(b) ? (next === f.st ? f.digits + 1 : 1) : 0;
          if (next >= 0 && digits <= (next === 8 ? MAX_EXPONENT_DIGITS : MAX_NUMBER_DIGITS)) {
            f.st = next;
            f.digits = digits;
            return true;
          }
          if (!NUMBER_END.has(f.st)) return false;
          st.pop(); // the number ended before b: b belongs to what encloses it
          continue;
        }
        case "lit": {
          const cands = f.cands.filter((c) => c.charCodeAt(f.pos) === b);
          if (cands.length > 0) {
            f.cands = cands;
            f.pos++;
            if (cands.length === 1 && cands[0].length === f.pos) this.#endLiteral(f);
            return true;
          }
          if (!f.cands.some((c) => c.length === f.pos)) return false;
          this.#endLiteral(f); // a literal that could have gone on (enum 1 and 12) ended
          continue;
        }
      }
    }
  }

  /** Whitespace between tokens: " ", or "\n" and MAX_WHITESPACE_RUN spaces or tabs. */
  #space(b: number): boolean {
    const ws = this.#ws;
    if (ws === -1 && b === 0x20) this.#ws = -2;
    else if (ws === -1 && b === 0x0a) this.#ws = 0;
    else if (ws >= 0 && ws < MAX_WHITESPACE_RUN && (b === 0x20 || b === 0x09)) this.#ws++;
    else return false;
    return true;
  }

  #endSpace(): void {
    this.#ws = -1;
  }

  #allows(s: SchemaNode, t: JsonTypeName): boolean {
    return s.types === undefined || s.types.has(t);
  }

  /** The first byte of a value replaces its "value" frame by the frame that reads it. */
  #startValue(s: SchemaNode, b: number): boolean {
    const st = this.#stack;
    st.pop();
    if (s.literals) {
      st.push({ k: "lit", cands: s.literals, pos: 0, isKey: false });
      return this.push(b);
    }
    if (b === 0x7b && this.#allows(s, "object")) { // "{"
      st.push({ k: "obj", s, st: 0, seen: [] });
      return true;
    }
    if (b === 0x5b && this.#allows(s, "array")) { // "["
      st.push({ k: "arr", s, st: 0, n: 0 });
      return true;
    }
    if (b === 0x22 && this.#allows(s, "string")) { // '"'
      st.push({ k: "str", esc: 0, utf: 0, lo: 0x80, hi: 0xbf, n: 0, length: s.length });
      return true;
    }
    if ((b === 0x2d || isDigit(b)) && (this.#allows(s, "number") || this.#allows(s, "integer"))) {
      const integer = !this.#allows(s, "number");
      st.push({ k: "num", st: number(0, b, integer), integer, digits: isDigit(b) ? 1 : 0 });
      return true;
    }
    const words: [number, string, JsonTypeName][] = [
      [0x74, "true", "boolean"],
      [0x66, "false", "boolean"],
      [0x6e, "null", "null"],
    ];
    for (const [first, word, type] of words) {
      if (b === first && this.#allows(s, type)) {
        st.push({ k: "lit", cands: [word], pos: 1, isKey: false });
        return true;
      }
    }
    return false;
  }

  #object(f: Extract<Frame, { k: "obj" }>, b: number): boolean {
    const st = this.#stack;
    const s = f.s;
    const open = f.st === 0 || f.st === 3;
    if (b === 0x7d && (f.st === 0 || f.st === 2)) { // "}"
      if (!s.required.every((r) => f.seen.includes(r))) return false;
      st.pop();
      return true;
    }
    if (f.st === 2) {
      if (b !== 0x2c || this.#keysLeft(f) === 0) return false; // ","
      f.st = 3;
      return true;
    }
    if (f.st === 1) {
      if (b !== 0x3a) return false; // ":"
      const key = f.seen[f.seen.length - 1];
      f.st = 2;
      st.push({ k: "value", s: s.properties.get(key) ?? ANY_JSON });
      return true;
    }
    if (!open || b !== 0x22) return false;
    f.st = 1;
    if (s.additional) {
      st.push({ k: "str", esc: 0, utf: 0, lo: 0x80, hi: 0xbf, key: "", n: 0, length: UNBOUNDED });
      return true;
    }
    const names = [...s.properties.keys()].filter((n) => !f.seen.includes(n));
    if (names.length === 0) return false;
    st.push({
      k: "lit",
      cands: names.map((n) => byteString(JSON.stringify(n))),
      pos: 1,
      isKey: true,
    });
    return true;
  }

  /** How many more keys an object may take (Infinity with additional properties). */
  #keysLeft(f: Extract<Frame, { k: "obj" }>): number {
    if (f.s.additional) return Infinity;
    let n = 0;
    for (const name of f.s.properties.keys()) if (!f.seen.includes(name)) n++;
    return n;
  }

  #string(f: Extract<Frame, { k: "str" }>, b: number): boolean {
    this.#endSpace();
    if (f.utf > 0) {
      if (b < f.lo || b > f.hi) return false;
      f.utf--;
      f.lo = 0x80;
      f.hi = 0xbf;
    } else if (f.esc === 1) {
      if (b === 0x75) f.esc = 2; // \u
      else if ('"\\/bfnrt'.includes(String.fromCharCode(b))) f.esc = 0;
      else return false;
    } else if (f.esc >= 2) {
      if (!isHex(b)) return false;
      f.esc = f.esc === 5 ? 0 : f.esc + 1;
    } else if (b === 0x22) {
      if (f.n < f.length.min) return false;
      this.#stack.pop();
      if (f.key !== undefined) return this.#addKey(f.key);
      return true;
    } else if (b < 0x20 || f.n >= f.length.max) return false; // a control byte, or one too many
    else if (b === 0x5c) {
      f.esc = 1;
      f.n++;
    } else if (b < 0x80) f.n++;
    else {
      if (b < 0xc2 || b > 0xf4) return false;
      f.n++;
      f.utf = b <= 0xdf ? 1 : b <= 0xef ? 2 : 3;
      f.lo = b === 0xe0 ? 0xa0 : b === 0xf0 ? 0x90 : 0x80;
      f.hi = b === 0xed ? 0x9f : b === 0xf4 ? 0x8f : 0xbf;
    }
    if (f.key !== undefined) f.key += String.fromCharCode(b);
    return true;
  }

  /** A key has closed: the enclosing object records it (a repeated key is refused). */
  #addKey(raw: string): boolean {
    let key: string;
    try {
      key = keyText(raw);
    } catch {
      return false; // a lone surrogate escape or bytes that are not UTF-8
    }
    const obj = this.#stack[this.#stack.length - 1] as Extract<Frame, { k: "obj" }>;
    if (obj.seen.includes(key)) return false;
    obj.seen = [...obj.seen, key];
    return true;
  }

  #endLiteral(f: Extract<Frame, { k: "lit" }>): void {
    this.#stack.pop();
    if (f.isKey) {
      const obj = this.#stack[this.#stack.length - 1] as Extract<Frame, { k: "obj" }>;
      const text = f.cands.find((c) => c.length === f.pos)!;
      obj.seen = [...obj.seen, keyText(text.slice(1, -1))];
    }
  }
}

/**
 * Most digits before the point, and after it: llama.cpp's JSON grammar bounds the integer
 * part alike (`[1-9] [0-9]{0,15}`, grammars/json.gbnf), past the 17 significant digits a
 * double holds; without a bound a model could write digits forever.
 */
export const MAX_NUMBER_DIGITS = 16;
/** Most exponent digits (a double's exponent has at most 3). */
export const MAX_EXPONENT_DIGITS = 3;

/** The number grammar's next state after byte b, or -1 (see the "num" frame). */
function number(state: number, b: number, integer: boolean): number {
  const digit = isDigit(b);
  const dot = b === 0x2e && !integer;
  const e = (b === 0x65 || b === 0x45) && !integer;
  switch (state) {
    case 0:
      return b === 0x2d ? 1 : b === 0x30 ? 2 : digit ? 3 : -1;
    case 1:
      return b === 0x30 ? 2 : digit ? 3 : -1;
    case 2:
      return dot ? 4 : e ? 6 : -1;
    case 3:
      return digit ? 3 : dot ? 4 : e ? 6 : -1;
    case 4:
      return digit ? 5 : -1;
    case 5:
      return digit ? 5 : e ? 6 : -1;
    case 6:
      return b === 0x2b || b === 0x2d ? 7 : digit ? 8 : -1;
    case 7:
    case 8:
      return digit ? 8 : -1;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Tokens

/** What the token constraint needs from a tokenizer. */
export interface ConstraintVocabulary {
  /** The raw bytes of a token id (empty past the tokenizer). */
  tokenBytes(id: number): Uint8Array;
  /** True for added (control) tokens, which never belong to the JSON text. */
  isAdded(id: number): boolean;
}

/**
 * Decides token by token whether a generated answer can still become a JSON document
 * matching a schema (`Qwen3GenerateOptions.constraint`). Tokens with no bytes and added
 * (control) tokens are never part of the document. Make one per generation: it keeps the
 * document so far.
 *
 * @example JSON from the demo model, whose random weights never write it unasked
 * ```ts
 * import { compileSchema, demoModelPath, JsonTokenConstraint, Qwen3 } from "@q3/qwen3";
 *
 * using model = await Qwen3.load(await demoModelPath());
 * const schema = compileSchema({
 *   type: "object",
 *   properties: { ok: { type: "boolean" } },
 *   required: ["ok"],
 *   additionalProperties: false,
 * });
 * const constraint = new JsonTokenConstraint(model.tokenizer, schema);
 * const prompt = "<|im_start|>user\nAre you well?<|im_end|>\n<|im_start|>assistant\n" +
 *   "<think>\n\n</think>\n\n";
 * const run = model.generate(prompt, { special: true, temperature: 0, maxTokens: 64, constraint });
 * const text = await run.complete();
 * console.log(JSON.parse(text), run.stats?.stopReason); // { ok: true } constraint_closed
 * ```
 */
export class JsonTokenConstraint {
  /** Whether the first token may open a `<think>` block before the document. */
  readonly thinkFirst: boolean;
  #vocab: ConstraintVocabulary;
  #json: JsonRecognizer;

  /**
   * Starts before the document.
   *
   * @param vocab The tokenizer.
   * @param root The top-level value's schema ({@linkcode compileSchema}, or
   * {@linkcode ANY_OBJECT} for `json_object`).
   * @param opts `thinkFirst`: the model may reason in a `<think>` block first (thinking on).
   */
  constructor(vocab: ConstraintVocabulary, root: SchemaNode, opts: { thinkFirst?: boolean } = {}) {
    this.thinkFirst = opts.thinkFirst ?? false;
    this.#vocab = vocab;
    this.#json = new JsonRecognizer(root);
  }

  /**
   * Whether `token` can come next.
   *
   * @param token A token id.
   * @returns True when its bytes extend the document so far into a valid prefix.
   */
  allows(token: number): boolean {
    const bytes = this.#vocab.tokenBytes(token);
    if (bytes.length === 0 || this.#vocab.isAdded(token)) return false;
    return this.#json.clone().pushBytes(bytes);
  }

  /**
   * Takes `token` (one {@linkcode JsonTokenConstraint.allows} accepted).
   *
   * @param token A token id.
   * @throws {Error} when the token does not fit (a caller's bug).
   */
  accept(token: number): void {
    if (!this.allows(token)) throw new Error(`token ${token} does not continue the JSON text`);
    this.#json.pushBytes(this.#vocab.tokenBytes(token));
  }

  /** True when the document is whole: the answer may end here. */
  get complete(): boolean {
    return this.#json.complete;
  }

  /** True when the top-level value has closed: generation ends. */
  get closed(): boolean {
    return this.#json.closed;
  }
}
