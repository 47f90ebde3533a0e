/**
 * Finds and opens the C engine's shared library, and turns C failures into Qwen3Error.
 *
 * Search order:
 * 1. `QWEN3_LIB`: an explicit path to the library file.
 * 2. The local build for this machine: `zig-out/lib/<file>` (what `deno task build` writes),
 *    then `zig-out/lib/<os>-<arch>/<file>` (what `deno task build:cross` writes).
 * 3. The shipped library `lib/<os>-<arch>/<file>` next to this module.
 * 4. When this module runs from a remote URL (e.g. JSR over https:), `Deno.dlopen` cannot
 *    open the shipped file in place: it is downloaded once into a cache folder
 *    (`QWEN3_CACHE_DIR`, else `<user cache>/q3-qwen3/<version>/<os>-<arch>/`) and opened there.
 * @module
 */

import { Qwen3Error } from "../src/errors.ts";
import meta from "../deno.json" with { type: "json" };
import { ALL_SYMBOLS, type Qwen3Library, readCString } from "./symbols.ts";

/** The package version, used to keep cached libraries of different releases apart. */
export const VERSION: string = meta.version;

/** The `<os>-<arch>` folder name of a target, as `zig build cross` names it. */
export function targetDir(
  os: typeof Deno.build.os = Deno.build.os,
  arch: typeof Deno.build.arch = Deno.build.arch,
): string {
  const name = os === "darwin" ? "macos" : os;
  return `${name}-${arch}`;
}

/** The library's file name on an OS. */
export function libraryFileName(os: typeof Deno.build.os = Deno.build.os): string {
  if (os === "windows") return "qwen3_inference.dll";
  if (os === "darwin") return "libqwen3_inference.dylib";
  return "libqwen3_inference.so";
}

/** One place the loader looked, and why it was not used. */
export interface LoadAttempt {
  /** A file path or URL. */
  path: string;
  /** What went wrong there. */
  reason: string;
}

function envVar(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

function filePath(url: URL): string {
  const p = decodeURIComponent(url.pathname);
  return Deno.build.os === "windows" ? p.replace(/^\/([A-Za-z]:)/, "$1").replaceAll("/", "\\") : p;
}

function errorText(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).split("\n")[0];
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** The per-user cache folder for downloaded libraries of this version and target. */
export function cacheDir(): string {
  const explicit = envVar("QWEN3_CACHE_DIR");
  if (explicit) return explicit;
  const sep = Deno.build.os === "windows" ? "\\" : "/";
  const home = envVar("HOME") ?? envVar("USERPROFILE") ?? ".";
  let base: string;
  if (Deno.build.os === "windows") base = envVar("LOCALAPPDATA") ?? `${home}\\AppData\\Local`;
  else if (Deno.build.os === "darwin") base = `${home}/Library/Caches`;
  else base = envVar("XDG_CACHE_HOME") ?? `${home}/.cache`;
  return [base, "q3-qwen3", VERSION, targetDir()].join(sep);
}

/**
 * Downloads `url` into `dir/file` once: a file already there is reused as it is. The bytes
 * are written to a temporary name and renamed into place, so a concurrent process never
 * opens a half-written file. Used for the shipped library and the demo model
 * (src/api/demo.ts).
 *
 * @param url The file to fetch.
 * @param dir The folder to put it in (created when missing), e.g. {@link cacheDir}.
 * @param file The file name inside `dir`.
 * @returns The path of the file.
 * @throws {Error} On an HTTP status other than 2xx, an empty body, or a write that fails.
 */
export async function download(url: URL, dir: string, file: string): Promise<string> {
  const sep = Deno.build.os === "windows" ? "\\" : "/";
  const dest = `${dir}${sep}${file}`;
  if (isFile(dest)) return dest;
  const res = await fetch(url);
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`HTTP ${res.status} ${res.statusText}`);
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (bytes.length === 0) throw new Error("the download is empty");
  await Deno.mkdir(dir, { recursive: true });
  // Write then rename so a concurrent process never opens a half-written library.
  const tmp = `${dest}.${Deno.pid}.${Date.now()}.tmp`;
  await Deno.writeFile(tmp, bytes);
  await Deno.rename(tmp, dest);
  return dest;
}

