/**
 * Cross-builds the C tests for aarch64 Linux with Zig and runs them under qemu-user, so
 * the NEON, sdot and SVE kernel tiers are tested on an x86_64 machine:
 *
 * ```sh
 * deno run -A tools/test_aarch64.ts              # build, then every run below
 * deno run -A tools/test_aarch64.ts --no-build   # reuse zig-out/aarch64-linux-musl/tests
 * deno run -A tools/test_aarch64.ts --filter kernels
 * ```
 *
 * `zig build test` cannot run foreign binaries, so this builds them with
 * `zig build tests-install -Dtarget=aarch64-linux-musl` (static musl binaries need no
 * aarch64 sysroot or loader) into their own prefix, then runs each under qemu-user with
 * the repository root as working directory (tests find their fixtures by relative path):
 * the tests of the kernel tiers ({@link TIER_TESTS}) under `-cpu max` (every feature,
 * 512-bit SVE, so the automatic choice is the SVE tier), the others under
 * {@link OTHER_CPU}, where it is neondot. `test_kernels` also runs on CPU models that lack
 * SVE or sdot or have other SVE vector lengths, so every tier and the dispatcher's
 * fallbacks are exercised; `test_kernels_blocks` (which compares every tier the CPU
 * supports by itself) also runs on those CPU models, so no tier's block kernels use an
 * instruction its CPUs lack.
 *
 * `test_kernels` checks the `QWEN3_KERNEL` override by re-running itself with
 * `--env-only` and the variable set to each tier and to an unknown name; under qemu-user
 * it cannot spawn itself, so this script makes those runs instead, with the same
 * `--env-only` argument: the dispatcher's choice is the one thing a forced tier changes
 * (every tier's kernels are compared with scalar by the plain run whatever tier is
 * active), so the rest of the test is not repeated per forced tier.
 *
 * qemu comes from Debian's `qemu-user-static` package: installed with apt-get when it is
 * missing and this runs as root, otherwise the script says how to install it.
 * @module
 */
import { ensureZig } from "./zig.ts";

/** The Zig target the tests are cross-built for: static, so qemu needs no sysroot. */
export const AARCH64_TARGET = "aarch64-linux-musl";

/** Kernel tiers built for aarch64 (csrc/src/kernels.c), best first. */
export const AARCH64_TIERS = ["sve", "neondot", "neon", "scalar"] as const;

/**
 * The tests whose subject is the kernel tiers (each compares tiers it selects itself, or
 * runs the automatic one's kernels in the model): run under `-cpu max`, so the SVE tier
 * is there and chosen.
 */
export const TIER_TESTS: readonly string[] = [
  "test_kernels",
  "test_kernels_blocks",
  "test_kernels_float",
  "test_kernels_kv",
  "test_transformer",
  "test_batch",
  "test_moe",
];

/**
 * The CPU of the other tests (the API, files, tokenizer, sampler, thread pool): every
 * feature, SVE at 128 bits, where the dispatcher prefers neondot. qemu runs SVE code
 * several times slower than NEON (test_api: 41 s under `-cpu max`, 8 s here), and what
 * these tests check does not depend on the tier; the SVE kernels are the subject of
 * {@link TIER_TESTS}.
 */
export const OTHER_CPU = "max,sve-default-vector-length=16";

/**
 * Extra qemu CPU models for the kernel test, each with what it exercises. `max` (all
 * features, 512-bit SVE), the CPU of {@link TIER_TESTS}, is not repeated here.
 */
export const KERNEL_CPUS: readonly { cpu: string; why: string }[] = [
  { cpu: "max,sve-default-vector-length=16", why: "128-bit SVE: neondot preferred over sve" },
  { cpu: "max,sve-default-vector-length=256", why: "2048-bit SVE: 64-lane blocks" },
  { cpu: "neoverse-n1", why: "sdot without SVE" },
  { cpu: "cortex-a72", why: "plain NEON: sve and neondot refused with a reason" },
];

