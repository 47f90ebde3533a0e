import assert from "node:assert/strict";
import {
  exitStatus,
  failureNote,
  keptSection,
  lacksHostAmx,
  LLAMA_VENV,
  pickLlamaPython,
  renderTable,
  type Row,
} from "../bench/compare.ts";

function row(
  engine: string,
  pp: Record<string, number>,
  tg128: number,
  runs: number,
  failed?: string[],
): Row {
  return {
    engine,
    threads: 1,
    kernel: runs ? (engine === "c" ? "avx512vnni" : "llama.cpp 0.3.36") : "-",
    pp,
    tg128,
    loadSeconds: runs ? 0.1 : 0,
    peakRssMiB: runs ? 700 : 0,
    addedRssMiB: 0,
    runs,
    ...(failed ? { failed } : {}),
  };
}

Deno.test({
  name: "bench:compare names how a crashed process ended",
  ignore: Deno.build.os === "windows", // a POSIX shell and signals
  async fn() {
    assert.equal(exitStatus(1, null), "exit 1");
    const out = await new Deno.Command("sh", { args: ["-c", "kill -SEGV $$"] }).output();
    assert.equal(exitStatus(out.code, out.signal), "exit 139 (SIGSEGV)");
  },
});

Deno.test("bench:compare writes the table when the peer fails", () => {
  const pps = ["pp128", "pp2048"];
  const rows = [
    row("c", { pp128: 200, pp2048: 100 }, 20, 3),
    row("llama.cpp", {}, 0, 0, ["exit 139 (SIGSEGV)", "exit 139 (SIGSEGV)"]),
    row("llama.cpp", { pp128: 80, pp2048: 60 }, 18, 2, ["exit 1"]),
  ];
  rows[2].threads = 2;
  rows.push({ ...rows[0], threads: 2, pp: { pp128: 300, pp2048: 240 } });
  assert.equal(failureNote(rows[0]), "");
  assert.equal(failureNote(rows[1]), "failed: exit 139 (SIGSEGV)");
  assert.equal(failureNote(rows[2]), "1 of 3 runs failed: exit 1");
  const table = renderTable(rows, { 1: 10 }, 1e9, pps);
  const lines = table.split("\n");
  assert.ok(lines[0].includes("| pp128 tok/s | pp2048 tok/s | tg128 tok/s |"), lines[0]);
  assert.ok(
    lines.includes("| llama.cpp | 1 | - | - | - | - | - | - | - | failed: exit 139 (SIGSEGV) |"),
    table,
  );
  // the ratios: none against the failed peer at 1 thread, pp2048 as a share of pp128
  assert.ok(lines.includes("| 1 | - | - | - | 50% | - |"), table);
  assert.ok(lines.includes("| 2 | 3.75x | 4.00x | 1.11x | 80% | - |"), table);
});

Deno.test("bench:compare --no-moe keeps the last MoE section, with one note", () => {
  const md =
    "# Results\n\ntext\n\n## Mixture of experts: X\n\nmoe table\n\n## Batched decode\n\nb\n";
  const note = "Not measured by this run.";
  const kept = keptSection(md, "## Mixture of experts", note);
  assert.equal(kept, "## Mixture of experts: X\n\nNot measured by this run.\n\nmoe table\n");
  assert.equal(keptSection(kept, "## Mixture of experts", note), kept);
  assert.equal(keptSection("# Results\n", "## Mixture of experts", note), "");
});

Deno.test("bench:compare looks past a peer that runs without the CPU's AMX", () => {
  const info = "CPU : AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 |";
  assert.equal(lacksHostAmx("flags : avx512_vnni amx_bf16 amx_tile amx_int8", info), true);
  assert.equal(
    lacksHostAmx("flags : avx512_vnni amx_bf16 amx_tile amx_int8", info + " AMX_INT8 = 1 |"),
    false,
  );
  assert.equal(lacksHostAmx("flags : avx2 avx512_vnni", info), false);
});

Deno.test("tests use the peer bench:compare chose, and none when no build ran", () => {
  // QWEN3_LLAMA_PYTHON wins; then the record ensureLlama wrote; an empty record (every
  // build failed its smoke test) means no peer, not the first build's crashing python.
  assert.equal(pickLlamaPython("/opt/py", ""), "/opt/py");
  assert.equal(pickLlamaPython(undefined, "/x/zig/bin/python\n"), "/x/zig/bin/python");
  assert.equal(pickLlamaPython(undefined, ""), "");
  assert.equal(pickLlamaPython(undefined, null), `${LLAMA_VENV}/bin/python`);
});
