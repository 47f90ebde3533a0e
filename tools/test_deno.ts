/**
 * `deno task test:deno`: every Deno test and documentation example, in two processes at
 * once on a machine with two or more CPUs.
 *
 * ```sh
 * deno run -A tools/test_deno.ts            # both shards (what `deno task test` runs)
 * deno run -A tools/test_deno.ts --serial   # one `deno test -A --doc` process, as before
 * ```
 *
 * Most Deno tests spend their time in one JavaScript thread (the TypeScript engine,
 * tokenizers, GGUF writing), so one `deno test` process leaves the second core of a 2-core
 * CI machine mostly idle. The first shard is `deno test -A --doc` with the files of
 * {@link SECOND_SHARD} ignored: every test file and documentation example it ran before,
 * minus those; the second is `deno test -A --doc` of exactly those files (their tests and
 * any documentation examples in them). Together they run the same tests as
 * `deno test -A --doc`, each file once.
 *
 * Separate processes rather than `deno test --parallel` (one process, one worker per
 * file): the C library's kernel tier is process-wide state, and engines_test.ts,
 * ffi_test.ts and kquant_test.ts select tiers and assert which one is active, so they
 * must not share a process with a file that runs at the same time.
 *
 * The first shard's output streams; the second's is held and printed when it ends, so
 * the two never interleave. The exit status is non-zero when either shard failed.
 * @module
 */

/**
 * Test files of the second shard: about half of the tests' CPU time (measured with
 * `deno test -A --doc --reporter=junit`), so the two processes end close together.
 */
export const SECOND_SHARD: readonly string[] = [
  "tests/gguf_test.ts",
  "tests/export_test.ts",
  "tests/cli_test.ts",
  "tests/chat_test.ts",
  "tests/sampler_test.ts",
  "tests/engines_test.ts",
];

/** The two `deno test` command lines (arguments after `deno`). */
export function shardArgs(): [string[], string[]] {
  return [
    ["test", "-A", "--doc", `--ignore=${SECOND_SHARD.join(",")}`],
    ["test", "-A", "--doc", ...SECOND_SHARD],
  ];
}

const root = decodeURIComponent(new URL("..", import.meta.url).pathname);

async function runShard(args: string[], hold: boolean): Promise<{ ok: boolean; out: string }> {
  const cmd = new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdin: "null",
    stdout: hold ? "piped" : "inherit",
    stderr: hold ? "piped" : "inherit",
  });
  if (!hold) return { ok: (await cmd.spawn().status).success, out: "" };
  const r = await cmd.output();
  const dec = new TextDecoder();
  return { ok: r.success, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
}

async function main(args: string[]): Promise<number> {
  if (args.includes("--serial")) {
    return (await runShard(["test", "-A", "--doc"], false)).ok ? 0 : 1;
  }
  for (const file of SECOND_SHARD) {
    try {
      await Deno.stat(`${root}${file}`);
    } catch {
      console.error(`error: ${file} (SECOND_SHARD in tools/test_deno.ts) does not exist`);
      return 1;
    }
  }
  const [first, second] = shardArgs();
  const t0 = performance.now();
  const secs = () => ((performance.now() - t0) / 1000).toFixed(0);
  let ok: boolean;
  if ((navigator.hardwareConcurrency || 1) < 2) {
    // One CPU: the shards one after the other (no gain from a second process).
    ok = (await runShard(first, false)).ok;
    ok = (await runShard(second, false)).ok && ok;
  } else {
    console.error(`test:deno: shard 2 (${SECOND_SHARD.join(" ")}) runs beside, output below`);
    const held = runShard(second, true);
    const a = await runShard(first, false);
    console.error(`test:deno: shard 1 ${a.ok ? "ok" : "FAILED"} in ${secs()} s`);
    const b = await held;
    console.error(`\n=== test:deno shard 2: deno ${second.join(" ")}\n${b.out}`);
    console.error(`test:deno: shard 2 ${b.ok ? "ok" : "FAILED"}, both done in ${secs()} s`);
    ok = a.ok && b.ok;
  }
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
