/**
 * The optional llama.cpp peer for tests: a Python with llama-cpp-python.
 * @module
 */

import { builtLlamaPython, LLAMA_CPP_PYTHON, LLAMA_VENV } from "../../bench/compare.ts";

/**
 * The peer's python as bench/compare.ts's `builtLlamaPython` names it (`QWEN3_LLAMA_PYTHON`,
 * else the build `deno task bench:compare` chose under .tools/), when it imports llama_cpp
 * (and `modules`). Checked with stat first, so a machine without it never
 * spawns a missing binary (Deno reports that as an uncaught error).
 *
 * @param modules More Python modules the test needs (`gguf`, `numpy`).
 * @returns The python's path, or null when there is none.
 */
export async function findLlamaPython(modules: readonly string[] = []): Promise<string | null> {
  const python = await builtLlamaPython();
  try {
    if (!(await Deno.stat(python)).isFile) return null;
    const r = await new Deno.Command(python, {
      args: ["-c", `import ${["llama_cpp", ...modules].join(", ")}`],
      stdout: "null",
      stderr: "null",
    }).output();
    return r.success ? python : null;
  } catch {
    return null;
  }
}

/**
 * The one line a test prints when it skips for want of the peer.
 *
 * @param what What is skipped ("the llama.cpp GGUF check").
 * @param modules The modules passed to {@linkcode findLlamaPython}.
 * @returns The line.
 */
export function llamaSkipLine(what: string, modules: readonly string[] = []): string {
  const also = modules.length > 0 ? ` (with ${modules.join(", ")})` : "";
  return `skipping ${what}: set QWEN3_LLAMA_PYTHON to a python with llama-cpp-python ` +
    `${LLAMA_CPP_PYTHON}${also}, or run \`deno task bench:compare\` to build ${LLAMA_VENV}`;
}
