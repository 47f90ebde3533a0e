/**
 * The package as users get it (`deno task test:package`, which first builds `lib/` for the
 * five release targets with `deno task build:lib`):
 *
 * - `deno publish --dry-run` passes, and the files it would publish are what users need: the
 *   sources, the docs, the prebuilt library for each target (`lib/<os>-<arch>/`) and the demo
 *   model, and nothing else heavy (no tests, benchmarks, C sources, training data or the demo
 *   model's Hugging Face folder).
 * - A user's first command works from a folder with no checkout and no deno.json: a local HTTP
 *   server that serves exactly the published files stands in for JSR, and
 *   `deno run -A http://127.0.0.1:PORT/cli.ts chat` downloads the library and the demo model
 *   into the cache folder and chats.
 *
 * Not a `*_test.ts` file: `deno task test:deno` does not run it, since it needs `lib/`.
 * @module
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { libraryFileName } from "../ffi/library.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** The five release targets of `zig build cross`, as `lib/` folders. */
const TARGETS: readonly [string, typeof Deno.build.os][] = [
  ["linux-x86_64", "linux"],
  ["linux-aarch64", "linux"],
  ["macos-x86_64", "darwin"],
  ["macos-aarch64", "darwin"],
  ["windows-x86_64", "windows"],
];

/** The demo model's files a chat needs. */
const DEMO_FILES = [
  "models/demo/model.bin",
  "models/demo/model.bin.tokenizer",
  "models/demo/model.bin.template",
  "models/demo/model.bin.template.with-thinking",
  "models/demo/model.bin.template.with-system",
  "models/demo/model.bin.template.with-system-and-thinking",
  "models/demo/tokenizer.json",
];

/** Published paths (relative to the root) with their sizes, from `deno publish --dry-run`. */
async function publishedFiles(): Promise<Map<string, number>> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const out = dec.decode(r.stdout) + dec.decode(r.stderr);
  assert.ok(r.success, `deno publish --dry-run failed:\n${out}`);
  const files = new Map<string, number>();
  const units: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9 };
  for (const m of out.matchAll(/^\s+(file:\/\/\S+) \(([\d.]+)(B|KB|MB|GB)\)$/gm)) {
    const path = fileURLToPath(m[1]).slice(ROOT.length).replaceAll("\\", "/");
    files.set(path, Number(m[2]) * units[m[3]]);
  }
  assert.ok(files.size > 0, `no file list in:\n${out}`);
  return files;
}

const files = await publishedFiles();

Deno.test("deno publish --dry-run: the libraries, the demo model, and nothing heavy else", () => {
  for (const [dir, os] of TARGETS) {
    const lib = `lib/${dir}/${libraryFileName(os)}`;
    assert.ok(files.has(lib), `${lib} is not published (run deno task build:lib)`);
  }
  for (const f of DEMO_FILES) assert.ok(files.has(f), `${f} is not published`);
  for (const f of ["mod.ts", "cli.ts", "deno.json", "README.md", "LICENSE"]) {
    assert.ok(files.has(f), `${f} is not published`);
  }
  const unwanted =
    /^(tests|bench|csrc|training|tools|zig-out|node_modules|\.tools)\/|\/hf\/|\.gguf$/;
  for (const f of files.keys()) assert.ok(!unwanted.test(f), `${f} should not be published`);
  // Heavy means a megabyte: only the libraries and the demo model's weights are allowed it.
  for (const [f, size] of files) {
    if (size > 1e6) assert.match(f, /^lib\/|^models\/demo\/model\.bin$/, `${f}: ${size} bytes`);
  }
  const total = [...files.values()].reduce((a, b) => a + b, 0);
  console.log(`published: ${files.size} files, ${(total / 1e6).toFixed(1)} MB`);
  assert.ok(total < 20e6, `the package is ${total} bytes`);
});

/** Serves exactly the published files, as JSR serves a package's files. */
function servePublished(): { url: string; server: Deno.HttpServer<Deno.NetAddr> } {
  const types: Record<string, string> = {
    ts: "application/typescript; charset=utf-8",
    json: "application/json",
    md: "text/markdown",
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname).slice(1);
    if (!files.has(path)) return new Response("not published", { status: 404 });
    const body = await Deno.readFile(ROOT + path);
    const ext = path.slice(path.lastIndexOf(".") + 1);
    return new Response(body, {
      headers: { "content-type": types[ext] ?? "application/octet-stream" },
    });
  });
  return { url: `http://127.0.0.1:${server.addr.port}/`, server };
}

Deno.test({
  name: "from a remote URL, in an empty folder: cli.ts chat talks with the demo model",
  async fn() {
    const { url, server } = servePublished();
    const dir = await Deno.makeTempDir({ prefix: "qwen3_package_" });
    try {
      const cache = `${dir}/cache`;
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", `${url}cli.ts`, "chat", "-t", "0", "-n", "24"],
        cwd: dir,
        env: { QWEN3_CACHE_DIR: cache, NO_COLOR: "1" },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode("Tell me about the sea.\n\n"));
      await w.close();
      const r = await child.output();
      const dec = new TextDecoder();
      const out = dec.decode(r.stdout), err = dec.decode(r.stderr);
      assert.equal(r.code, 0, `exit ${r.code}\nstdout:\n${out}\nstderr:\n${err}`);
      assert.match(out, /[a-z]{3,}/, `no answer:\n${out}\n${err}`);
      assert.match(err, /decode \d+ tok/, err);
      // The library and the demo model came over HTTP into the cache, not from a checkout.
      const cached: string[] = [];
      for await (const e of walk(cache)) cached.push(e);
      assert.ok(cached.some((p) => p.endsWith(libraryFileName())), cached.join("\n"));
      assert.ok(cached.some((p) => p.endsWith("model.bin")), cached.join("\n"));
    } finally {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

async function* walk(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) yield* walk(p);
    else yield p;
  }
}
