/**
 * Holds our TypeScript tokenizer to Hugging Face's ids on the demo model's tokenizer.
 *
 * train_tokenizer.py writes `samples.json` (corpus documents and edge cases with the ids the
 * Hugging Face `tokenizers` package gives them); this loads the same tokenizer.json with
 * src/text/tokenizer.ts and compares every sample, added tokens recognised as Hugging Face does.
 *
 * Usage: deno run -R training/check_tokenizer.ts [TOKENIZER_DIR]  (default training/work/tokenizer)
 *
 * @module
 */
import { Tokenizer } from "../src/text/tokenizer.ts";

interface Sample {
  text: string;
  ids: number[];
}

const dir = Deno.args[0] ?? new URL("./work/tokenizer", import.meta.url).pathname;
const tokenizer = Tokenizer.fromJson(await Deno.readTextFile(`${dir}/tokenizer.json`));
const samples: Sample[] = JSON.parse(await Deno.readTextFile(`${dir}/samples.json`));
let failed = 0;
let tokens = 0;
for (const sample of samples) {
  const ids = tokenizer.encode(sample.text, { special: true });
  tokens += ids.length;
  const same = ids.length === sample.ids.length && ids.every((id, i) => id === sample.ids[i]);
  const roundTrip = tokenizer.decode(ids) === sample.text.normalize("NFC");
  if (!same || !roundTrip) {
    failed++;
    const at = ids.findIndex((id, i) => id !== sample.ids[i]);
    console.error(
      `mismatch (${same ? "decode" : `first at token ${at}`}): ${
        JSON.stringify(sample.text.slice(0, 80))
      }`,
    );
  }
}
console.log(`${samples.length - failed} passed, ${failed} failed (${tokens} tokens compared)`);
if (failed) Deno.exit(1);
