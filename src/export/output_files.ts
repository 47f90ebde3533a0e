/**
 * The files of one export, all or none: checked before anything is written (never an input,
 * never anything but a regular file, an existing one only with `force`), written as
 * `NAME.partial-<pid>`, then renamed in together; on a failure or an abort everything renamed
 * in is removed, what it replaced is put back and the partials are removed.
 * @module
 */

import { basename, dirname, join, resolve } from "node:path";
import { Qwen3Error } from "../errors.ts";

/** What a directory entry is, for a refusal: everything but a regular file. */
function entryKind(info: Deno.FileInfo): string {
  if (info.isSymlink) return "a symbolic link";
  if (info.isDirectory) return "a folder";
  if (info.isFifo) return "a FIFO";
  if (info.isCharDevice || info.isBlockDevice) return "a device";
  if (info.isSocket) return "a socket";
  return "not a regular file";
}

/** lstat, or undefined when nothing is there. */
async function entry(path: string): Promise<Deno.FileInfo | undefined> {
  try {
    return await Deno.lstat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Qwen3Error("io", `${path}: cannot check the output (${(e as Error).message})`);
  }
}

/** `path` with its folder resolved (symbolic links followed), whether or not it exists. */
async function resolvedPath(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    try {
      return join(await Deno.realPath(dirname(resolve(path))), basename(path));
    } catch {
      return resolve(path);
    }
  }
}

/**
 * The files of one export. Each is written as `NAME.partial-<pid>` (created new, so nothing
 * planted under that name is followed), then {@link OutputFiles.commit} renames them all in,
 * the model last; if any step fails or the export is aborted, every file renamed in is
 * removed, every file it replaced (moved aside as `NAME.replaced-<pid>` first) is put back
 * and every partial is removed: all outputs or none.
 */
export class OutputFiles {
  /** Partials created and not yet renamed in. */
  readonly #partials = new Set<string>();
  /** Existing outputs moved aside during the commit: [name, aside]. */
  readonly #moved: [string, string][] = [];
  /** Outputs renamed in during the commit. */
  readonly #placed: string[] = [];

  private constructor(
    /** Every output, the model first. */
    readonly paths: readonly string[],
    /** Whether existing regular files may be replaced. */
    readonly force: boolean,
  ) {}

