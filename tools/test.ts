/**
 * `deno task test`: every test family in order, each step timed (wall clock, and on Linux
 * the CPU time of its processes), one summary at the end.
 *
 * ```sh
 * deno task test                      # everything (what .ci/run runs)
 * deno run -A tools/test.ts c deno    # only some steps, by name
 * ```
 *
 * Steps (each is also a deno task of its own, see deno.json):
 *
 * | step     | task            | what it proves                                            |
 * | -------- | --------------- | --------------------------------------------------------- |
 * | install  | `deno install`  | the npm dependencies resolve                              |
 * | build    | `build`         | the C library builds (Zig from PyPI on first use)         |
 * | lint     | `test:lint`     | fmt, lint, type check, `deno doc --lint` of the package   |
 * | c        | `test:c`        | the C tests (`zig build test`)                            |
 * | deno     | `test:deno`     | every Deno test and documentation example                 |
 * | aarch64  | `test:aarch64`  | the C tests cross-built for aarch64, run under qemu-user  |
 * | sanitize | `test:sanitize` | ASan + UBSan, valgrind, resident-set bounds               |
 * | fuzz     | `test:fuzz`     | every C fuzz harness for a bounded time                   |
 * | package  | `test:package`  | the publish dry run; cli.ts chat run from a served copy   |
 *
 * The first two are prerequisites: when one fails nothing else runs. The test steps all run
 * even when an earlier one failed, so one run reports every broken family. The closing line
 * reads `steps: N passed, N failed`, and the exit status is non-zero when any failed.
 * @module
 */

/** One step of the test chain. */
export interface TestStep {
  /** Short name, used on the command line and in the summary. */
  name: string;
  /** The command after `deno`: `["install"]` or `["task", "test:c"]`. */
  args: string[];
  /** A step whose failure makes the later steps pointless. */
  prerequisite: boolean;
}

/** The steps of `deno task test`, in the order they run. */
export const TEST_STEPS: readonly TestStep[] = [
  { name: "install", args: ["install"], prerequisite: true },
  { name: "build", args: ["task", "build"], prerequisite: true },
  { name: "lint", args: ["task", "test:lint"], prerequisite: false },
  { name: "c", args: ["task", "test:c"], prerequisite: false },
  { name: "deno", args: ["task", "test:deno"], prerequisite: false },
  { name: "aarch64", args: ["task", "test:aarch64"], prerequisite: false },
  { name: "sanitize", args: ["task", "test:sanitize"], prerequisite: false },
  { name: "fuzz", args: ["task", "test:fuzz"], prerequisite: false },
  { name: "package", args: ["task", "test:package"], prerequisite: false },
];

/**
 * CPU seconds (user + system) of this process's finished, waited-for children and their
 * descendants, from /proc/self/stat (Linux); null elsewhere. A step's CPU time is the
 * difference across it: on a shared machine it says what the step costs when its wall
 * time is inflated by other jobs.
 */
export function childrenCpuSeconds(): number | null {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    // the fields after the command name (which may hold spaces), from field 3 on
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // cutime and cstime are fields 16 and 17, in clock ticks (100 per second on Linux)
    return (Number(fields[13]) + Number(fields[14])) / 100;
  } catch {
    return null;
  }
}

/** CPU seconds since `c0` (a {@link childrenCpuSeconds} reading); null when either is unknown. */
function cpuSince(c0: number | null): number | null {
  const c1 = childrenCpuSeconds();
  return c0 === null || c1 === null ? null : c1 - c0;
}

/** Formats seconds as `1m 05s` (or `42.0 s` under a minute). */
export function formatSeconds(s: number): string {
  if (s < 59.95) return `${s.toFixed(1)} s`;
  // whole seconds first, so 479.6 s is 8m 00s, not 7m 60s
  const whole = Math.round(s);
  const m = Math.floor(whole / 60);
  return `${m}m ${String(whole - 60 * m).padStart(2, "0")}s`;
}

async function main(names: string[]): Promise<number> {
  const unknown = names.filter((n) => !TEST_STEPS.some((s) => s.name === n));
  if (unknown.length) {
    console.error(
      `error: unknown step ${unknown.join(", ")} (steps: ${
        TEST_STEPS.map((s) => s.name).join(", ")
      })`,
    );
    return 2;
  }
  const steps = names.length ? TEST_STEPS.filter((s) => names.includes(s.name)) : TEST_STEPS;
  const root = decodeURIComponent(new URL("..", import.meta.url).pathname);
  const results: { name: string; ok: boolean; seconds: number; cpu: number | null }[] = [];
  const start = performance.now();
  const cpuStart = childrenCpuSeconds();
  for (const step of steps) {
    console.error(`\n=== test step ${step.name}: deno ${step.args.join(" ")}`);
    const t0 = performance.now();
    const c0 = childrenCpuSeconds();
    let ok = false;
    try {
      const status = await new Deno.Command(Deno.execPath(), {
        args: step.args,
        cwd: root,
        stdin: "null",
        stdout: "inherit",
        stderr: "inherit",
      }).spawn().status;
      ok = status.success;
    } catch (e) {
      console.error(`error: cannot run deno ${step.args.join(" ")}: ${(e as Error).message}`);
    }
    const seconds = (performance.now() - t0) / 1000;
    results.push({ name: step.name, ok, seconds, cpu: cpuSince(c0) });
    console.error(
      `=== test step ${step.name}: ${ok ? "ok" : "FAILED"} in ${formatSeconds(seconds)}`,
    );
    if (!ok && step.prerequisite) break;
  }
  const total = (performance.now() - start) / 1000;
  const cpu = (s: number | null) => s === null ? "" : `  (CPU ${formatSeconds(s)})`;
  console.log("\ntest step   result  time (CPU: user + system of the step's processes)");
  for (const r of results) {
    console.log(
      `${r.name.padEnd(11)} ${(r.ok ? "ok" : "FAILED").padEnd(7)} ${
        formatSeconds(r.seconds).padEnd(7)
      }${cpu(r.cpu)}`,
    );
  }
  const skipped = steps.length - results.length;
  console.log(
    `total               ${formatSeconds(total).padEnd(7)}${
      cpu(cpuSince(cpuStart))
    } on ${navigator.hardwareConcurrency} CPUs`,
  );
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  console.log(
    `steps: ${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""),
  );
  return failed === 0 && skipped === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
