/**
 * Reading the files a model path leads to without trusting them: the model file itself must
 * be a regular file (a FIFO would block the reader forever), and the side files beside it
 * (chat templates, tokenizers) are read only when they are regular files no larger than a
 * limit shared with the C engine (csrc/src/platform.c, model.c), so `/dev/zero` behind a symlink, a FIFO
 * or a 50 MB "template" is refused before a byte of it is read. The loaders read a template
 * with `readSideText(path, { limit: TEMPLATE_FILE_LIMIT, what: "chat template" })`.
 * @module
 */

import { escapeForMessage, Qwen3Error } from "../errors.ts";

/** Largest chat template side file (`.template*`), in bytes: 64 KiB each. */
export const TEMPLATE_FILE_LIMIT = 64 * 1024;
/** Largest `tokenizer.json`, in bytes (Qwen3's is 11 MB). */
export const TOKENIZER_JSON_LIMIT = 64 * 1024 * 1024;
/** Largest qwen3.c `.tokenizer` side file, in bytes (Qwen3's is about 2 MB). */
export const QWEN3C_TOKENIZER_LIMIT = 64 * 1024 * 1024;

const UTF8 = new TextDecoder("utf-8", { ignoreBOM: true });

/** Options of {@linkcode readSideFile}. */
export interface SideFileOptions {
  /** Most bytes the file may hold; a larger file is refused before it is read. */
  limit: number;
  /** What the file is, in the user's words, for messages ("chat template"). */
  what: string;
  /**
   * When true, a path that does not exist gives `undefined` instead of an error.
   * @default {false}
   */
  optional?: boolean;
}

/**
 * What a directory entry is, for a message.
 *
 * @param info The entry's stat.
 * @returns e.g. "a FIFO (named pipe)", "a directory", "a regular file".
 */
export function fileKind(info: Deno.FileInfo): string {
  if (info.isFile) return "a regular file";
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO (named pipe)";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isSocket) return "a socket";
  if (info.isSymlink) return "a symbolic link";
  return "not a regular file";
}

/**
 * The reason an operating-system error gives, short and safe for a message.
 *
 * @param e The error.
 * @returns e.g. "no such file", "permission denied", or the escaped message.
 */
export function ioReason(e: unknown): string {
  if (e instanceof Deno.errors.NotFound) return "no such file";
  if (e instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (e instanceof Deno.errors.FilesystemLoop) {
    return "too many levels of symbolic links (a symlink loop)";
  }
  if (e instanceof Deno.errors.NotADirectory) return "a component of the path is not a directory";
  if (e instanceof Deno.errors.IsADirectory) return "a directory";
  return escapeForMessage(e instanceof Error ? e.message : String(e));
}

/**
 * Checks that `path` names a regular file (symbolic links followed).
 *
 * @param path The file.
 * @param what Which file it was meant to be, for messages ("model file").
 * @param optional When true, a missing path gives undefined instead of an error.
 * @returns Its stat, or undefined for a missing optional path.
 * @throws {Qwen3Error} `io` naming the path and what it is instead, or why it cannot be
 * looked at.
 */
export async function statRegularFile(
  path: string,
  what: string,
  optional = false,
): Promise<Deno.FileInfo | undefined> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (optional && e instanceof Deno.errors.NotFound) return undefined;
    throw new Qwen3Error("io", `${path}: cannot read the ${what} (${ioReason(e)})`);
  }
  if (!info.isFile) {
    throw new Qwen3Error(
      "io",
      `${path}: cannot read the ${what}: it is ${fileKind(info)}, not a regular file`,
    );
  }
  return info;
}

/**
 * Reads a side file of at most `limit` bytes. The path is looked at first: it must be a
 * regular file (symbolic links followed, so a link to `/dev/zero` is a character device)
 * no larger than `limit`, and then at most `limit` bytes are read, so a file that grows
 * while it is read is refused too.
 *
 * @param path The side file.
 * @param opts Its size limit, what it is (for messages), whether it may be missing.
 * @returns Its bytes, or undefined when it is missing and `opts.optional`.
 * @throws {Qwen3Error} `io` naming the path when it is missing (unless optional),
 * unreadable or not a regular file; `format` when it is over the limit.
 */
export async function readSideFile(
  path: string,
  opts: SideFileOptions & { optional: true },
): Promise<Uint8Array | undefined>;
/**
 * Reads a side file that must exist (see the overload above).
 *
 * @param path The side file.
 * @param opts Its size limit and what it is (for messages).
 * @returns Its bytes.
 * @throws {Qwen3Error} `io` or `format` as the first overload says.
 */
export async function readSideFile(path: string, opts: SideFileOptions): Promise<Uint8Array>;
export async function readSideFile(
  path: string,
  opts: SideFileOptions,
): Promise<Uint8Array | undefined> {
  const { limit, what } = opts;
  const info = await statRegularFile(path, what, opts.optional ?? false);
  if (info === undefined) return undefined;
  const tooLarge = (size: string) =>
    new Qwen3Error(
      "format",
      `${path}: the ${what} is ${size} bytes, larger than the limit of ${limit} bytes`,
    );
  if (info.size > limit) throw tooLarge(String(info.size));
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new Qwen3Error("io", `${path}: cannot read the ${what} (${ioReason(e)})`);
  }
  using _ = file;
  try {
    // The path may have been swapped between the two looks: judge the file actually open.
    const opened = await file.stat();
    if (!opened.isFile) {
      throw new Qwen3Error(
        "io",
        `${path}: cannot read the ${what}: it is ${fileKind(opened)}, not a regular file`,
      );
    }
    // One byte more than the limit is asked for, so a file that grew past it is caught.
    let buf = new Uint8Array(Math.min(opened.size, limit) + 1);
    let filled = 0;
    for (;;) {
      if (filled === buf.length) {
        if (buf.length > limit) throw tooLarge(`more than ${limit}`);
        const next = new Uint8Array(Math.min(buf.length * 2, limit + 1));
        next.set(buf);
        buf = next;
      }
      const n = await file.read(buf.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    return buf.subarray(0, filled);
  } catch (e) {
    if (e instanceof Qwen3Error) throw e;
    throw new Qwen3Error("io", `${path}: cannot read the ${what} (${ioReason(e)})`);
  }
}

/**
 * {@linkcode readSideFile} decoded as UTF-8 as `Deno.readTextFile` does: an invalid sequence
 * becomes U+FFFD and a leading byte-order mark is kept (the C engine keeps its bytes too).
 *
 * @param path The side file.
 * @param opts Its size limit, what it is (for messages), whether it may be missing.
 * @returns Its text, or undefined when it is missing and `opts.optional`.
 * @throws {Qwen3Error} `io` or `format` as {@linkcode readSideFile} says.
 */
export async function readSideText(
  path: string,
  opts: SideFileOptions & { optional: true },
): Promise<string | undefined>;
/**
 * Reads a side file that must exist as text (see the overload above).
 *
 * @param path The side file.
 * @param opts Its size limit and what it is (for messages).
 * @returns Its text.
 * @throws {Qwen3Error} `io` or `format` as {@linkcode readSideFile} says.
 */
export async function readSideText(path: string, opts: SideFileOptions): Promise<string>;
export async function readSideText(
  path: string,
  opts: SideFileOptions,
): Promise<string | undefined> {
  const bytes = await readSideFile(path, opts);
  return bytes === undefined ? undefined : UTF8.decode(bytes);
}
