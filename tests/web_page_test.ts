/**
 * The chat page in a real browser: headless Chromium, driven by puppeteer-core, against a FAKE
 * `/v1/chat/completions` (a stand-in for `qwen3 serve` that streams OpenAI-format chunks slowly,
 * so the page can be watched mid-answer and stopped). It checks what a person would: text grows
 * token by token, thinking folds when the answer starts, Stop keeps the partial answer and hangs
 * up on the server, the next turn carries the conversation, errors show inline, settings persist.
 * A last test runs the page against the real `qwen3 serve` (startServer) with the demo model,
 * started with `--api-key`: the page says how to fix a 401, and sends the key once entered.
 * Screenshots (light desktop, dark phone, real server) go to `$QWEN3_TEST_OUT` or a temp folder.
 *
 * Chromium: `$QWEN3_CHROMIUM`, else Debian's `/usr/bin/chromium`; when missing and running as root
 * with apt-get, the `chromium` package is installed; otherwise the test is skipped with one line.
 */
import assert from "node:assert/strict";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { bundleChatPage } from "../src/server/page.ts";
import { startServer } from "../src/server/server.ts";
import { demoModelPath, Qwen3 } from "../mod.ts";

// ---------------------------------------------------------------------------------------------
// Finding a browser

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then((s) => s.isFile, () => false);
}

async function apt(args: string[]): Promise<boolean> {
  const status = await new Deno.Command("apt-get", {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "null",
    stderr: "null",
  }).output().catch(() => ({ success: false }));
  return status.success;
}

/** The path of a Chromium to drive, or why there is none. */
async function findChromium(): Promise<{ path: string } | { why: string }> {
  const override = Deno.env.get("QWEN3_CHROMIUM");
  if (override) {
    return await exists(override)
      ? { path: override }
      : { why: `QWEN3_CHROMIUM=${override} is missing` };
  }
  const candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"];
  for (const path of candidates) if (await exists(path)) return { path };
  if (Deno.build.os !== "linux" || Deno.uid() !== 0 || !await exists("/usr/bin/apt-get")) {
    return { why: "no Chromium at /usr/bin/chromium, and not root with apt-get to install it" };
  }
  const install = ["install", "-y", "-qq", "--no-install-recommends", "chromium"];
  if (!await apt(install) && !(await apt(["update", "-qq"]) && await apt(install))) {
    return { why: "apt-get install chromium failed" };
  }
  return await exists(candidates[0])
    ? { path: candidates[0] }
    : { why: "chromium installed no binary" };
}

const chromium = await findChromium();
if ("why" in chromium) console.log(`web_page_test: skipped, ${chromium.why}`);

// ---------------------------------------------------------------------------------------------
// The FAKE server: a stand-in for `qwen3 serve` until the real one is in the tree

const THINKING = ["The user ", "greets me. ", "I should answer ", "warmly and briefly."];
const ANSWER = (
  "Hello! I'm **Qwen3**, running locally on your CPU. I can help you write, explain code " +
  "like `fetch()`, summarise text, or think through a problem step by step. What would you " +
  "like to do today?"
).split(/(?<= )/);

interface FakeRequest {
  body: {
    messages: { role: string; content: string }[];
    stream?: boolean;
    temperature?: number;
    max_tokens?: number;
    chat_template_kwargs?: { enable_thinking?: boolean };
    stream_options?: { include_usage?: boolean };
  };
  /** Resolves when the client hung up before the answer was complete. */
  disconnected: PromiseWithResolvers<void>;
  done: boolean;
}

