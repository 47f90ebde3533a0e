/**
 * `POST /apply-template`: the exact text the server prefills for a conversation, rendered
 * with the model's chat template (prompt.ts).
 * @module
 */

import { checkMessageCount, type ServerContext } from "./handlers.ts";
import { json, readJson } from "./http.ts";
import { renderChatRequest } from "./prompt.ts";
import { asObject, parseChatRequest } from "./validate.ts";

/** `POST /apply-template`: `{messages, tools?, tool_choice?, chat_template_kwargs?}` to
 * `{prompt}`, the text the server would prefill for them (checked as a chat request is). */
export async function applyTemplate(ctx: ServerContext, req: Request): Promise<Response> {
  const body = parseChatRequest(
    checkMessageCount(ctx, asObject(await readJson(req, ctx.maxBody))),
  );
  const { parts } = renderChatRequest(ctx.template, body);
  return json({ prompt: parts.map((p) => p.text).join("") });
}
