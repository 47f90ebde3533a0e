/**
 * Qwen3 chat templates in qwen3.c's printf style (`%s` placeholders, docs/formats.md#chat-template-side-files), their side
 * files, and the split of a chat turn into template text (control tokens allowed) and user text
 * (never control tokens).
 *
 * ```ts
 * import { renderTurn, STOCK_TEMPLATES } from "./template.ts";
 * const { parts } = renderTurn(STOCK_TEMPLATES, { user: "Hi", thinking: false, first: true });
 * console.log(parts.map((p) => p.text).join(""));
 * // <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n
 * ```
 * @module
 */

import { quoteExcerpt, Qwen3Error } from "../errors.ts";
import { readSideText, TEMPLATE_FILE_LIMIT } from "../formats/side_file.ts";
import type { PromptPart, Tokenizer } from "./tokenizer.ts";

/**
 * The four prompt templates of a model ({@linkcode Qwen3.templates}), each with `%s`
 * placeholders filled positionally: the user text, or the system prompt then the user
 * text. `%%` is a literal percent sign. They come from qwen3.c's `.template*` side files,
 * a GGUF's own chat template, or the stock Qwen3 ones.
 *
 * @example The demo model's templates
 * ```ts
 * import { demoModelPath, Qwen3 } from "@q3/qwen3";
 *
 * using model = await Qwen3.load(await demoModelPath());
 * console.log(JSON.stringify(model.templates.thinking));
 * // "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n"
 * ```
 */
export interface ChatTemplates {
  /** One user turn, thinking off (qwen3.c's `.template`): ends with an empty think block. */
  plain: string;
  /** One user turn, thinking on (`.template.with-thinking`). */
  thinking: string;
  /** System prompt and user turn, thinking off (`.template.with-system`). */
  system: string;
  /** System prompt and user turn, thinking on (`.template.with-system-and-thinking`). */
  systemThinking: string;
}

const USER_TURN = "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n";
const SYSTEM_TURN = "<|im_start|>system\n%s<|im_end|>\n";
/** What Qwen3's template appends when thinking is off: an empty reasoning block. */
const EMPTY_THINK = "<think>\n\n</think>\n\n";

/** Qwen3's chat template rendered as qwen3.c's exporter does (no trailing newline). */
export const STOCK_TEMPLATES: ChatTemplates = Object.freeze({
  plain: USER_TURN + EMPTY_THINK,
  thinking: USER_TURN,
  system: SYSTEM_TURN + USER_TURN + EMPTY_THINK,
  systemThinking: SYSTEM_TURN + USER_TURN,
});

/** Side-file suffix (appended to the checkpoint path) of each template, as qwen3.c names them. */
export const TEMPLATE_SUFFIXES: Readonly<Record<keyof ChatTemplates, string>> = Object.freeze({
  plain: ".template",
  thinking: ".template.with-thinking",
  system: ".template.with-system",
  systemThinking: ".template.with-system-and-thinking",
});

/** How many `%s` each template must hold: the user text, plus the system prompt first. */
const PLACEHOLDERS: Readonly<Record<keyof ChatTemplates, number>> = {
  plain: 1,
  thinking: 1,
  system: 2,
  systemThinking: 2,
};

/**
 * Splits a printf-style template at its `%s` placeholders (`%%` is a literal `%`). Throws a
 * Qwen3Error ("format") naming `source` for any other `%` directive or a wrong `%s` count.
 */
export function splitTemplate(template: string, expected: number, source: string): string[] {
  const pieces: string[] = [];
  let current = "";
  for (let i = 0; i < template.length; i++) {
    const c = template[i];
    if (c !== "%") {
      current += c;
      continue;
    }
    const d = template[i + 1];
    if (d === "%") current += "%";
    else if (d === "s") {
      pieces.push(current);
      current = "";
    } else {
      throw new Qwen3Error(
        "format",
        `${source}: ${
          quoteExcerpt(`%${d ?? ""}`)
        } at offset ${i} is not %s or %% (the template is printf-style)`,
      );
    }
    i++;
  }
  pieces.push(current);
  if (pieces.length - 1 !== expected) {
    throw new Qwen3Error(
      "format",
      `${source}: has ${pieces.length - 1} %s placeholders, expected ${expected}`,
    );
  }
  return pieces;
}

