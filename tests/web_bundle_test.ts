/**
 * The chat page bundle without a browser: one self-contained HTML document (script and style
 * inlined, no link left to a source file), built once and then served from memory.
 */
import assert from "node:assert/strict";
import { buildChatPage } from "../src/server/page.ts";

Deno.test("buildChatPage: one self-contained document, built once", async () => {
  const [a, b] = await Promise.all([buildChatPage(), buildChatPage()]);
  assert.equal(a, b);
  assert.equal(await buildChatPage(), a);
  assert.ok(a.startsWith("<!doctype html>"), a.slice(0, 40));
  assert.equal(a.match(/<script>/g)?.length, 1);
  assert.equal(a.match(/<style>/g)?.length, 1);
  for (const external of ["app.ts", "style.css", "<script src", 'rel="stylesheet"']) {
    assert.ok(!a.includes(external), `the page still refers to ${external}`);
  }
  // The request the server will see, spelled as the page spells it.
  for (const field of ["v1/chat/completions", "include_usage", "enable_thinking"]) {
    assert.ok(a.includes(field), `the bundle lacks ${field}`);
  }
  assert.ok(a.length < 64 * 1024, `the page grew to ${a.length} bytes`);
});