function fakeServer(page: string) {
  const requests: FakeRequest[] = [];
  /** The first answer waits here after its thinking, so the test can see "Thinking…" for sure. */
  const thinkingGate = Promise.withResolvers<void>();
  const encoder = new TextEncoder();
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (req.method === "GET" && url.pathname === "/") {
      return new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } });
    }
    if (req.method === "GET" && url.pathname === "/v1/models") {
      return Response.json({
        object: "list",
        data: [{ id: "fake-qwen3-stand-in", object: "model" }],
      });
    }
    if (req.method !== "POST" || url.pathname !== "/v1/chat/completions") {
      return new Response("not found", { status: 404 });
    }
    const body = await req.json() as FakeRequest["body"];
    const last = body.messages.at(-1)?.content ?? "";
    if (last.includes("fail")) {
      return Response.json({ error: { message: "fake failure: the model is busy" } }, {
        status: 503,
      });
    }
    const entry: FakeRequest = { body, disconnected: Promise.withResolvers(), done: false };
    const index = requests.push(entry) - 1;
    const chunk = (delta: Record<string, string>, finish: string | null = null) => ({
      id: `chatcmpl-fake-${index}`,
      object: "chat.completion.chunk",
      created: Math.floor(Date.now() / 1000),
      model: "fake-qwen3-stand-in",
      choices: [{ index: 0, delta, finish_reason: finish }],
    });
    let cancelled = false;
    const hangUp = () => {
      cancelled = true;
      if (!entry.done) entry.disconnected.resolve();
    };
    const stream = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (value: unknown) => {
          if (!cancelled) controller.enqueue(encoder.encode(`data: ${JSON.stringify(value)}\n\n`));
        };
        send(chunk({ role: "assistant", content: "" }));
        for (const piece of THINKING) {
          await sleep(30);
          send(chunk({ reasoning_content: piece }));
        }
        if (index === 0) await thinkingGate.promise;
        for (const piece of ANSWER) {
          await sleep(30);
          if (cancelled) return;
          send(chunk({ content: piece }));
        }
        send(chunk({}, "stop"));
        const completion = THINKING.length + ANSWER.length;
        send({
          ...chunk({}),
          choices: [],
          usage: {
            prompt_tokens: 17,
            completion_tokens: completion,
            total_tokens: 17 + completion,
          },
        });
        if (!cancelled) controller.enqueue(encoder.encode("data: [DONE]\n\n"));
        entry.done = true;
        if (!cancelled) controller.close();
      },
      cancel: hangUp,
    });
    return new Response(stream, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-cache" },
    });
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return { server, requests, releaseThinking: () => thinkingGate.resolve() };
}

// ---------------------------------------------------------------------------------------------
// Helpers over the page

function includes(actual: string, expected: string): void {
  assert.ok(actual.includes(expected), `expected "${expected}" in "${actual}"`);
}

const lastAnswer = ".message.assistant:last-child .answer";

async function text(page: Page, selector: string): Promise<string> {
  return await page.$eval(selector, (el) => el.textContent ?? "");
}

/** A DOM property of the first element that matches `selector` (`hidden`, `value`, `open`…). */
async function prop(page: Page, selector: string, name: string): Promise<unknown> {
  return await page.$eval(
    selector,
    (el, name) => (el as unknown as Record<string, unknown>)[name],
    name,
  );
}

