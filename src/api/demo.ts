/**
 * The demo model that ships with the package (`models/demo/`, described in its README.md):
 * a 4.2M-parameter Qwen3 trained on public-domain English, small enough to load anywhere,
 * so examples and `qwen3 chat` work without downloading a real checkpoint.
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { cacheDir, download } from "../../ffi/library.ts";
import { Qwen3Error } from "../errors.ts";
import { TEMPLATE_SUFFIXES } from "../text/template.ts";

/** The demo model's folder, relative to the package root. */
const DEMO_DIR = "models/demo/";
/** The model file inside {@link DEMO_DIR}. */
const DEMO_MODEL = "model.bin";

/**
 * What a download of the demo model fetches: the model, its side files as `qwen3 export`
 * writes them (the tokenizer.json loading reads, qwen3.c's `.tokenizer` and the four chat
 * templates) and its description and sources, whose licence notices travel with the weights.
 */
const DEMO_FILES: readonly string[] = [
  DEMO_MODEL,
  "tokenizer.json",
  `${DEMO_MODEL}.tokenizer`,
  ...Object.values(TEMPLATE_SUFFIXES).map((suffix) => DEMO_MODEL + suffix),
  "README.md",
  "SOURCES.md",
];

/**
 * Returns the path of the demo model's `model.bin`, ready for {@linkcode Qwen3.load}: a
 * 4.2M-parameter Qwen3 (4 layers, 4,122 tokens) trained on public-domain English, which
 * answers in odd but real English.
 *
 * When this module runs from a local file (a checkout, `deno run cli.ts`) the path is the
 * shipped `models/demo/model.bin`. When it runs from a remote URL (JSR), the model and its
 * side files (about 4.8 MB) are downloaded once into the same per-user cache folder the C
 * library goes to (`QWEN3_CACHE_DIR`, else `<user cache>/q3-qwen3/<version>/<os>-<arch>/`),
 * under `models/demo/`, and later calls reuse them.
 *
 * Needs `--allow-read`; from a remote URL also `--allow-net`, `--allow-write` and
 * `--allow-env` (for the cache folder).
 *
 * @returns The path of the demo `model.bin`; its tokenizer and templates are beside it.
 * @throws {Qwen3Error} `io` when the shipped file is missing, or a download fails (the
 * message names the URL and the reason).
 *
 * @example Chat with the demo model
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * using model = await Qwen3.load(await demoModelPath(), { engine: "ts", contextLength: 256 });
 * using chat = model.chat();
 * const answer = chat.send("What does water mean?", { temperature: 0, maxTokens: 12 });
 * console.log(await answer.complete());
 * ```
 */
export async function demoModelPath(): Promise<string> {
  return await demoModelPathAt(new URL("../../", import.meta.url));
}

/**
 * {@link demoModelPath} for the package whose root is `root`: the local file for a `file:`
 * root, else the files downloaded from `root` into `cache`.
 *
 * @param root The package root URL (the folder holding `mod.ts` and `models/`).
 * @param cache The folder the downloaded model goes under (in `models/demo/`); by default
 * the per-user cache folder of the C library ({@link cacheDir}).
 * @returns The path of the demo `model.bin`.
 * @throws {Qwen3Error} `io` when the local file is missing or a download fails.
 */
export async function demoModelPathAt(root: URL, cache: string = cacheDir()): Promise<string> {
  const base = new URL(DEMO_DIR, root);
  if (base.protocol === "file:") {
    const path = fileURLToPath(new URL(DEMO_MODEL, base));
    let isFile = false;
    try {
      isFile = (await Deno.stat(path)).isFile;
    } catch { /* reported below */ }
    if (!isFile) throw new Qwen3Error("io", `${path}: the demo model is not there`);
    return path;
  }
  const dir = join(cache, DEMO_DIR);
  for (const file of DEMO_FILES) {
    const url = new URL(file, base);
    try {
      await download(url, dir, file);
    } catch (e) {
      const why = (e instanceof Error ? e.message : String(e)).split("\n")[0];
      throw new Qwen3Error(
        "io",
        `cannot download the demo model file ${url.href} into ${dir}: ${why}`,
      );
    }
  }
  return join(dir, DEMO_MODEL);
}
