/**
 * What a decode step of the C engine reads from a mixture-of-experts GGUF, measured as the
 * model file's pages mapped into the process (Linux /proc/self/pagemap, which needs root
 * for nothing but the present bit used here): the file is mapped and its K-quant blocks are
 * used in place, so a page becomes present the first time a step reads it. After the first
 * step of a fresh process it prints the present bytes of each tensor kind (summed over the
 * blocks) beside the bytes the step needs by count (every non-expert tensor, one embedding
 * row, used/count of each expert tensor), then the bytes each later step adds.
 *
 *   deno run -A bench/moe_pages.ts MODEL.gguf [--steps 4]
 *
 * Present pages are an upper bound of what was read: the kernel maps whole page-cache
 * folios (up to 2 MB with large folios) and up to 64 KB around a fault, so an expert's
 * neighbours show partly present.
 * @module
 */

import { basename } from "node:path";
import { parseArgs } from "node:util";
import { CEngine } from "../ffi/c_engine.ts";
import { type GgufFile, readGgufHeader } from "../src/formats/gguf.ts";

const PAGE = 4096;

/** The file offsets of `name`'s present pages in this process. */
async function presentPages(name: string): Promise<number[]> {
  const out: number[] = [];
  using pm = await Deno.open("/proc/self/pagemap");
  for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
    if (!line.endsWith(name)) continue;
    const [range, , off] = line.split(/\s+/);
    const [a, b] = range.split("-").map((x) => parseInt(x, 16));
    const buf = new Uint8Array(((b - a) / PAGE) * 8);
    await pm.seek((a / PAGE) * 8, Deno.SeekMode.Start);
    for (let got = 0; got < buf.length;) {
      const n = await pm.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    const v = new DataView(buf.buffer);
    for (let p = 0; p < buf.length / 8; p++) {
      if (v.getUint32(p * 8 + 4, true) >>> 31) out.push(parseInt(off, 16) + p * PAGE);
    }
  }
  return out;
}

/** Present bytes by tensor kind (the name without `blk.N.`). */
function byKind(g: GgufFile, pages: number[]): Record<string, number> {
  const spans = [...g.tensors.values()].sort((x, y) => x.offset - y.offset);
  const out: Record<string, number> = {};
  let i = 0;
  for (const p of pages) {
    while (i < spans.length && spans[i].offset + spans[i].bytes <= p) i++;
    const t = spans[i];
    const kind = t && t.offset < p + PAGE ? t.name.replace(/^blk\.\d+\./, "") : "(header)";
    out[kind] = (out[kind] ?? 0) + PAGE;
  }
  return out;
}

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: { steps: { type: "string", default: "4" } },
  });
  const path = positionals[0];
  if (!path) throw new Error("usage: deno run -A bench/moe_pages.ts MODEL.gguf [--steps 4]");
  const size = (await Deno.stat(path)).size;
  const head = new Uint8Array(Math.min(size, 64 << 20));
  {
    using f = await Deno.open(path);
    for (let got = 0; got < head.length;) {
      const n = await f.read(head.subarray(got));
      if (n === null) break;
      got += n;
    }
  }
  const g = readGgufHeader(head, size, path);
  const used = Number(g.metadata.get("qwen3moe.expert_used_count"));
  const count = Number(g.metadata.get("qwen3moe.expert_count"));
  const need: Record<string, number> = {};
  for (const t of g.tensors.values()) {
    const kind = t.name.replace(/^blk\.\d+\./, "");
    const share = kind.endsWith("_exps.weight")
      ? used / count
      : kind === "token_embd.weight" && g.tensors.has("output.weight")
      ? 1 / t.dims[1]
      : 1;
    need[kind] = (need[kind] ?? 0) + t.bytes * share;
  }
  const name = basename(path);
  using engine = await CEngine.load(path, { contextLength: 64, threads: 1 });
  using session = engine.createSession(64);
  const mb = (x: number) => Math.round(x / 1e5) / 10;
  const loaded = (await presentPages(name)).length * PAGE;
  // tokens far apart in the vocabulary, so the steps route differently
  const tokens = [9707, 100, 2000, 30000, 70000, 120000].slice(0, Number(values.steps));
  const steps: number[] = [];
  let first: Record<string, number> = {};
  let before = loaded;
  for (const token of tokens) {
    await session.forward([token]);
    const pages = await presentPages(name);
    if (steps.length === 0) first = byKind(g, pages);
    steps.push(mb(pages.length * PAGE - before));
    before = pages.length * PAGE;
  }
  const kinds = Object.keys(need).filter((k) => need[k] >= 1e5);
  console.log(JSON.stringify({
    loadMB: mb(loaded),
    firstStepMB: Object.fromEntries(
      kinds.map((k) => [k, { present: mb(first[k] ?? 0), needed: mb(need[k]) }]),
    ),
    stepsMB: steps,
  }));
}