async function waitFor<T>(what: string, probe: () => T | Promise<T>, ms = 5000): Promise<T> {
  const until = Date.now() + ms;
  while (true) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function sendMessage(page: Page, message: string): Promise<void> {
  await page.focus("#prompt");
  await page.keyboard.type(message);
  await page.keyboard.press("Enter");
}

// ---------------------------------------------------------------------------------------------

Deno.test({
  name: "web page: streams, thinks, stops, keeps the conversation, in headless Chromium",
  ignore: "why" in chromium,
  // puppeteer keeps sockets and timers of its own past close; they are its, not the page's.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const outDir = Deno.env.get("QWEN3_TEST_OUT") ??
      await Deno.makeTempDir({ prefix: "qwen3_web_page_" });
    await Deno.mkdir(outDir, { recursive: true });
    const { server, requests, releaseThinking } = fakeServer(await bundleChatPage());
    const base = `http://127.0.0.1:${server.addr.port}/`;
    let browser: Browser | undefined;
    try {
      browser = await puppeteer.launch({
        executablePath: (chromium as { path: string }).path,
        headless: true,
        args: [
          "--no-sandbox",
          "--disable-gpu",
          "--disable-dev-shm-usage",
          "--no-first-run",
          "--no-default-browser-check",
          "--disable-extensions",
        ],
      });
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (error) => pageErrors.push(String(error)));
      await page.setViewport({ width: 1100, height: 820 });
      await page.emulateMediaFeatures([{ name: "prefers-color-scheme", value: "light" }]);
      await page.goto(base);
      await waitFor(
        "the model name from /v1/models",
        async () => (await text(page, "#model-name")) === "fake-qwen3-stand-in",
      );

      await t.step("a sent message streams thinking, then the answer token by token", async () => {
        await sendMessage(page, "Hello there");
        await page.waitForSelector(".message.user .bubble");
        assert.deepEqual(await text(page, ".message.user .bubble"), "Hello there");
        await page.waitForSelector(".thinking.active[open]");
        assert.deepEqual(await text(page, ".thinking summary"), "Thinking…");
        await waitFor(
          "all thinking pieces",
          async () => (await text(page, ".thinking-text")) === THINKING.join("").trim(),
        );
        const streaming = `${outDir}/web_page_thinking.png`;
        await page.screenshot({ path: streaming });
        console.log(`screenshot: ${streaming}`);
        releaseThinking();
        const early = await waitFor("the answer's first words", () => text(page, lastAnswer));
        await new Promise((r) => setTimeout(r, 250));
        const later = await text(page, lastAnswer);
        const answering = `${outDir}/web_page_answering.png`;
        await page.screenshot({ path: answering });
        console.log(`screenshot: ${answering}`);
        assert.ok(later.length > early.length, `answer did not grow: "${early}" then "${later}"`);
        assert.ok(!await prop(page, ".thinking", "open"));
        includes(await text(page, ".thinking summary"), "Thought for");
      });

      let partial = "";
      await t.step("Stop keeps the partial answer and hangs up on the server", async () => {
        await page.click("#stop");
        await Promise.race([
          requests[0].disconnected.promise,
          new Promise((_, reject) =>
            setTimeout(() => reject(new Error("server saw no disconnect")), 3000)
          ),
        ]);
        await page.waitForSelector(".message.assistant:not(.streaming) .meta .stopped");
        partial = await text(page, lastAnswer);
        assert.ok(partial.length > 0, "the partial answer vanished");
        assert.ok(partial.length < ANSWER.join("").length, "the answer was complete before Stop");
        await new Promise((r) => setTimeout(r, 150));
        assert.deepEqual(await text(page, lastAnswer), partial, "text changed after Stop");
        assert.ok(await prop(page, "#stop", "hidden"));
      });

      await t.step(
        "the next turn sends the whole conversation and completes with stats",
        async () => {
          // Shift+Enter is a new line inside the message, not a send.
          await page.focus("#prompt");
          await page.keyboard.type("And what");
          await page.keyboard.down("Shift");
          await page.keyboard.press("Enter");
          await page.keyboard.up("Shift");
          assert.equal(requests.length, 1);
          await sendMessage(page, "can you do?");
          await waitFor("a second request", () => requests.length === 2);
          await page.waitForSelector(".message.assistant:last-child:not(.streaming) .meta", {
            timeout: 10_000,
          });
          const { body } = requests[1];
          assert.deepEqual(body.messages.map((m) => m.role), ["user", "assistant", "user"]);
          assert.deepEqual(body.messages[0].content, "Hello there");
          assert.deepEqual(
            body.messages[1].content,
            ANSWER.join("").slice(0, body.messages[1].content.length),
          );
          assert.ok(body.messages[1].content.length > 0);
          assert.deepEqual(body.messages[2].content, "And what\ncan you do?");
          assert.deepEqual(body.stream, true);
          assert.deepEqual(body.stream_options?.include_usage, true);
          assert.deepEqual(body.chat_template_kwargs?.enable_thinking, true);
          assert.deepEqual(typeof body.temperature, "number");
          assert.deepEqual(typeof body.max_tokens, "number");
          const meta = await text(page, ".message.assistant:last-child .meta");
          for (const part of ["17 prompt tokens", "tok/s", "first token"]) {
            includes(meta, part);
          }
          includes(
            await page.$eval(lastAnswer, (el) => el.innerHTML),
            "<strong>Qwen3</strong>",
          );
          const light = `${outDir}/web_page_light.png`;
          await page.screenshot({ path: light });
          console.log(`screenshot: ${light}`);
        },
      );

      await t.step("a server error shows inline, and a phone in dark mode fits", async () => {
        await sendMessage(page, "please fail");
        await page.waitForSelector(".message.error .error-text");
        includes(
          await text(page, ".message.error .error-text"),
          "fake failure: the model is busy",
        );
        await page.emulateMediaFeatures([{ name: "prefers-color-scheme", value: "dark" }]);
        await page.setViewport({ width: 390, height: 844, deviceScaleFactor: 2 });
        const overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth");
        assert.deepEqual(overflow, 0, "the page scrolls sideways at phone width");
        const dark = `${outDir}/web_page_dark_phone.png`;
        await page.screenshot({ path: dark });
        console.log(`screenshot: ${dark}`);
      });

      await t.step("settings persist across a reload; New chat empties the page", async () => {
        await page.setViewport({ width: 1100, height: 820 });
        await page.click("#settings-toggle");
        await page.type("#system-prompt", "Be brief.");
        await page.click("#thinking");
        await page.reload();
        await page.click("#settings-toggle");
        assert.deepEqual(
          await prop(page, "#system-prompt", "value"),
          "Be brief.",
        );
        assert.ok(
          !await prop(page, "#thinking", "checked"),
        );
        const settings = `${outDir}/web_page_settings.png`;
        await page.screenshot({ path: settings });
        console.log(`screenshot: ${settings}`);
        await page.keyboard.press("Escape");
        await sendMessage(page, "hi");
        await page.waitForSelector(".message.assistant");
        await page.click("#new-chat");
        assert.deepEqual(await page.$$eval(".message", (els) => els.length), 0);
        assert.ok(!await prop(page, "#empty", "hidden"));
        assert.deepEqual(requests.at(-1)!.body.messages[0], {
          role: "system",
          content: "Be brief.",
        });
        assert.deepEqual(requests.at(-1)!.body.chat_template_kwargs?.enable_thinking, false);
      });

      assert.deepEqual(pageErrors, []);
    } finally {
      await browser?.close();
      releaseThinking();
      await server.shutdown();
    }
  },
});

