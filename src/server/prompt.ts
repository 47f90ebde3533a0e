/**
 * A chat request's prompt: the conversation rendered with the model's own Jinja chat template,
 * as Hugging Face's `apply_chat_template(messages, tools=..., tokenize=False,
 * add_generation_prompt=True, enable_thinking=...)` renders it. Template text may hold control
 * tokens, message text never does ({@linkcode ConversationTemplate} tells them apart).
 * @module
 */

import { dirname } from "node:path";
import type { Qwen3 } from "../api/qwen3.ts";
import { Qwen3Error } from "../errors.ts";
import { readHfChatTemplate } from "../export/hf_folder.ts";
import { readGgufMetadata } from "../formats/model_file.ts";
import { ChatTemplateLimitError, ConversationTemplate } from "../text/chat_template.ts";
import { QWEN3_HF_CHAT_TEMPLATE, QWEN3_TEMPLATE_TOKENS } from "../text/qwen3_chat_template.ts";
import type { PromptPart } from "../text/tokenizer.ts";
import { ApiError } from "./errors.ts";
import { forcedPrefill, type TemplateMessage, type ToolRequest } from "./tools.ts";

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

/** What a chat request renders from. */
export interface PromptRequest {
  /** The checked messages. */
  messages: readonly TemplateMessage[];
  /** `enable_thinking`. */
  thinking: boolean;
  /** `tools` and `tool_choice`. */
  tools: ToolRequest;
  /** More template variables (`chat_template_kwargs` but `enable_thinking`), as the client
   * sent them. */
  templateKwargs?: Readonly<Record<string, unknown>>;
}

/** The special token strings a GGUF names (`tokenizer.ggml.bos_token_id`, ...). */
function ggufTokenStrings(metadata: ReadonlyMap<string, unknown>): Record<string, string> {
  const tokens = metadata.get("tokenizer.ggml.tokens");
  const named: Record<string, string> = {};
  for (
    const [key, meta] of [["bos_token", "bos"], ["eos_token", "eos"], ["pad_token", "padding"]]
  ) {
    const id = metadata.get(`tokenizer.ggml.${meta}_token_id`);
    const text = Array.isArray(tokens) && typeof id === "number" ? tokens[id] : undefined;
    if (typeof text === "string") named[key] = text;
  }
  return named;
}

/** The stock Qwen3 chat template (src/text/qwen3_chat_template.ts). */
export function stockChatTemplate(): ConversationTemplate {
  return new ConversationTemplate(
    QWEN3_HF_CHAT_TEMPLATE,
    "the stock Qwen3 chat template",
    QWEN3_TEMPLATE_TOKENS,
  );
}

/**
 * The chat template the server renders a model's conversations with: `file` when given (a
 * Jinja file, `--chat-template-file`), else a GGUF's `tokenizer.chat_template`, else a
 * Hugging Face folder's `chat_template.jinja` or `tokenizer_config.json` `chat_template`
 * beside the model file, else Qwen3's own (src/text/qwen3_chat_template.ts). qwen3.c's
 * `.template*` side files hold single turns only and are not used here. A model's template
 * that @huggingface/jinja cannot parse is replaced by the stock one, with a note.
 *
 * @param model The loaded model.
 * @param opts `file`: a template file to use instead; `note`: told about a replaced template.
 * @returns The parsed template.
 * @throws {Qwen3Error} naming the file when `file` cannot be read or parsed, or a model's
 * template is over the source size limit.
 */
export async function loadChatTemplate(
  model: Pick<Qwen3, "path">,
  opts: { file?: string; note?: (line: string) => void } = {},
): Promise<ConversationTemplate> {
  const path = model.path;
  const gguf = await readGgufMetadata(path);
  const tokens = gguf ? ggufTokenStrings(gguf.metadata) : {};
  if (opts.file !== undefined) {
    let source: string;
    try {
      source = await Deno.readTextFile(opts.file);
    } catch (e) {
      throw new Qwen3Error("io", `${opts.file}: cannot read the chat template (${e})`);
    }
    return new ConversationTemplate(source, opts.file, { ...QWEN3_TEMPLATE_TOKENS, ...tokens });
  }
  let found: { source: string; file: string; tokens: Record<string, string> } | undefined;
  if (gguf) {
    const source = gguf.metadata.get("tokenizer.chat_template");
    if (typeof source === "string") {
      found = { source, file: `${path} (tokenizer.chat_template)`, tokens };
    }
  } else {
    found = await readHfChatTemplate(dirname(path));
  }
  if (found === undefined) return stockChatTemplate();
  try {
    return new ConversationTemplate(found.source, found.file, found.tokens);
  } catch (e) {
    if (e instanceof ChatTemplateLimitError) throw e;
    opts.note?.(`${(e as Error).message}; using the stock Qwen3 chat template instead`);
    return stockChatTemplate();
  }
}

/** A message as OpenAI's API (and so Hugging Face's chat templates) spells it. */
function templateMessage(m: TemplateMessage): Record<string, unknown> {
  const out: Record<string, unknown> = { role: m.role, content: m.content };
  if (m.name !== undefined) out.name = m.name;
  if (m.reasoning !== undefined) out.reasoning_content = m.reasoning;
  if (m.toolCalls !== undefined) {
    out.tool_calls = m.toolCalls.map((c) => ({
      id: c.id,
      type: "function",
      function: { name: c.name, arguments: c.arguments },
    }));
  }
  if (m.toolCallId !== undefined) out.tool_call_id = m.toolCallId;
  return out;
}

/**
 * Renders a checked chat request with the model's chat template: `messages` (OpenAI's
 * shape: `role`, `content` as text, `reasoning_content`, `tool_calls` with `arguments` as
 * JSON text, `tool_call_id`, `name`), `tools` (left out with `tool_choice` "none"),
 * `add_generation_prompt` true, `enable_thinking`, and the other `chat_template_kwargs` (as
 * llama-server passes them; their text is message text). A forced tool call's opening
 * follows (template text).
 *
 * @param template The model's chat template.
 * @param req The checked request.
 * @returns The prompt.
 * @throws {ApiError} 400 (`messages`) when the template refuses the conversation or runs
 * into a rendering bound; 500 when it cannot be rendered with message text kept apart.
 */
export function renderChatRequest(template: ConversationTemplate, req: PromptRequest): ChatPrompt {
  const { choice } = req.tools;
  const tools = choice.kind === "none" ? [] : req.tools.tools;
  const context: Record<string, unknown> = {
    ...req.templateKwargs,
    messages: req.messages.map(templateMessage),
    add_generation_prompt: true,
    enable_thinking: req.thinking,
  };
  if (tools.length > 0) context.tools = tools;
  let parts: PromptPart[];
  try {
    parts = template.render(context);
  } catch (e) {
    if (!(e instanceof Qwen3Error)) throw e;
    if (e.code === "unsupported") throw new ApiError(500, "chat_template_error", e.message);
    throw new ApiError(400, "invalid_value", `messages: ${e.message}`, { param: "messages" });
  }
  const prefill = forcedPrefill(choice, req.thinking);
  if (prefill !== "") parts.push({ text: prefill, special: true });
  return { parts, prefill, parseTools: tools.length > 0 };
}
