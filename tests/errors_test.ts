/**
 * The TypeScript status table (src/errors.ts C_STATUSES) against the C header's
 * `Qwen3Status` enum, read from csrc/include/qwen3_inference.h, so the two cannot drift; the
 * statuses' mapping to Qwen3Error codes; and the message helpers' escaping.
 */

import assert from "node:assert/strict";
import {
  C_STATUSES,
  escapeForMessage,
  quoteBytes,
  quoteExcerpt,
  Qwen3Error,
  STATUS,
} from "../src/errors.ts";
import { STATUS as FFI_STATUS } from "../ffi/symbols.ts";

const HEADER = new URL("../csrc/include/qwen3_inference.h", import.meta.url);

/** The `Qwen3Status` enum's constants and values, as the header writes them. */
async function headerStatuses(): Promise<Map<string, number>> {
  const text = await Deno.readTextFile(HEADER);
  const body = text.match(/typedef enum Qwen3Status \{([\s\S]*?)\} Qwen3Status;/);
  assert.ok(body, "qwen3_inference.h has no `typedef enum Qwen3Status { ... } Qwen3Status;`");
  const out = new Map<string, number>();
  for (const m of body[1].replace(/\/\*[\s\S]*?\*\//g, "").matchAll(/(\w+)\s*=\s*(-?\d+)/g)) {
    out.set(m[1], Number(m[2]));
  }
  return out;
}

Deno.test("C_STATUSES lists exactly the header's Qwen3Status constants with their values", async () => {
  const header = await headerStatuses();
  assert.ok(header.size >= 7, `parsed only ${header.size} constants from the header`);
  assert.deepEqual(
    new Map(C_STATUSES.map((s) => [s.name, s.value])),
    header,
    "src/errors.ts C_STATUSES differs from csrc/include/qwen3_inference.h",
  );
});

Deno.test("every failure status has its own Qwen3Error code; success has none", () => {
  for (const s of C_STATUSES) {
    if (s.value === 0) assert.equal(s.code, undefined, s.name);
    else assert.ok(s.value < 0 && s.code !== undefined, s.name);
    assert.ok(s.meaning.length > 0, s.name);
  }
  const codes = C_STATUSES.filter((s) => s.code).map((s) => s.code);
  assert.equal(new Set(codes).size, codes.length, "two statuses share a code");
});

Deno.test("STATUS and fromStatus follow the table; ffi/ uses the same STATUS", () => {
  assert.equal(FFI_STATUS, STATUS);
  for (const s of C_STATUSES) {
    const short = s.name.replace(/^QWEN3_(ERR_)?/, "") as keyof typeof STATUS;
    assert.equal(STATUS[short], s.value, s.name);
    const e = Qwen3Error.fromStatus(s.value, "why");
    assert.equal(e.code, s.code ?? "library", s.name);
    assert.equal(e.message, "why");
  }
  assert.equal(Object.keys(STATUS).length, C_STATUSES.length);
  assert.equal(Qwen3Error.fromStatus(-99, "").code, "library");
  assert.equal(Qwen3Error.fromStatus(-99, "").message, "C engine status -99");
});

Deno.test("file contents in messages: escaped, quoted and cut as the docs show", () => {
  assert.equal(escapeForMessage("bad\u001b[2J\nline"), "bad\\u001b[2J\\u000aline");
  assert.equal(quoteExcerpt("\u0120a\nb"), '"\u0120a\\nb"');
  assert.equal(quoteExcerpt("x".repeat(100), 8), '"xxxxxxxx"...');
  assert.equal(quoteBytes("blk.0\u001b[2J\n\u00e9"), "blk.0\\x1B[2J\\x0A\\xC3\\xA9");
  assert.equal(quoteBytes(new Uint8Array([0x61, 0xff])), "a\\xFF");
});
