/**
 * Builds the C engine with Debian's clang for the checks Zig cannot do: libFuzzer
 * (tools/fuzz.ts) and AddressSanitizer + UndefinedBehaviorSanitizer (tools/sanitize.ts).
 * Zig 0.14 builds neither, so these tools compile csrc/src/*.c directly, with the same
 * flags as build.zig plus the sanitizer ones, into object folders under `.tools/`.
 * @module
 */

/** The repository root, as a path. */
export const ROOT: string = decodeURIComponent(new URL("..", import.meta.url).pathname);

/** build.zig's flags for the library (keep in step with its `c_flags`). */
export const C_FLAGS: readonly string[] = [
  "-std=c11",
  "-Wall",
  "-Wextra",
  "-ffp-contract=off",
  "-fno-math-errno",
  "-D_GNU_SOURCE",
  `-I${ROOT}csrc/include`,
  `-I${ROOT}csrc/src`,
];

/** Sanitizer flags shared by both tools: report and stop at the first error. */
export const SANITIZE_FLAGS: readonly string[] = [
  "-O1",
  "-g",
  "-fno-omit-frame-pointer",
  "-fsanitize=address,undefined",
  "-fno-sanitize-recover=all",
];

/**
 * The library's objects under ASan + UBSan, with libFuzzer's coverage instrumentation on
 * the files that read outside data, shared by tools/fuzz.ts and tools/sanitize.ts so CI
 * compiles them once (a program linked without libFuzzer gets the sanitizer runtime's
 * no-op coverage hooks).
 */
export async function sanitizedLibrary(clang: string): Promise<string[]> {
  return await compileLibrary(clang, ".tools/clang/obj-asan", SANITIZE_FLAGS, coverageFlags);
}

/** The compute files whose coverage would not guide a fuzzer (no parsing or branching on
 * file contents) and whose inner loops it would slow several-fold under the sanitizer
 * tests (test_transformer). */
const NO_COVERAGE = /(^|\/)(kernels[^/]*|quant|threadpool|cpu|transformer)\.c$/;

/** The x86 block-weight kernels: one body specialised per block type and register tile,
 * which clang 14's UBSan instrumentation at -O1 takes 2-3 minutes to compile (each);
 * at -O0 it takes ~10 s with every check kept, and their tests stay seconds. */
const SANITIZE_O0 = /(^|\/)kernels_blocks_(avx2|avx512)\.c$/;

/** libFuzzer's coverage instrumentation for every library file but the compute ones, and
 * -O0 for the few whose instrumented build would take minutes. */
function coverageFlags(src: string): string[] {
  if (SANITIZE_O0.test(src)) return ["-O0"];
  return NO_COVERAGE.test(src) ? [] : ["-fsanitize=fuzzer-no-link"];
}

/** Runs `jobs` over `width` workers at once; results in input order. */
export async function inParallel<T, R>(
  items: readonly T[],
  width: number,
  job: (item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await job(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, width) }, worker));
  return out;
}

/** Worker count for parallel steps: the CPUs, at most 2 (the CI machine's count). */
export function parallelism(): number {
  return Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1));
}

/** The Debian packages that provide clang and its sanitizer / libFuzzer runtimes. */
export const CLANG_PACKAGES: readonly string[] = ["clang", "libclang-rt-14-dev"];

const dec = new TextDecoder();

