/**
 * The chat page's pure parts, without a browser: the server-sent-event reader (events cut at any
 * byte, CRLF, multi-line data, [DONE], a stream cut short, errors mid-stream) and the Markdown
 * renderer (escaping first, then the few constructs answers use).
 */
import assert from "node:assert/strict";
import { errorMessage, parseChunk, readEvents } from "../web/sse.ts";
import { escapeHtml, renderMarkdown } from "../web/markdown.ts";

/** A body that delivers `text` in pieces of `size` bytes, as a slow network would. */
function body(text: string, size: number): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at += size));
    },
  });
}

async function events(text: string, size: number): Promise<string[]> {
  const out: string[] = [];
  for await (const data of readEvents(body(text, size))) out.push(data);
  return out;
}

Deno.test("readEvents: the same events whatever the read boundaries", async () => {
  const stream = 'data: {"t":"héllo"}\n\n: a comment\r\ndata: {"t":"wörld 🌍"}\r\n\r\n' +
    "event: x\ndata: line one\ndata: line two\n\ndata: [DONE]\n\ndata: after done\n\n";
  const expected = ['{"t":"héllo"}', '{"t":"wörld 🌍"}', "line one\nline two"];
  for (const size of [1, 2, 3, 7, 64, 4096]) {
    assert.deepEqual(await events(stream, size), expected, `pieces of ${size} bytes`);
  }
});

Deno.test("readEvents: a stream cut short still yields its last event", async () => {
  assert.deepEqual(await events('data: {"a":1}\n\ndata: {"b":2}', 5), ['{"a":1}', '{"b":2}']);
  assert.deepEqual(await events("", 5), []);
});

Deno.test("parseChunk: chunks, usage, errors mid-stream", () => {
  const chunk = parseChunk(
    '{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"reasoning_content":"hm"},"finish_reason":null}]}',
  );
  assert.equal(chunk.choices[0].delta.reasoning_content, "hm");
  const usage = parseChunk(
    '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}',
  );
  assert.equal(usage.usage?.total_tokens, 7);
  assert.deepEqual(parseChunk("{}").choices, []);
  assert.throws(() => parseChunk('{"error":{"message":"context full"}}'), /context full/);
  assert.throws(() => parseChunk("not json"), /not JSON: not json/);
  assert.equal(errorMessage({ error: "plain" }), "plain");
  assert.equal(errorMessage({ choices: [] }), undefined);
});

Deno.test("renderMarkdown: escapes everything the model writes", () => {
  assert.equal(
    escapeHtml(`<a href="x">'&'</a>`),
    "&#60;a href=&#34;x&#34;&#62;&#39;&#38;&#39;&#60;/a&#62;",
  );
  const html = renderMarkdown(
    '<img src=x onerror="alert(1)"> **<b>** `<i>`\n```\n</pre><script>\n```',
  );
  assert.ok(!/<(img|b|i|script)\b/.test(html), html);
  assert.ok(!html.includes("</pre><"), html.replace("</code></pre>", ""));
});

Deno.test("renderMarkdown: the constructs answers use", () => {
  assert.equal(
    renderMarkdown("**bold** and *it* and `x*y*z`"),
    "<p><strong>bold</strong> and <em>it</em> and <code>x*y*z</code></p>",
  );
  assert.equal(
    renderMarkdown("## Title\n- a\n- b\n\n1. one\n2. two"),
    "<h4>Title</h4><ul><li>a</li><li>b</li></ul><ol><li>one</li><li>two</li></ol>",
  );
  assert.equal(renderMarkdown("line\nnext\n\npara"), "<p>line<br>next</p><p>para</p>");
  assert.equal(
    renderMarkdown("```ts\nconst a = 1;\n```\nafter"),
    '<pre data-lang="ts"><code>const a = 1;</code></pre><p>after</p>',
  );
  // Still streaming: the fence is open, and the code so far shows as code.
  assert.equal(
    renderMarkdown("see:\n```py\nprint(1)"),
    '<p>see:</p><pre data-lang="py"><code>print(1)</code></pre>',
  );
  assert.equal(renderMarkdown("2 * 3 * 4"), "<p>2 * 3 * 4</p>");
});
