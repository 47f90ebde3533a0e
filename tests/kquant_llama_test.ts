/**
 * K-quant GGUFs quantised by llama.cpp run in both engines as in llama.cpp (optional peer:
 * llama-cpp-python, `QWEN3_LLAMA_PYTHON` or the venv `deno task bench:compare` builds under
 * .tools/; skipped with one line without it). Needs the C library (`deno task build`).
 *
 * tools/make_kquant_fixture.py's tiny random F32 Qwen3 (dim 256, feed-forward 512, or 320 so
 * ffn_down takes llama.cpp's 32-value fallback types) is quantised by `llama_model_quantize`
 * to Q4_K_M and Q5_K_M (and Q8_0, the established path, as a baseline); llama.cpp decodes
 * greedily from a prompt, and on that same token sequence both engines must pick llama.cpp's
 * token at every step but near-ties (llama.cpp's two candidates within TIE of each other in
 * probability), with next-token probabilities within PROB_BOUND of llama.cpp's. llama.cpp
 * quantises activations differently (per 256 values for K-quants, with its own rounding) and
 * keeps an F16 KV cache, and this tiny random model's next-token distributions are peaked, so
 * the probabilities differ by a few percent: on the same model the Q8_0 file differs by 0.052
 * and the K-quant files by at most 0.070 (measured with llama-cpp-python 0.3.36).
 */

import assert from "node:assert/strict";
import { CEngine } from "../ffi/c_engine.ts";
import { TsEngine } from "../src/reference/ts_engine.ts";
import type { Engine } from "../src/types.ts";
import { findLlamaPython, llamaSkipLine } from "./helpers/llama_python.ts";

/** Largest |p_ours - p_llama.cpp| over the vocabulary and steps (measured worst: 0.070). */
const PROB_BOUND = 0.1;
/** llama.cpp's top two tokens closer than this in probability are a near-tie. */
const TIE = 0.1;
const PROMPT = [40, 71, 300, 12, 250, 99, 5];
const STEPS = 10;
const ROOT = new URL("..", import.meta.url).pathname;

const LLAMA_MODULES = ["gguf"];
const LLAMA_PYTHON = await findLlamaPython(LLAMA_MODULES);
if (!LLAMA_PYTHON) console.log(llamaSkipLine("the llama.cpp K-quant checks", LLAMA_MODULES));

/** Writes the F32 model, quantises it, decodes greedily in llama.cpp: tokens and logits. */
const SCRIPT = `
import json, sys, os, contextlib
sys.path.insert(0, os.path.join(sys.argv[1], "tools"))
import numpy as np
from pathlib import Path
from make_kquant_fixture import write_f32_model, quantize, FTYPES
from llama_cpp import Llama
out_dir, dim, hidden, ftype = Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
prompt, steps = json.loads(sys.argv[6]), int(sys.argv[7])
f32 = out_dir / f"f32-{hidden}.gguf"
q = out_dir / f"{ftype}-{hidden}.gguf"
with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):
    if not f32.exists():
        write_f32_model(f32, dim, hidden, seed=11)
    quantize(f32, q, FTYPES[ftype])
m = Llama(str(q), verbose=False, n_ctx=64, n_threads=1, logits_all=True)
ids = list(prompt)
m.eval(ids)
logits = [np.array(m.scores[len(ids) - 1], dtype=np.float32).tolist()]
for _ in range(steps):
    nxt = int(np.argmax(logits[-1]))
    ids.append(nxt)
    m.eval([nxt])
    logits.append(np.array(m.scores[len(ids) - 1], dtype=np.float32).tolist())
print(json.dumps({"path": str(q), "ids": ids, "logits": logits}))
`;

function softmax(x: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) max = Math.max(max, x[i]);
  const p = new Float64Array(x.length);
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += p[i] = Math.exp(x[i] - max);
  return p.map((v) => v / sum);
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * Our logits along llama.cpp's sequence: the worst probability difference and the number of
 * near-ties where our argmax differs; any other differing argmax fails.
 */
async function follow(e: Engine, ids: number[], ref: number[][], what: string) {
  using s = e.createSession();
  let worst = 0, ties = 0;
  let logits = await s.forward(ids.slice(0, PROMPT.length));
  for (let step = 0; step < ref.length; step++) {
    if (step > 0) logits = await s.forward([ids[PROMPT.length + step - 1]]);
    const want = argmax(ref[step]), got = argmax(logits);
    const p = softmax(logits), q = softmax(ref[step]);
    for (let i = 0; i < p.length; i++) worst = Math.max(worst, Math.abs(p[i] - q[i]));
    if (got !== want) {
      assert.ok(
        q[want] - q[got] < TIE,
        `${what}, step ${step}: ${got}, llama.cpp picks ${want} (p ${q[want]} vs ${q[got]})`,
      );
      ties++;
    }
  }
  return { worst, ties };
}

const dir = await Deno.makeTempDir({ prefix: "qwen3_kquant_llama_test_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

const CASES = [
  { ftype: "Q8_0", hidden: 512 },
  { ftype: "Q4_K_M", hidden: 512 },
  { ftype: "Q5_K_M", hidden: 512 },
  { ftype: "Q4_K_M", hidden: 320 },
  { ftype: "Q5_K_M", hidden: 320 },
];

for (const c of CASES) {
  Deno.test({
    name:
      `llama.cpp ${c.ftype}, feed-forward ${c.hidden}: both engines follow llama.cpp's greedy tokens`,
    ignore: LLAMA_PYTHON === null,
    async fn() {
      const r = await new Deno.Command(LLAMA_PYTHON!, {
        args: [
          "-c",
          SCRIPT,
          ROOT,
          dir,
          "256",
          String(c.hidden),
          c.ftype,
          JSON.stringify(PROMPT),
          String(STEPS),
        ],
      }).output();
      assert.ok(r.success, new TextDecoder().decode(r.stderr));
      const { path, ids, logits } = JSON.parse(new TextDecoder().decode(r.stdout));
      using ce = await CEngine.load(path);
      using te = await TsEngine.load(path);
      const c1 = await follow(ce, ids, logits, "C engine");
      const t1 = await follow(te, ids, logits, "TS engine");
      console.log(
        `  ${c.ftype} ffn ${c.hidden}: ${
          STEPS + 1
        } steps, near-tie flips C ${c1.ties} TS ${t1.ties}; ` +
          `worst |dp| C ${c1.worst.toFixed(4)}, TS ${t1.worst.toFixed(4)}`,
      );
      assert.ok(c1.worst <= PROB_BOUND && t1.worst <= PROB_BOUND, `|dp| ${c1.worst} / ${t1.worst}`);
    },
  });
}
