/**
 * Runs the C engine under AddressSanitizer + UndefinedBehaviorSanitizer and valgrind:
 *
 *   deno run -A tools/sanitize.ts [--skip-valgrind] [--only test_a,test_b] [--cycles N]
 *
 * 1. every csrc/tests/test_*.c built with clang -fsanitize=address,undefined
 *    -fno-sanitize-recover=all against the library built the same way, and run (the
 *    fuzz corpus replay test_fuzz_replay included, so every fuzz reproducer is checked
 *    under the sanitizers too);
 * 2. an end-to-end generate through csrc/examples/generate.c (public header only) on a
 *    small random-weight model with the real tokenizer.json, built the same way, plus
 *    its failure path on a truncated file;
 * 3. csrc/fuzz/leak_cycle.c (load / use / free through the whole public API) under
 *    `valgrind --leak-check=full`: any leak or memory error fails;
 * 4. leak_cycle again, natively, for N cycles (default 20) with the real tokenizer.json:
 *    the resident set may not grow by more than 1 MiB (test_hostile.c does 1000 cycles
 *    of a small model in the ordinary C tests).
 *
 * Clang comes from Debian (tools/clang.ts installs it when running as root); valgrind
 * likewise (apt-get install valgrind). Objects go to .tools/sanitize/.
 * @module
 */

import { parseArgs } from "node:util";
import { writeRandomModel } from "../tests/helpers/random_model.ts";
import {
  compileLibrary,
  ensureClang,
  inParallel,
  linkProgram,
  parallelism,
  ROOT,
  run,
  SANITIZE_FLAGS,
  sanitizedLibrary,
} from "./clang.ts";

const OUT = ".tools/sanitize";
const SANITIZER_ENV = {
  ASAN_OPTIONS: "detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1",
  UBSAN_OPTIONS: "print_stacktrace=1:halt_on_error=1",
};

interface Step {
  name: string;
  ok: boolean;
  seconds: number;
  note: string;
}

async function timed(name: string, body: () => Promise<string>): Promise<Step> {
  const t0 = performance.now();
  console.error(`${name} ...`);
  try {
    const note = await body();
    return { name, ok: true, seconds: (performance.now() - t0) / 1000, note };
  } catch (e) {
    console.error(`${name} FAILED:\n${(e as Error).message}`);
    return { name, ok: false, seconds: (performance.now() - t0) / 1000, note: "FAILED" };
  }
}

