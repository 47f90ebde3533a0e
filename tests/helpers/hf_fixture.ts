/**
 * A committed Hugging Face fixture folder (tests/fixtures/hf_tiny_*) made usable: weights
 * unzipped and the real Qwen3 tokenizer.json added.
 * @module
 */

import { join } from "node:path";
import { QWEN3_TOKENIZER_JSON } from "./tokenizer_path.ts";

/**
 * Copies the fixture folder `src` into `dest` (created if missing), unzipping each `*.gz`
 * file (`model.safetensors.gz` -> `model.safetensors`) and adding tokenizer.json from the npm
 * tokenizer package, which is too large to commit with every fixture.
 *
 * @param src The fixture folder, as a URL ending in `/`.
 * @param dest The folder to fill.
 * @returns `dest`.
 */
export async function materializeHfFixture(src: URL, dest: string): Promise<string> {
  await Deno.mkdir(dest, { recursive: true });
  for await (const e of Deno.readDir(src)) {
    const from = new URL(e.name, src);
    if (e.name.endsWith(".gz")) {
      const file = await Deno.open(from);
      const out = await Deno.open(join(dest, e.name.slice(0, -3)), { write: true, create: true });
      await file.readable.pipeThrough(new DecompressionStream("gzip")).pipeTo(out.writable);
    } else {
      await Deno.copyFile(from, join(dest, e.name));
    }
  }
  await Deno.copyFile(QWEN3_TOKENIZER_JSON, join(dest, "tokenizer.json"));
  return dest;
}