/** Runs a command, returning its exit status and combined output. */
export async function run(
  cmd: string,
  args: readonly string[],
  opts: { cwd?: string; env?: Record<string, string>; quiet?: boolean } = {},
): Promise<{ code: number; out: string }> {
  try {
    const r = await new Deno.Command(cmd, {
      args: [...args],
      cwd: opts.cwd ?? ROOT,
      env: opts.env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: r.code, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
  } catch (e) {
    return { code: 127, out: String(e) };
  }
}

/** True when `clang` builds and runs a libFuzzer + ASan + UBSan program. */
async function clangWorks(clang: string): Promise<boolean> {
  const dir = await Deno.makeTempDir({ prefix: "qwen3_clang_probe_" });
  try {
    const src = `${dir}/probe.c`;
    await Deno.writeTextFile(
      src,
      "#include <stddef.h>\n#include <stdint.h>\n" +
        "int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) { (void)d; (void)n; return 0; }\n",
    );
    const built = await run(clang, [
      "-fsanitize=fuzzer,address,undefined",
      src,
      "-o",
      `${dir}/probe`,
    ]);
    if (built.code !== 0) return false;
    return (await run(`${dir}/probe`, ["-runs=1"])).code === 0;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function isRoot(): Promise<boolean> {
  return (await run("id", ["-u"])).out.trim() === "0";
}

/**
 * The clang to use: `$CLANG`, else `clang` on PATH, when it can build libFuzzer and
 * sanitizer programs. Installs Debian's clang with apt-get when it is missing and this
 * process runs as root; otherwise throws, saying what to install.
 */
export async function ensureClang(): Promise<string> {
  const candidates = [Deno.env.get("CLANG"), "clang", "clang-14", "clang-16", "clang-15"]
    .filter((c): c is string => !!c);
  for (const c of candidates) {
    if (await clangWorks(c)) return c;
  }
  const haveApt = (await run("apt-get", ["--version"])).code === 0;
  if (Deno.build.os !== "linux" || !haveApt || !(await isRoot())) {
    throw new Error(
      "clang with libFuzzer and the sanitizer runtimes is required: on Debian/Ubuntu run\n" +
        `  sudo apt-get install -y ${CLANG_PACKAGES.join(" ")}\n` +
        "(or point $CLANG at a clang that has them)",
    );
  }
  console.error(`installing ${CLANG_PACKAGES.join(" ")} with apt-get ...`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  let r = await run("apt-get", ["install", "-y", "--no-install-recommends", ...CLANG_PACKAGES], {
    env,
  });
  if (r.code !== 0) {
    // A fresh container has no package lists yet.
    await run("apt-get", ["update"], { env });
    r = await run("apt-get", ["install", "-y", "--no-install-recommends", ...CLANG_PACKAGES], {
      env,
    });
  }
  if (r.code !== 0 || !(await clangWorks("clang"))) {
    throw new Error(`apt-get install ${CLANG_PACKAGES.join(" ")} failed:\n${r.out.slice(-2000)}`);
  }
  return "clang";
}

/** Extra flags a kernel file needs under clang: the ISA its functions target. The files
 * use per-function target attributes, some of which older clang does not know (AVX-512's
 * "evex512" arrived in clang 18), so the file-wide flags enable the same instructions.
 * Only code the run-time dispatcher selects lives in these files, so the program stays
 * runnable on CPUs without them. */
function isaFlags(file: string): string[] {
  const avx512 = [
    "-mavx512f",
    "-mavx512bw",
    "-mavx512vl",
    "-mavx512vnni",
    "-Wno-ignored-attributes",
  ];
  if (file.endsWith("_avx512.c")) return avx512;
  // kernels_amx.c: the real-tile kernel targets AMX on top of AVX-512 (the emulated
  // variant the tests run everywhere is kernels_amx_emu.c, baseline code).
  if (file.endsWith("_amx.c")) return [...avx512, "-mamx-tile", "-mamx-int8"];
  return [];
}

/** csrc/src/*.c for this machine's architecture, as build.zig selects them. */
export async function librarySources(): Promise<string[]> {
  const arch = Deno.build.arch;
  const out: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}csrc/src`)) {
    if (!e.isFile || !e.name.endsWith(".c")) continue;
    const x86Only = /_(avx2|avx512|amx)\.c$/.test(e.name);
    const armOnly = /_(neon|sve)\.c$/.test(e.name);
    if (x86Only && arch !== "x86_64") continue;
    if (armOnly && arch !== "aarch64") continue;
    out.push(`csrc/src/${e.name}`);
  }
  return out.sort();
}

async function mtime(path: string): Promise<number> {
  try {
    return (await Deno.stat(path)).mtime?.getTime() ?? 0;
  } catch {
    return 0;
  }
}

/** The newest modification time among the headers every source may include. */
async function newestHeader(): Promise<number> {
  let newest = 0;
  for (const dir of ["csrc/src", "csrc/include"]) {
    for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
      if (e.isFile && e.name.endsWith(".h")) {
        newest = Math.max(newest, await mtime(`${ROOT}${dir}/${e.name}`));
      }
    }
  }
  return newest;
}

/**
 * Compiles the library sources with `flags` into `outDir` (relative to the root), one per
 * CPU (at most two), skipping objects newer than their source and every header when the flags are
 * unchanged. Returns the object paths. Throws with the compiler output on an error.
 */
export async function compileLibrary(
  clang: string,
  outDir: string,
  flags: readonly string[],
  perFile: (src: string) => string[] = () => [],
): Promise<string[]> {
  const dir = `${ROOT}${outDir}`;
  await Deno.mkdir(dir, { recursive: true });
  const stamp = `${dir}/flags.txt`;
  const sources = await librarySources();
  const wanted = [clang, ...C_FLAGS, ...flags].join(" ") + "\n" +
    sources.map((src) => `${src}: ${perFile(src).join(" ")}`).join("\n");
  let same = false;
  try {
    same = (await Deno.readTextFile(stamp)) === wanted;
  } catch { /* first build */ }
  const headers = await newestHeader();
  const objects: string[] = [];
  const todo: { src: string; obj: string }[] = [];
  for (const src of sources) {
    const obj = `${dir}/${src.slice("csrc/src/".length, -2)}.o`;
    objects.push(obj);
    const built = await mtime(obj);
    if (!same || built === 0 || built < (await mtime(`${ROOT}${src}`)) || built < headers) {
      todo.push({ src, obj });
    }
  }
  // Objects of sources that no longer exist would be linked in: drop them.
  for await (const e of Deno.readDir(dir)) {
    if (e.name.endsWith(".o") && !objects.includes(`${dir}/${e.name}`)) {
      await Deno.remove(`${dir}/${e.name}`);
    }
  }
  const worker = async () => {
    for (let job = todo.shift(); job; job = todo.shift()) {
      const r = await run(clang, [
        ...C_FLAGS,
        ...flags,
        ...perFile(job.src),
        ...isaFlags(job.src),
        "-DQWEN3_BUILDING_LIBRARY=1",
        "-c",
        job.src,
        "-o",
        job.obj,
      ]);
      if (r.code !== 0) throw new Error(`clang failed on ${job.src}:\n${r.out}`);
      if (r.out.trim() !== "") console.error(r.out.trimEnd());
    }
  };
  await Promise.all(Array.from({ length: parallelism() }, worker));
  await Deno.writeTextFile(stamp, wanted);
  return objects;
}

/** Links (and compiles) `sources` with the library objects into `exe`. */
export async function linkProgram(
  clang: string,
  sources: readonly string[],
  objects: readonly string[],
  exe: string,
  flags: readonly string[],
  extraIncludes: readonly string[] = [],
): Promise<void> {
  await Deno.mkdir(exe.slice(0, exe.lastIndexOf("/")), { recursive: true });
  const r = await run(clang, [
    ...C_FLAGS,
    ...extraIncludes.map((d) => `-I${ROOT}${d}`),
    ...flags,
    ...sources,
    ...objects,
    "-lm",
    "-lpthread",
    "-o",
    exe,
  ]);
  if (r.code !== 0) throw new Error(`clang failed linking ${exe}:\n${r.out}`);
  if (r.out.trim() !== "") console.error(r.out.trimEnd());
}
