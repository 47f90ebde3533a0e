/**
 * The prompt of a chat request, and `POST /apply-template`, which shows it: the exact text
 * the server prefills for a conversation.
 * @module
 */

import type { ChatTemplates } from "../text/template.ts";
import type { PromptPart } from "../text/tokenizer.ts";
import type { ServerContext } from "./handlers.ts";
import { json, readJson } from "./http.ts";
import { renderConversation } from "./prompt.ts";
import { forcedPrefill, renderWithTools } from "./tools.ts";
import { asObject, type ChatRequest, parseChatRequest } from "./validate.ts";

/** A chat request's prompt, and what of it the reply begins with. */
export interface ChatPrompt {
  /** The prompt: template text `special: true`, message and tool text `special: false`. */
  parts: PromptPart[];
  /** The opening of a forced tool call at the prompt's end ("" when none), which the tool
   * call parser reads as the reply's start. */
  prefill: string;
  /** Whether the reply is parsed for tool calls (tools given, `tool_choice` not "none"). */
  parseTools: boolean;
}

/**
 * Renders a checked chat request. A conversation without tools, tool calls or tool results
 * uses the model's templates ({@linkcode renderConversation}); one with them is rendered as
 * Qwen3's chat template renders it ({@linkcode renderWithTools}). With `tool_choice` "none"
 * the tools are left out of the prompt.
 *
 * @param templates The model's templates.
 * @param req The checked request (messages, thinking, tools).
 * @returns The prompt.
 */
export function renderChatRequest(
  templates: ChatTemplates,
  req: Pick<ChatRequest, "messages" | "thinking" | "tools">,
): ChatPrompt {
  const { choice } = req.tools;
  const tools = choice.kind === "none" ? [] : req.tools.tools;
  const history = req.messages.some((m) => m.role === "tool" || m.toolCalls);
  if (tools.length === 0 && !history) {
    return {
      parts: renderConversation(templates, req.messages, req.thinking),
      prefill: "",
      parseTools: false,
    };
  }
  const prefill = forcedPrefill(choice, req.thinking);
  return {
    parts: renderWithTools(req.messages, tools, req.thinking, prefill),
    prefill,
    parseTools: tools.length > 0,
  };
}

/** `POST /apply-template`: `{messages, tools?, tool_choice?, chat_template_kwargs?}` to
 * `{prompt}`, the text the server would prefill for them. */
export async function applyTemplate(ctx: ServerContext, req: Request): Promise<Response> {
  const body = parseChatRequest(asObject(await readJson(req, ctx.maxBody)));
  const { parts } = renderChatRequest(ctx.model.templates, body);
  return json({ prompt: parts.map((p) => p.text).join("") });
}