/** Checks every template's placeholders; throws a Qwen3Error naming the bad one. */
export function validateTemplates(t: ChatTemplates, source = "chat templates"): void {
  for (const key of Object.keys(PLACEHOLDERS) as (keyof ChatTemplates)[]) {
    if (typeof t[key] !== "string") {
      throw new Qwen3Error("invalid_argument", `${source}: template "${key}" is not a string`);
    }
    splitTemplate(t[key], PLACEHOLDERS[key], `${source} (${key})`);
  }
}

/**
 * The templates of the qwen3.c checkpoint at `modelPath`: each side file
 * (`${modelPath}.template`, ...) that exists, else the stock Qwen3 template for that slot.
 * A side file must be a regular file of at most {@linkcode TEMPLATE_FILE_LIMIT} bytes with no
 * NUL byte (the C engine's rules). Throws a Qwen3Error naming the file when one cannot be
 * read ("io": a FIFO, a device, unreadable), is too large or has the wrong `%s` count
 * ("format").
 */
export async function loadTemplates(modelPath: string): Promise<ChatTemplates> {
  const out: ChatTemplates = { ...STOCK_TEMPLATES };
  for (const key of Object.keys(TEMPLATE_SUFFIXES) as (keyof ChatTemplates)[]) {
    const path = modelPath + TEMPLATE_SUFFIXES[key];
    const text = await readSideText(path, {
      limit: TEMPLATE_FILE_LIMIT,
      what: "chat template",
      optional: true,
    });
    if (text === undefined) continue;
    const nul = text.indexOf("\0");
    if (nul >= 0) {
      // C strings end at a NUL: the C engine could not use the rest, so neither engine does.
      throw new Qwen3Error("format", `${path}: the chat template has a NUL character at ${nul}`);
    }
    splitTemplate(text, PLACEHOLDERS[key], path);
    out[key] = text;
  }
  return out;
}

/** One chat turn to render. */
export interface ChatTurn {
  /** The user's message (always tokenized as plain text). */
  user: string;
  /** System prompt; used on the first turn only, and only when non-empty. */
  system?: string;
  /** Let the model reason in a `<think>` block (false: the template supplies an empty one). */
  thinking: boolean;
  /** The conversation's first turn (the only one that carries the system prompt). */
  first: boolean;
}

/**
 * The prompt of one chat turn as parts: template text (`special: true`, so `<|im_start|>` and
 * friends become control tokens) and the user/system text (`special: false`). Later turns use
 * the single-turn template; the caller closes the previous reply by feeding `<|im_end|>\n`
 * (special) after it, as Qwen3's own template would render the history.
 */
export function renderTurn(t: ChatTemplates, turn: ChatTurn): { parts: PromptPart[] } {
  const withSystem = turn.first && turn.system !== undefined && turn.system !== "";
  const key: keyof ChatTemplates = withSystem
    ? (turn.thinking ? "systemThinking" : "system")
    : (turn.thinking ? "thinking" : "plain");
  const pieces = splitTemplate(t[key], PLACEHOLDERS[key], `chat template (${key})`);
  const values = withSystem ? [turn.system!, turn.user] : [turn.user];
  const parts: PromptPart[] = [];
  for (let i = 0; i < pieces.length; i++) {
    if (pieces[i] !== "") parts.push({ text: pieces[i], special: true });
    if (i < values.length && values[i] !== "") parts.push({ text: values[i], special: false });
  }
  return { parts };
}

/**
 * Token ids of one chat turn: {@linkcode renderTurn}'s parts encoded as one prompt
 * (Tokenizer.encodeParts), so the ids equal Hugging Face's for the rendered template while
 * `<|im_end|>` typed by the user stays text. With `limit`, a turn that needs more tokens
 * throws a Qwen3Error "context_full" without being encoded whole.
 */
export function encodeTurn(
  tok: Tokenizer,
  t: ChatTemplates,
  turn: ChatTurn,
  opts?: { limit?: number },
): number[] {
  return tok.encodeParts(renderTurn(t, turn).parts, opts);
}