async function cTests(only: string[] | undefined): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}csrc/tests`)) {
    if (e.isFile && e.name.startsWith("test_") && e.name.endsWith(".c")) {
      names.push(e.name.slice(0, -2));
    }
  }
  return names.sort().filter((n) => !only || only.includes(n));
}

async function ensureValgrind(): Promise<boolean> {
  if ((await run("valgrind", ["--version"])).code === 0) return true;
  if ((await run("id", ["-u"])).out.trim() !== "0") return false;
  console.error("installing valgrind with apt-get ...");
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  let r = await run("apt-get", ["install", "-y", "--no-install-recommends", "valgrind"], { env });
  if (r.code !== 0) {
    await run("apt-get", ["update"], { env });
    r = await run("apt-get", ["install", "-y", "--no-install-recommends", "valgrind"], { env });
  }
  return r.code === 0;
}

/** The lines of valgrind's summary worth keeping in a report. */
function valgrindSummary(out: string): string {
  return out.split("\n")
    .filter((l) =>
      /definitely lost|indirectly lost|possibly lost|still reachable|ERROR SUMMARY|in use at exit|total heap usage/
        .test(l)
    )
    .map((l) => l.replace(/^==\d+==\s*/, "").trim())
    .join("; ");
}

/** Long-running tests first (ASan makes test_transformer and test_api the slowest). */
function longFirst(test: string): number {
  const order = ["test_transformer", "test_api", "test_tokenizer", "test_hostile"];
  const i = order.indexOf(test);
  return i < 0 ? order.length : i;
}

/**
 * Steps 2 to 4 of the module comment: the end-to-end generate under the sanitizers, then
 * leak_cycle under valgrind and natively. Run beside the C tests.
 */
async function endToEndChecks(
  clang: string,
  objects: string[],
  values: { "skip-valgrind"?: boolean },
  cycles: number,
): Promise<Step[]> {
  const out: Step[] = [];
  const asanFlags = [...SANITIZE_FLAGS];
  const dir = await Deno.makeTempDir({ prefix: "qwen3_sanitize_" });
  try {
    const model = await writeRandomModel(dir, {
      nLayers: 2,
      seqLen: 128,
      seed: 11,
      sharedClassifier: false,
    });
    out.push(
      await timed("end-to-end generate (csrc/examples/generate.c, ASan+UBSan)", async () => {
        const exe = `${ROOT}${OUT}/bin/qwen3-generate`;
        await linkProgram(clang, ["csrc/examples/generate.c"], objects, exe, asanFlags);
        const r = await run(exe, [model, "The future of AI is", "24"], { env: SANITIZER_ENV });
        if (
          r.code !== 0 || !r.out.includes("The future of AI is") ||
          !r.out.includes("decode: 24 tokens")
        ) {
          throw new Error(`exit ${r.code}:\n${r.out.slice(-4000)}`);
        }
        const broken = `${dir}/broken.bin`;
        await Deno.writeFile(broken, (await Deno.readFile(model)).slice(0, 5000));
        const bad = await run(exe, [broken], { env: SANITIZER_ENV });
        if (
          bad.code !== 1 || !bad.out.includes("truncated") ||
          /Sanitizer|runtime error/.test(bad.out)
        ) {
          throw new Error(`a truncated model: exit ${bad.code}:\n${bad.out.slice(-4000)}`);
        }
        return "24 tokens generated; a truncated file gives exit 1 and the loader's message";
      }),
    );

    // Plain (unsanitized) objects for valgrind and the resident-set count: ASan's shadow
    // memory and quarantine would hide or fake both.
    let plain: string[] = [];
    // DWARF 4: valgrind 3.19 (Debian 12) cannot read clang's default DWARF 5.
    const plainFlags = ["-O1", "-gdwarf-4"];
    const leakExe = `${ROOT}${OUT}/bin/leak_cycle`;
    out.push(
      await timed("build leak_cycle (plain -O1 -gdwarf-4)", async () => {
        plain = await compileLibrary(clang, `${OUT}/obj-plain`, plainFlags);
        await linkProgram(clang, ["csrc/fuzz/leak_cycle.c"], plain, leakExe, plainFlags);
        return "";
      }),
    );
    if (!values["skip-valgrind"]) {
      out.push(
        await timed("valgrind --leak-check=full: 3 load/use/free cycles", async () => {
          if (!(await ensureValgrind())) {
            throw new Error("valgrind is missing: apt-get install valgrind");
          }
          const r = await run("valgrind", [
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=1",
            leakExe,
            model,
            "3",
          ]);
          const summary = valgrindSummary(r.out);
          if (r.code !== 0) throw new Error(`${r.out.slice(-6000)}\n${summary}`);
          return summary;
        }),
      );
    }
    out.push(
      await timed(
        `resident set over ${cycles} load/use/free cycles (tokenizer.json model)`,
        async () => {
          const r = await run(leakExe, [model, String(cycles), "1024"]);
          if (r.code !== 0) throw new Error(r.out);
          return r.out.trim().split("\n").at(-1)?.replace("leak_cycle: ", "") ?? "";
        },
      ),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  return out;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      "skip-valgrind": { type: "boolean", default: false },
      only: { type: "string" },
      cycles: { type: "string", default: "20" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno run -A tools/sanitize.ts [--skip-valgrind] [--only test_a,b] [--cycles N]",
    );
    Deno.exit(0);
  }
  const only = values.only?.split(",");
  const cycles = Number(values.cycles);
  let clang: string;
  try {
    clang = await ensureClang();
  } catch (e) {
    console.error(`sanitize: ${(e as Error).message}`);
    Deno.exit(1);
  }
  const steps: Step[] = [];
  const asanFlags = [...SANITIZE_FLAGS];
  let objects: string[] = [];
  steps.push(
    await timed("build the library with ASan+UBSan", async () => {
      objects = await sanitizedLibrary(clang);
      return `${objects.length} objects`;
    }),
  );
  if (!steps[0].ok) Deno.exit(1);

  // Two tests at a time on two CPUs: most are single-threaded, and ASan makes them slow.
  // The longest start first, so the last minutes do not leave a CPU idle.
  const tests = (await cTests(only)).sort((a, b) => longFirst(a) - longFirst(b));
  // Beside them, one process at a time: the end-to-end, valgrind and resident-set checks,
  // single-threaded, so they fill the CPU the C tests leave idle (valgrind's run alone
  // used to keep one CPU busy and the other empty).
  const others: Promise<Step[]> = only
    ? Promise.resolve([])
    : endToEndChecks(clang, objects, values, cycles).catch((e) => {
      console.error(`end-to-end checks FAILED:\n${(e as Error).message}`);
      return [{ name: "end-to-end checks", ok: false, seconds: 0, note: "FAILED" }];
    });
  steps.push(
    ...await inParallel(tests, parallelism(), (test) =>
      timed(test, async () => {
        const exe = `${ROOT}${OUT}/bin/${test}`;
        // The tests relax their CPU-time bounds when built without optimisation
        // (__OPTIMIZE__ undefined); a sanitized build is about as slow as one.
        await linkProgram(clang, [`csrc/tests/${test}.c`], objects, exe, [
          ...asanFlags,
          "-U__OPTIMIZE__",
        ], ["csrc/tests"]);
        // test_transformer's prefill sweep takes the lengths at block and tile edges (as under
        // qemu): every code path still runs under the sanitizers, in a quarter of the time;
        // the plain `c` step keeps the full sweep.
        const env = test === "test_transformer"
          ? { ...SANITIZER_ENV, QWEN3_TEST_EMULATED: "1" }
          : SANITIZER_ENV;
        const r = await run(exe, [], { env });
        if (r.code !== 0) throw new Error(r.out.split("\n").slice(-80).join("\n"));
        const last = r.out.trim().split("\n").filter((l) => l.startsWith(test)).at(-1) ?? "";
        return last.replace(`${test}: `, "");
      })),
  );
  steps.push(...await others);
  if (only) {
    const failed = steps.filter((s) => !s.ok);
    for (const s of steps) {
      console.log(
        `${s.ok ? "ok    " : "FAILED"} ${s.seconds.toFixed(1).padStart(6)} s  ${s.name}  ${s.note}`,
      );
    }
    Deno.exit(failed.length ? 1 : 0);
  }

  for (const s of steps) {
    console.log(
      `${s.ok ? "ok    " : "FAILED"} ${s.seconds.toFixed(1).padStart(6)} s  ${s.name}${
        s.note ? `  (${s.note})` : ""
      }`,
    );
  }
  const failed = steps.filter((s) => !s.ok);
  if (failed.length) {
    console.error(`\n${failed.length} step(s) failed`);
    Deno.exit(1);
  }
}
