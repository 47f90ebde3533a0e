/**
 * The chat page of `qwen3 serve`: the TypeScript, CSS and HTML in `web/`, bundled by esbuild into
 * one self-contained HTML string (script and style inlined, nothing else to fetch). The server
 * builds it once at start and serves it at `/`; `deno task build:web` writes the same page to
 * `web/dist/index.html` to open or inspect.
 *
 * The sources are read through `fetch` relative to this module, so the page builds the same from
 * a checkout (`file:`) and from the published package (`https:`).
 * @module
 */

/** Where the page's sources live, relative to this module. */
const WEB_DIR = new URL("../../web/", import.meta.url);

/** The links in `web/index.html` that the bundle replaces; one source of truth for both names. */
const STYLE_TAG = '<link rel="stylesheet" href="./style.css" />';
const SCRIPT_TAG = '<script type="module" src="./app.ts"></script>';

let cached: Promise<string> | undefined;

/**
 * Builds the chat page once and returns the same HTML on every later call.
 *
 * @returns the whole page as one HTML document
 * @throws {Error} when a source file cannot be read or esbuild reports an error; a failed build is
 * not cached, so the next call tries again
 * @example Serving the page
 * ```ts ignore
 * import { buildChatPage } from "./page.ts";
 * const page = await buildChatPage();
 * Deno.serve((req) =>
 *   new URL(req.url).pathname === "/"
 *     ? new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } })
 *     : new Response("not found", { status: 404 })
 * );
 * ```
 */
export function buildChatPage(): Promise<string> {
  cached ??= bundleChatPage().catch((error) => {
    cached = undefined;
    throw error;
  });
  return cached;
}

async function readSource(url: URL): Promise<string> {
  const response = await fetch(url).catch((error: Error) => {
    throw new Error(`Cannot build the chat page as ${url.href} is unreadable: ${error.message}`);
  });
  if (!response.ok) {
    await response.body?.cancel();
    throw new Error(`Cannot build the chat page as ${url.href} answered HTTP ${response.status}`);
  }
  return await response.text();
}

/** Bundles `web/` without the cache: every call runs esbuild again. */
export async function bundleChatPage(): Promise<string> {
  // By its npm: specifier, not deno.json's import map, so `serve` also runs from a plain URL.
  // deno-lint-ignore no-import-prefix
  const esbuild = await import("npm:esbuild@0.28.2");
  const fromUrls: import("npm:esbuild@0.28.2").Plugin = {
    name: "web-sources",
    setup(build) {
      build.onResolve({ filter: /.*/ }, (args) => ({
        path: new URL(args.path, args.importer || WEB_DIR).href,
        namespace: "web",
      }));
      build.onLoad({ filter: /.*/, namespace: "web" }, async (args) => ({
        contents: await readSource(new URL(args.path)),
        loader: args.path.endsWith(".css") ? "css" : "ts",
      }));
    },
  };
  try {
    const result = await esbuild.build({
      entryPoints: ["app.ts", "style.css"],
      bundle: true,
      write: false,
      minify: true,
      format: "iife",
      target: ["es2022", "chrome110", "firefox115", "safari16"],
      charset: "utf8",
      legalComments: "none",
      outdir: "out",
      logLevel: "silent",
      plugins: [fromUrls],
    });
    const output = (ext: string) => {
      const file = result.outputFiles.find((f) => f.path.endsWith(ext));
      if (!file) throw new Error(`Cannot build the chat page as esbuild wrote no ${ext} file`);
      return file.text;
    };
    const js = output(".js");
    const css = output(".css");
    // Inline text must not close its own element early; esbuild escapes these, this makes sure.
    if (/<\/script/i.test(js) || /<\/style/i.test(css)) {
      throw new Error("Cannot inline the chat page's bundle as it contains a closing tag");
    }
    let html = await readSource(new URL("index.html", WEB_DIR));
    for (const tag of [STYLE_TAG, SCRIPT_TAG]) {
      if (!html.includes(tag)) {
        throw new Error(`Cannot build the chat page as web/index.html lacks ${tag}`);
      }
    }
    // Function replacements: a bundle may hold `$&` or `$'`, which a string replacement expands.
    html = html.replace(STYLE_TAG, () => `<style>${css}</style>`);
    html = html.replace(SCRIPT_TAG, () => `<script>${js}</script>`);
    return html;
  } finally {
    await esbuild.stop();
  }
}
