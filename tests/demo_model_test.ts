/**
 * The shipped demo model (models/demo): a real, tiny, trained Qwen3. Both engines
 * load it and their greedy answers read like (odd) English: most words they produce are
 * words of its training text (models/demo/words.txt). Not an exact string: a retrained
 * model may say something else, but a broken engine, tokenizer or export says gibberish.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Qwen3 } from "../mod.ts";

const DEMO = fileURLToPath(new URL("../models/demo/model.bin", import.meta.url));
const WORDS = new Set(
  (await Deno.readTextFile(fileURLToPath(new URL("../models/demo/words.txt", import.meta.url))))
    .split(/\s+/).filter(Boolean).map((w) => w.toLowerCase()),
);

/** Share of the words in `text` that the training text contains. */
function englishShare(text: string): { share: number; words: number } {
  const words = text.toLowerCase().match(/[a-z]+/g) ?? [];
  const known = words.filter((w) => WORDS.has(w)).length;
  return { share: words.length ? known / words.length : 0, words: words.length };
}

for (const engine of ["c", "ts"] as const) {
  Deno.test(`demo model (${engine} engine): greedy answers are English-like`, async () => {
    using model = await Qwen3.load(DEMO, { engine, contextLength: 512 });
    assert.equal(model.config.nLayers, 4);
    for (const prompt of ["What does water mean?", "Continue: And it came to pass"]) {
      using chat = model.chat({ thinking: false });
      const answer = await chat.send(prompt, { temperature: 0, maxTokens: 48 }).complete();
      const { share, words } = englishShare(answer);
      assert.ok(words >= 8, `too few words in the answer to ${prompt}: ${JSON.stringify(answer)}`);
      assert.ok(
        share >= 0.8,
        `only ${(share * 100).toFixed(0)}% known words in ${JSON.stringify(answer)}`,
      );
    }
  });
}

Deno.test("demo model: both engines give the same greedy answer", async () => {
  const answers: string[] = [];
  for (const engine of ["c", "ts"] as const) {
    using model = await Qwen3.load(DEMO, { engine, contextLength: 256 });
    using chat = model.chat({ thinking: false });
    answers.push(
      await chat.send("What does a dictionary mean?", { temperature: 0, maxTokens: 32 }).complete(),
    );
  }
  assert.equal(answers[0], answers[1]);
});