Deno.test({
  name: "web page: chats with the real qwen3 serve and the demo model, in headless Chromium",
  ignore: "why" in chromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const outDir = Deno.env.get("QWEN3_TEST_OUT") ??
      await Deno.makeTempDir({ prefix: "qwen3_web_page_" });
    await Deno.mkdir(outDir, { recursive: true });
    using model = await Qwen3.load(await demoModelPath(), { threads: 1 });
    // Started with an API key: the page must send it, and say what to do without it. The
    // model "loads" until the key is in: the page waits for it.
    const loading = Promise.withResolvers<Qwen3>();
    await using server = startServer(loading.promise, { port: 0, apiKey: "sea-key-42" });
    let browser: Browser | undefined;
    try {
      browser = await puppeteer.launch({
        executablePath: (chromium as { path: string }).path,
        headless: true,
        args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"],
      });
      const page = await browser.newPage();
      const pageErrors: string[] = [];
      page.on("pageerror", (error) => pageErrors.push(String(error)));
      await page.setViewport({ width: 1100, height: 820 });
      await page.goto(`${server.url}/`);
      // No key yet: a 401, shown as a clear message, and the key field opened.
      await sendMessage(page, "Tell me about the sea.");
      await page.waitForSelector(".message.error .error-text");
      includes(
        await text(page, ".message.error .error-text"),
        "This server needs an API key (it was started with --api-key)",
      );
      assert.ok(!await prop(page, "#settings", "hidden"), "the settings did not open");
      assert.equal(await page.evaluate("document.activeElement.id"), "api-key");
      const keyShot = `${outDir}/web_page_api_key.png`;
      await page.screenshot({ path: keyShot });
      console.log(`screenshot: ${keyShot}`);
      await page.keyboard.type("wrong");
      await page.keyboard.press("Escape");
      await sendMessage(page, "Tell me about the sea.");
      await waitFor(
        "the refused key's message",
        async () =>
          (await page.$$eval(".message.error .error-text", (els) => els.map((e) => e.textContent)))
            .some((t) => t?.includes("The server refused the API key")),
      );
      // The right key, kept in localStorage across a reload, unlocks the chat.
      await page.click("#api-key", { count: 3 });
      await page.keyboard.type("sea-key-42");
      await page.keyboard.press("Escape");
      await page.reload();
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await text(page, "#model-name"), "local model", "named while loading");
      loading.resolve(model);
      await waitFor(
        "the model name from /v1/models, once loaded",
        async () => (await text(page, "#model-name")) === "model.bin",
      );
      assert.equal(await prop(page, "#api-key", "value"), "sea-key-42");
      await sendMessage(page, "Tell me about the sea.");
      await page.waitForSelector(".message.assistant:last-child:not(.streaming) .meta", {
        timeout: 60_000,
      });
      const answer = await text(page, lastAnswer);
      assert.match(answer, /[a-z]{3,}/, `no answer text: ${JSON.stringify(answer)}`);
      assert.match(await text(page, ".message.assistant:last-child .meta"), /tok\/s/);
      const shot = `${outDir}/web_page_real_server.png`;
      await page.screenshot({ path: shot });
      console.log(`screenshot: ${shot}`);
      assert.deepEqual(pageErrors, []);
    } finally {
      await browser?.close();
    }
  },
});
