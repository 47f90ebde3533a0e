/**
 * `deno task build:web`: writes the chat page that `qwen3 serve` shows at `/` to
 * `web/dist/index.html` (one file, script and style inlined) to open in a browser or inspect.
 * The server does not need this step: it builds the same page in memory at start.
 *
 * ```sh
 * deno task build:web            # web/dist/index.html
 * deno run -A tools/build_web.ts OUT.html
 * ```
 * @module
 */
import { bundleChatPage } from "../src/server/page.ts";

if (import.meta.main) {
  const root = new URL("..", import.meta.url);
  const out = Deno.args[0] ?? new URL("web/dist/index.html", root).pathname;
  const t0 = performance.now();
  const html = await bundleChatPage();
  await Deno.mkdir(new URL(".", new URL(out, `file://${Deno.cwd()}/`)), { recursive: true });
  await Deno.writeTextFile(out, html);
  console.log(
    `wrote ${out} (${(html.length / 1024).toFixed(1)} KiB) in ${
      (performance.now() - t0).toFixed(0)
    } ms`,
  );
}
