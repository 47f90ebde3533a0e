/**
 * Runs the pinned Zig, installing it first from PyPI's `ziglang` package when this
 * machine does not have it yet: `deno run -A tools/zig.ts build test`.
 *
 * The version is pinned in one place (ZIG_VERSION, matching build.zig.zon) and installed
 * into `.tools/` inside the repository, so nothing is installed system-wide by hand.
 * @module
 */

/** The Zig release the C engine is built and tested with. */
export const ZIG_VERSION = "0.14.1";

const root = new URL("..", import.meta.url);
const exe = Deno.build.os === "windows" ? "zig.exe" : "zig";

function pathOf(url: URL): string {
  return decodeURIComponent(url.pathname.replace(/^\/([A-Za-z]:)/, "$1"));
}

async function runQuiet(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const dec = new TextDecoder();
    return { ok: r.success, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
  } catch (e) {
    return { ok: false, out: String(e) };
  }
}

/** Returns the path of the pinned zig executable, installing it from PyPI if needed. */
export async function ensureZig(): Promise<string> {
  const prefix = pathOf(new URL(`.tools/ziglang-${ZIG_VERSION}/`, root));
  const local = `${prefix}ziglang/${exe}`;
  try {
    await Deno.stat(local);
    return local;
  } catch { /* not installed yet */ }
  const onPath = await runQuiet("zig", ["version"]);
  if (onPath.ok && onPath.out.trim() === ZIG_VERSION) return "zig";

  console.error(`Installing Zig ${ZIG_VERSION} from PyPI (ziglang) into ${prefix} ...`);
  let lastError = "";
  for (const python of ["python3", "python"]) {
    const r = await runQuiet(python, [
      "-m",
      "pip",
      "install",
      "--quiet",
      "--disable-pip-version-check",
      "--no-deps",
      "--target",
      prefix,
      `ziglang==${ZIG_VERSION}`,
    ]);
    if (r.ok) return local;
    lastError = r.out.trim();
  }
  throw new Error(
    `could not install Zig ${ZIG_VERSION}: 'python3 -m pip install ziglang==${ZIG_VERSION}' failed` +
      (lastError ? `:\n${lastError}` : " (is Python 3 with pip installed?)"),
  );
}

if (import.meta.main) {
  try {
    const zig = await ensureZig();
    const status = await new Deno.Command(zig, {
      args: Deno.args,
      cwd: pathOf(root),
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn().status;
    Deno.exit(status.code);
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