/** One test binary run under qemu. */
export interface QemuRun {
  /** Path of the test binary, relative to the repository root. */
  binary: string;
  /** The qemu `-cpu` value. */
  cpu: string;
  /** Extra environment variables. */
  env: Record<string, string>;
  /** Arguments after the binary (`--env-only` for the forced-tier runs). */
  args: string[];
}

/** `QWEN3_KERNEL` values of the forced runs: every tier, and a name no build has. */
export const FORCED_KERNELS: readonly string[] = [...AARCH64_TIERS, "no-such-tier"];

/**
 * The runs for a list of test binaries: each under `-cpu max` ({@link TIER_TESTS}) or
 * {@link OTHER_CPU}; `test_kernels` also with `--env-only` and every value of
 * {@link FORCED_KERNELS} (the runs it makes of itself natively), and it and
 * `test_kernels_blocks` on the CPU models of {@link KERNEL_CPUS}.
 *
 * @example
 * ```ts
 * import { planRuns } from "./test_aarch64.ts";
 * const runs = planRuns(["zig-out/x/tests/test_kernels"]);
 * console.log(runs.length); // 1 + 5 forced (--env-only) + 4 CPU models
 * ```
 */
export function planRuns(binaries: string[]): QemuRun[] {
  const runs: QemuRun[] = [];
  for (const binary of binaries) {
    const tiers = TIER_TESTS.includes(binary.split("/").pop() ?? "");
    runs.push({ binary, cpu: tiers ? "max" : OTHER_CPU, env: {}, args: [] });
    const kernels = /(^|\/)test_kernels$/.test(binary);
    if (!kernels && !/(^|\/)test_kernels_blocks$/.test(binary)) continue;
    if (kernels) {
      for (const value of FORCED_KERNELS) {
        runs.push({ binary, cpu: "max", env: { QWEN3_KERNEL: value }, args: ["--env-only"] });
      }
    }
    for (const { cpu } of KERNEL_CPUS) runs.push({ binary, cpu, env: {}, args: [] });
  }
  return runs;
}

const root = decodeURIComponent(new URL("..", import.meta.url).pathname);

async function commandWorks(cmd: string, args: string[]): Promise<boolean> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output();
    return r.success;
  } catch {
    return false;
  }
}

async function runInherit(cmd: string, args: string[]): Promise<boolean> {
  const r = await new Deno.Command(cmd, { args, cwd: root, stdout: "inherit", stderr: "inherit" })
    .spawn().status;
  return r.success;
}

/** Finds qemu-aarch64, installing Debian's qemu-user-static when missing and root. */
async function findQemu(): Promise<string> {
  for (const name of ["qemu-aarch64-static", "qemu-aarch64"]) {
    if (await commandWorks(name, ["--version"])) return name;
  }
  const isRoot = Deno.build.os === "linux" && Deno.uid() === 0;
  if (isRoot && await commandWorks("apt-get", ["--version"])) {
    console.error("qemu-aarch64-static not found: installing qemu-user-static with apt-get ...");
    const install = ["-y", "-q", "install", "qemu-user-static"];
    if (!await runInherit("apt-get", install)) {
      await runInherit("apt-get", ["-q", "update"]);
      await runInherit("apt-get", install);
    }
    if (await commandWorks("qemu-aarch64-static", ["--version"])) return "qemu-aarch64-static";
  }
  throw new Error(
    "qemu-aarch64-static not found. Install it with `sudo apt-get install qemu-user-static` " +
      "(Debian/Ubuntu; other systems: a qemu-user build with the aarch64 target), then rerun.",
  );
}

/** A rough cost of a run under qemu, for ordering: the long tests first. */
function weight(run: QemuRun): number {
  const name = run.binary.split("/").pop() ?? "";
  if (name === "test_transformer") return 2;
  return ["test_api", "test_tokenizer", "test_batch", "test_sampler"].includes(name) ? 1 : 0;
}

function describe(run: QemuRun): string {
  const env = Object.entries(run.env).map(([k, v]) => `${k}=${v}`).join(" ");
  const name = run.binary.split("/").pop();
  const args = run.args.length ? " " + run.args.join(" ") : "";
  return `${name}${args} [-cpu ${run.cpu}${env ? ", " + env : ""}]`;
}

