/**
 * A whole OpenAI conversation rendered with a model's chat templates
 * ({@linkcode ChatTemplates}): template text may hold control tokens, message text never does.
 * @module
 */

import { type ChatTemplates, renderTurn } from "../text/template.ts";
import type { PromptPart } from "../text/tokenizer.ts";
import type { RequestMessage } from "./validate.ts";

/** What closes an assistant message, as Qwen3's template writes it. */
const END_OF_TURN: PromptPart = { text: "<|im_end|>\n", special: true };

/**
 * The prompt of a conversation as parts, for `Tokenizer.encodeParts`. Each user message is
 * a turn of the template (the first one with the system prompt); earlier turns use the
 * thinking template, which adds no `<think>` block, so an earlier answer is rendered as
 * Qwen3's own template renders history (reasoning dropped); the last turn uses the
 * template `thinking` asks for (thinking off: the empty `<think>` block).
 *
 * @param templates The model's templates.
 * @param messages Validated messages: an optional system message, then user and
 * assistant in turn, ending with user (`parseChatRequest` checks this).
 * @param thinking Whether the model may reason in this reply.
 * @returns The parts: template text `special: true`, message text `special: false`.
 */
export function renderConversation(
  templates: ChatTemplates,
  messages: readonly RequestMessage[],
  thinking: boolean,
): PromptPart[] {
  const system = messages[0]?.role === "system" ? messages[0].content : undefined;
  const parts: PromptPart[] = [];
  let first = true;
  const rest = messages.slice(system === undefined ? 0 : 1);
  rest.forEach((m, i) => {
    if (m.role === "user") {
      const last = i === rest.length - 1;
      const turn = { user: m.content, system, thinking: last ? thinking : true, first };
      parts.push(...renderTurn(templates, turn).parts);
      first = false;
    } else if (m.role === "assistant") {
      if (m.content !== "") parts.push({ text: m.content, special: false });
      parts.push(END_OF_TURN);
    }
  });
  return parts;
}