  /**
   * Checks `paths` (the model first) before anything is written: the folder exists; no
   * output is one of `inputs` (same file by device and inode, or same resolved path); none
   * is anything but a regular file (a symbolic link, folder, device or FIFO is never
   * replaced); none exists unless `force`; no partial name is taken.
   *
   * @param paths Every output, the model first.
   * @param inputs Every file the export reads (absent ones are skipped).
   * @param force Whether existing regular files may be replaced.
   * @returns The checked outputs, nothing written yet.
   * @throws {Qwen3Error} `io` when the output folder is missing or not a folder, or a partial
   * name is taken.
   * @throws {Qwen3Error} `invalid_argument` when an output is not a regular file, is one of
   * the inputs, or exists without `force`.
   */
  static async check(
    paths: readonly string[],
    inputs: readonly string[],
    force: boolean,
  ): Promise<OutputFiles> {
    const outPath = paths[0];
    const dir = dirname(resolve(outPath));
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(dir);
    } catch {
      throw new Qwen3Error("io", `${outPath}: the output folder ${dir} does not exist`);
    }
    if (!info.isDirectory) throw new Qwen3Error("io", `${outPath}: ${dir} is not a folder`);
    const sources: { path: string; real: string; info: Deno.FileInfo }[] = [];
    for (const path of inputs) {
      try {
        sources.push({ path, real: await Deno.realPath(path), info: await Deno.stat(path) });
      } catch { /* absent: nothing to protect (its reader reports it) */ }
    }
    const existing: string[] = [];
    for (const path of paths) {
      const info = await entry(path);
      if (info && !info.isFile) {
        const hint = path === outPath && info.isDirectory ? "; give the model file's path" : "";
        throw new Qwen3Error(
          "invalid_argument",
          `${path}: is ${entryKind(info)}; the export replaces only regular files, even with ` +
            `--force${hint}`,
        );
      }
      const real = await resolvedPath(path);
      const input = sources.find((s) =>
        s.real === real ||
        (info !== undefined && s.info.ino !== null && s.info.dev === info.dev &&
          s.info.ino === info.ino)
      );
      if (input) {
        throw new Qwen3Error(
          "invalid_argument",
          `${path}: is the export's input ${input.path}; write the output elsewhere`,
        );
      }
      if (info) existing.push(path);
      const partial = partialName(path);
      if (await entry(partial)) {
        throw new Qwen3Error(
          "io",
          `${partial}: already exists (another export's partial file?); remove it first`,
        );
      }
    }
    if (existing.length > 0 && !force) {
      throw new Qwen3Error(
        "invalid_argument",
        `${existing.join(", ")}: already ${existing.length === 1 ? "exists" : "exist"}; ` +
          "pass --force to replace (regular files only)",
      );
    }
    return new OutputFiles(paths, force);
  }

  /**
   * Creates `path`'s partial file (it must not exist) for writing.
   *
   * @param path One of the planned outputs.
   * @returns The open partial file; the caller closes it.
   * @throws {Error} when `path` is not a planned output (a bug in the caller).
   * @throws {Deno.errors.AlreadyExists} when the partial name was taken since the check.
   */
  async create(path: string): Promise<Deno.FsFile> {
    if (!this.paths.includes(path)) throw new Error(`${path} is not one of the planned outputs`);
    const partial = partialName(path);
    const file = await Deno.open(partial, { write: true, createNew: true });
    this.#partials.add(partial);
    return file;
  }

  /**
   * Writes `bytes` as `path`'s partial file.
   *
   * @param path One of the planned outputs.
   * @param bytes Its whole content.
   */
  async write(path: string, bytes: Uint8Array): Promise<void> {
    using file = await this.create(path);
    await writeAll(file, bytes);
  }

  /**
   * Copies the file `from` as `path`'s partial file.
   *
   * @param from The file to copy.
   * @param path One of the planned outputs.
   */
  async copy(from: string, path: string): Promise<void> {
    const src = await Deno.open(from);
    const dst = await this.create(path);
    await src.readable.pipeTo(dst.writable); // closes both
  }

  /**
   * Renames every partial in, the model last. An output that appeared since the check is
   * refused like one that was there (not a regular file; present without --force); one
   * replaced with --force is moved aside first and removed once all are in. On a failure or
   * an abort everything is undone before the error is rethrown.
   *
   * @param signal Stops the commit between renames (everything is then undone).
   * @throws {Qwen3Error} `invalid_argument` when an output appeared since the check and is
   * not a regular file, or without `force`; `io` when one cannot be moved aside.
   */
  async commit(signal?: AbortSignal): Promise<void> {
    try {
      for (const path of [...this.paths.slice(1), this.paths[0]]) {
        signal?.throwIfAborted();
        const info = await entry(path);
        if (info) {
          if (!info.isFile) {
            throw new Qwen3Error(
              "invalid_argument",
              `${path}: appeared as ${entryKind(info)} during the export; nothing was replaced`,
            );
          }
          if (!this.force) {
            throw new Qwen3Error(
              "invalid_argument",
              `${path}: appeared during the export; pass --force to replace it`,
            );
          }
          const aside = `${path}.replaced-${Deno.pid}`;
          if (await entry(aside)) {
            throw new Qwen3Error(
              "io",
              `${aside}: already exists, so ${path} cannot be moved aside; remove it first`,
            );
          }
          await Deno.rename(path, aside);
          this.#moved.push([path, aside]);
        }
        const partial = partialName(path);
        await Deno.rename(partial, path);
        this.#partials.delete(partial);
        this.#placed.push(path);
      }
      signal?.throwIfAborted();
    } catch (e) {
      await this.discard();
      throw e;
    }
    for (const [, aside] of this.#moved.splice(0)) await Deno.remove(aside).catch(() => {});
    this.#placed.length = 0;
  }

  /**
   * Undoes everything: removes the partials and the outputs renamed in, and puts back what
   * they replaced.
   *
   * @throws {Qwen3Error} `io` naming every replaced file that could not be put back (where it
   * now is), so it is not lost.
   */
  async discard(): Promise<void> {
    for (const partial of this.#partials) await Deno.remove(partial).catch(() => {});
    this.#partials.clear();
    for (const path of this.#placed.splice(0)) await Deno.remove(path).catch(() => {});
    const stranded: string[] = [];
    for (const [path, aside] of this.#moved.splice(0).reverse()) {
      await Deno.rename(aside, path).catch(() => stranded.push(`${path} (now ${aside})`));
    }
    if (stranded.length > 0) {
      throw new Qwen3Error(
        "io",
        `the export failed and could not put back the files it replaced: ${stranded.join(", ")}`,
      );
    }
  }
}

function partialName(path: string): string {
  return `${path}.partial-${Deno.pid}`;
}

/**
 * Writes all of `data` to `file`.
 *
 * @param file An open, writable file.
 * @param data The bytes.
 */
export async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await file.write(data.subarray(off));
}