async function main(args: string[]): Promise<number> {
  const build = !args.includes("--no-build");
  const fi = args.indexOf("--filter");
  const filter = fi >= 0 ? args[fi + 1] : undefined;
  const timeoutS = 900;

  const qemu = await findQemu();
  const prefix = `zig-out/${AARCH64_TARGET}`;
  if (build) {
    const zig = await ensureZig();
    const zigArgs = ["build", "tests-install", `-Dtarget=${AARCH64_TARGET}`, "--prefix", prefix];
    if (filter) zigArgs.push(`-Dtest-filter=${filter}`);
    console.error(`zig ${zigArgs.join(" ")}`);
    if (!await runInherit(zig, zigArgs)) {
      console.error("error: the aarch64 cross-build failed (see above)");
      return 1;
    }
  }

  const binaries: string[] = [];
  try {
    for await (const e of Deno.readDir(`${root}${prefix}/tests`)) {
      if (e.isFile && e.name.startsWith("test_") && (!filter || e.name === `test_${filter}`)) {
        binaries.push(`${prefix}/tests/${e.name}`);
      }
    }
  } catch {
    console.error(`error: no test binaries in ${prefix}/tests: run without --no-build`);
    return 1;
  }
  if (binaries.length === 0) {
    console.error(
      `error: no test binaries${filter ? ` matching test_${filter}` : ""} in ${prefix}/tests`,
    );
    return 1;
  }
  binaries.sort();

  // The plain runs must see no QWEN3_KERNEL of the caller's: they test the automatic
  // choice. The forced runs set it themselves.
  Deno.env.delete("QWEN3_KERNEL");
  let failed = 0;
  const start = performance.now();
  const runs = planRuns(binaries);
  const one = async (run: QemuRun): Promise<void> => {
    const t0 = performance.now();
    let out = "";
    let ok = false;
    try {
      const cmd = new Deno.Command(qemu, {
        args: ["-cpu", run.cpu, run.binary, ...run.args],
        cwd: root,
        // Emulation runs 5-100x slower than native: the C tests' CPU-time bounds (which catch
        // quadratic paths, not speed) scale by this, and the tests whose native sweeps are long
        // (test_transformer's prefill lengths) shrink them to the edges that matter.
        env: { QWEN3_TEST_TIME_SCALE: "20", QWEN3_TEST_EMULATED: "1", ...run.env },
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(timeoutS * 1000),
      });
      const r = await cmd.output();
      const dec = new TextDecoder();
      out = dec.decode(r.stdout) + dec.decode(r.stderr);
      ok = r.success;
      if (!ok && r.signal) {
        out += `\n(killed by ${r.signal}${r.signal === "SIGTERM" ? ": timeout?" : ""})`;
      }
    } catch (e) {
      out = String(e);
    }
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    if (ok) {
      const skipped = out.split("\n").filter((l) => l.includes("SKIPPED")).map((l) => l.trim());
      console.log(`ok    ${describe(run)} ${secs} s`);
      for (const s of skipped) console.log(`        ${s}`);
    } else {
      failed++;
      console.log(`FAIL  ${describe(run)} ${secs} s`);
      console.log(out.split("\n").slice(-40).map((l) => `  | ${l}`).join("\n"));
    }
  };
  // One emulated run per CPU: each is mostly single-threaded, and the longest ones (the
  // transformer test, a minute and a half under qemu, then the ~10 s ones) start first so the
  // queue drains evenly.
  const longFirst = [...runs].sort((a, b) => weight(b) - weight(a));
  const parallel = Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4));
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < longFirst.length) await one(longFirst[next++]);
    }),
  );
  const total = ((performance.now() - start) / 1000).toFixed(0);
  console.log(
    `${runs.length - failed} of ${runs.length} aarch64 runs passed in ${total} s (qemu: ${qemu})`,
  );
  return failed === 0 ? 0 : 1;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