/** The candidate paths for this machine, in search order (file-URL modules only). */
export function localCandidates(base: URL = new URL("../", import.meta.url)): string[] {
  const file = libraryFileName();
  const dir = targetDir();
  return [
    new URL(`zig-out/lib/${file}`, base),
    new URL(`zig-out/lib/${dir}/${file}`, base),
    new URL(`lib/${dir}/${file}`, base),
  ].map(filePath);
}

function tryOpen(path: string, tried: LoadAttempt[]): Qwen3Library | undefined {
  if (!isFile(path)) {
    tried.push({ path, reason: "not found" });
    return undefined;
  }
  try {
    return Deno.dlopen(path, ALL_SYMBOLS);
  } catch (e) {
    tried.push({ path, reason: errorText(e) });
    return undefined;
  }
}

function loadFailure(tried: LoadAttempt[]): Qwen3Error {
  const list = tried.map((t) => `${t.path} (${t.reason})`).join("; ");
  return new Qwen3Error(
    "library",
    `cannot load the qwen3_inference C library; tried: ${list}. ` +
      "Fix: run `deno task build` in the @q3/qwen3 repository, or set QWEN3_LIB to the " +
      'library file, or use the TypeScript engine (engine: "ts", --engine ts)',
  );
}

let opened: { lib: Qwen3Library; path: string } | undefined;
let opening: Promise<{ lib: Qwen3Library; path: string }> | undefined;

async function open(): Promise<{ lib: Qwen3Library; path: string }> {
  const tried: LoadAttempt[] = [];
  const override = envVar("QWEN3_LIB");
  if (override) {
    // An explicit choice is final: falling back elsewhere would hide the user's mistake.
    const lib = tryOpen(override, tried);
    if (lib) return { lib, path: override };
    tried[tried.length - 1].reason += ", from QWEN3_LIB";
    throw loadFailure(tried);
  }
  const base = new URL("../", import.meta.url);
  if (base.protocol === "file:") {
    for (const path of localCandidates(base)) {
      const lib = tryOpen(path, tried);
      if (lib) return { lib, path };
    }
    throw loadFailure(tried);
  }
  const url = new URL(`lib/${targetDir()}/${libraryFileName()}`, base);
  let path: string;
  try {
    path = await download(url, cacheDir(), libraryFileName());
  } catch (e) {
    tried.push({ path: url.href, reason: `download failed: ${errorText(e)}` });
    throw loadFailure(tried);
  }
  const lib = tryOpen(path, tried);
  if (lib) return { lib, path };
  throw loadFailure(tried);
}

/**
 * Opens the library once per process and returns it (later calls reuse it). Throws a
 * Qwen3Error with code "library" naming every path tried and the fix.
 */
export async function loadLibrary(): Promise<Qwen3Library> {
  if (opened) return opened.lib;
  opening ??= open();
  try {
    opened = await opening;
  } catch (e) {
    opening = undefined; // a later call (after a build) may succeed
    throw e;
  }
  return opened.lib;
}

/** The path of the opened library (undefined before {@link loadLibrary} succeeded). */
export function libraryPath(): string | undefined {
  return opened?.path;
}

/** The calling thread's C last-error text. */
export function lastError(lib: Qwen3Library): string {
  return readCString(lib.symbols.qwen3_get_last_error());
}

/**
 * Returns `status` when it is >= 0, else throws the Qwen3Error for it, with the C
 * last-error text (prefixed by `what` when that text is empty).
 */
export function check(lib: Qwen3Library, status: number, what: string): number {
  if (status >= 0) return status;
  const text = lastError(lib);
  throw Qwen3Error.fromStatus(status, text || `${what} failed with status ${status}`);
}
