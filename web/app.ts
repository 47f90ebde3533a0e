/// <reference no-default-lib="true" />
/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/// <reference lib="esnext" />
/**
 * The chat page that `qwen3 serve` shows at `/`: it talks to the server's OpenAI-compatible
 * `POST /v1/chat/completions` with `stream: true`, shows thinking apart from the answer, and keeps
 * the conversation in the page (sent whole as `messages` each turn). Bundled into one HTML file by
 * `src/server/page.ts`.
 * @module
 */

import { type ChatUsage, errorMessage, parseChunk, readEvents } from "./sse.ts";
import { renderMarkdown } from "./markdown.ts";

// ---------------------------------------------------------------------------------------------
// Settings, kept in localStorage

interface Settings {
  /** Sent as a leading `system` message when not blank. */
  system: string;
  temperature: number;
  maxTokens: number;
  /** `chat_template_kwargs.enable_thinking`. */
  thinking: boolean;
  /** Sent as `Authorization: Bearer` when not blank (a server started with `--api-key`). */
  apiKey: string;
}

const SETTINGS_KEY = "qwen3-chat.settings";
// Qwen3's model card suggests 0.6 with thinking and 0.7 without; one value serves both well.
const DEFAULT_SETTINGS: Settings = {
  system: "",
  temperature: 0.6,
  maxTokens: 2048,
  thinking: true,
  apiKey: "",
};

function loadSettings(): Settings {
  try {
    const saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) ?? "{}");
    return { ...DEFAULT_SETTINGS, ...saved };
  } catch {
    return { ...DEFAULT_SETTINGS };
  }
}

function saveSettings(settings: Settings): void {
  try {
    localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
  } catch {
    // Private windows may refuse storage; the settings still hold for this page.
  }
}

// ---------------------------------------------------------------------------------------------
// Elements

function $<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`Cannot start the chat page: element #${id} is missing`);
  return element as T;
}

const messagesList = $<HTMLOListElement>("messages");
const emptyState = $("empty");
const composer = $<HTMLFormElement>("composer");
const prompt = $<HTMLTextAreaElement>("prompt");
const sendButton = $<HTMLButtonElement>("send");
const stopButton = $<HTMLButtonElement>("stop");
const newChatButton = $<HTMLButtonElement>("new-chat");
const settingsToggle = $<HTMLButtonElement>("settings-toggle");
const settingsPanel = $("settings");
const systemInput = $<HTMLTextAreaElement>("system-prompt");
const temperatureInput = $<HTMLInputElement>("temperature");
const temperatureValue = $<HTMLOutputElement>("temperature-value");
const maxTokensInput = $<HTMLInputElement>("max-tokens");
const thinkingInput = $<HTMLInputElement>("thinking");
const apiKeyInput = $<HTMLInputElement>("api-key");
const modelName = $("model-name");

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------------------------------------
// State

interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

let settings = loadSettings();
/** The conversation so far, without the system prompt (that comes from the settings each turn). */
let history: ChatMessage[] = [];
/** Set while an answer streams; aborting it is what Stop does. */
let running: AbortController | null = null;
let model: string | undefined;
/** Bumped by New chat, so that an answer still closing does not land in the new conversation. */
let conversation = 0;

// ---------------------------------------------------------------------------------------------
// Settings panel

function showSettings(): void {
  systemInput.value = settings.system;
  temperatureInput.value = String(settings.temperature);
  temperatureValue.value = settings.temperature.toFixed(2);
  maxTokensInput.value = String(settings.maxTokens);
  thinkingInput.checked = settings.thinking;
  apiKeyInput.value = settings.apiKey;
}

function readSettings(): void {
  const temperature = Number(temperatureInput.value);
  const maxTokens = Math.round(Number(maxTokensInput.value));
  settings = {
    system: systemInput.value,
    temperature: Number.isFinite(temperature) ? temperature : DEFAULT_SETTINGS.temperature,
    maxTokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : DEFAULT_SETTINGS.maxTokens,
    thinking: thinkingInput.checked,
    apiKey: apiKeyInput.value.trim(),
  };
  temperatureValue.value = settings.temperature.toFixed(2);
  saveSettings(settings);
}

function setSettingsOpen(open: boolean): void {
  settingsPanel.hidden = !open;
  settingsToggle.setAttribute("aria-expanded", String(open));
  if (open) systemInput.focus();
}

settingsPanel.addEventListener("input", readSettings);
settingsPanel.addEventListener("change", readSettings);
// A key entered (or fixed) may unlock /v1/models too.
apiKeyInput.addEventListener("change", () => void loadModelName());
settingsToggle.addEventListener("click", () => setSettingsOpen(Boolean(settingsPanel.hidden)));
document.addEventListener("click", (event) => {
  const target = event.target as Node;
  if (
    !settingsPanel.hidden && !settingsPanel.contains(target) && !settingsToggle.contains(target)
  ) {
    setSettingsOpen(false);
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (!settingsPanel.hidden) {
    setSettingsOpen(false);
    settingsToggle.focus();
  } else if (running) {
    running.abort();
  }
});

// ---------------------------------------------------------------------------------------------
// Composer

function updateComposer(): void {
  sendButton.hidden = running !== null;
  stopButton.hidden = running === null;
  sendButton.disabled = prompt.value.trim() === "";
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, 200)}px`;
}

prompt.addEventListener("input", updateComposer);
prompt.addEventListener("keydown", (event) => {
  // isComposing: Enter that confirms an IME candidate is not a send.
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    composer.requestSubmit();
  }
});
composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = prompt.value.trim();
  if (!text || running) return;
  prompt.value = "";
  updateComposer();
  void send(text);
});
stopButton.addEventListener("click", () => running?.abort());
newChatButton.addEventListener("click", () => {
  running?.abort();
  conversation++;
  history = [];
  messagesList.replaceChildren();
  emptyState.hidden = false;
  prompt.focus();
});

// The conversation's bottom padding follows the composer as it grows.
new ResizeObserver(([entry]) => {
  document.documentElement.style.setProperty(
    "--composer-h",
    `${Math.ceil(entry.target.getBoundingClientRect().height)}px`,
  );
}).observe(composer.parentElement!);

// ---------------------------------------------------------------------------------------------
// Rendering one turn

function nearBottom(): boolean {
  const page = document.scrollingElement ?? document.documentElement;
  return page.scrollHeight - page.scrollTop - page.clientHeight < 120;
}

function scrollToBottom(): void {
  const page = document.scrollingElement ?? document.documentElement;
  page.scrollTop = page.scrollHeight;
}

function addUserMessage(text: string): void {
  emptyState.hidden = true;
  const item = element("li", "message user");
  item.append(element("div", "bubble", text));
  messagesList.append(item);
  scrollToBottom();
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

/** One assistant answer on screen: its thinking block, answer text, and stats line. */
class AnswerView {
  readonly item = element("li", "message assistant streaming waiting");
  readonly #bubble = element("div", "bubble");
  readonly #answer = element("div", "answer");
  readonly #meta = element("div", "meta");
  #thinking: HTMLDetailsElement | null = null;
  #thinkingSummary: HTMLElement | null = null;
  #thinkingText: HTMLElement | null = null;
  #thinkingStarted = 0;
  #folded = false;
  #frame = 0;
  thought = "";
  answer = "";

  constructor() {
    this.item.setAttribute("aria-busy", "true");
    const dots = element("span", "dots");
    dots.setAttribute("aria-label", "Waiting for the model");
    dots.append(element("span"), element("span"), element("span"));
    this.#answer.append(dots);
    this.#bubble.append(this.#answer);
    this.item.append(this.#bubble, this.#meta);
    messagesList.append(this.item);
    scrollToBottom();
  }

  addThinking(text: string): void {
    if (!this.#thinking) {
      this.#thinking = element("details", "thinking active");
      this.#thinking.open = true;
      this.#thinkingSummary = element("summary", "", "Thinking…");
      this.#thinkingText = element("div", "thinking-text");
      this.#thinking.append(this.#thinkingSummary, this.#thinkingText);
      this.#bubble.prepend(this.#thinking);
      this.#thinkingStarted = performance.now();
    }
    this.thought += text;
    this.#schedule();
  }

  addAnswer(text: string): void {
    this.answer += text;
    this.#endThinking();
    this.#schedule();
  }

  /** Closes the thinking block: folded once, when the answer starts; the reader may reopen it. */
  #endThinking(): void {
    if (!this.#thinking || this.#folded) return;
    this.#folded = true;
    this.#thinking.open = false;
    this.#thinking.classList.remove("active");
    this.#thinkingSummary!.textContent = `Thought for ${
      seconds(performance.now() - this.#thinkingStarted)
    }`;
  }

  #schedule(): void {
    if (!this.#frame) this.#frame = requestAnimationFrame(() => this.render());
  }

  render(): void {
    if (this.#frame) cancelAnimationFrame(this.#frame);
    this.#frame = 0;
    const follow = nearBottom();
    if (this.thought || this.answer) this.item.classList.remove("waiting");
    this.item.classList.toggle("thinking-now", !this.answer.trim() && this.thought !== "");
    if (this.#thinkingText) this.#thinkingText.textContent = this.thought.trim();
    if (this.answer.trim()) this.#answer.innerHTML = renderMarkdown(this.answer.trim());
    else if (this.thought) this.#answer.replaceChildren();
    if (follow) scrollToBottom();
  }

  finish(stats: string[], note?: { text: string; error?: boolean }): void {
    this.#endThinking();
    if (this.#thinkingSummary && !this.answer && this.thought) {
      this.#thinkingSummary.textContent = "Thought (no answer)";
    }
    this.render();
    this.item.classList.remove("streaming", "waiting", "thinking-now");
    this.item.removeAttribute("aria-busy");
    if (!this.answer.trim()) this.#answer.replaceChildren();
    if (note?.error) {
      this.item.classList.add("error");
      this.#answer.append(element("p", "error-text", note.text));
    }
    this.#meta.replaceChildren(...stats.map((s) => element("span", "", s)));
    if (note && !note.error) this.#meta.prepend(element("span", "stopped", note.text));
    if (nearBottom()) scrollToBottom();
  }
}

// ---------------------------------------------------------------------------------------------
// Talking to the server

/** The request headers every call sends: the API key, when one is set. */
function authHeaders(): Record<string, string> {
  return settings.apiKey ? { authorization: `Bearer ${settings.apiKey}` } : {};
}

/** What a 401 means here, and where to fix it. */
function unauthorizedMessage(): string {
  return settings.apiKey
    ? "The server refused the API key. Check it under Settings → API key."
    : "This server needs an API key (it was started with --api-key). Enter it under " +
      "Settings → API key.";
}

async function readError(response: Response): Promise<string> {
  if (response.status === 401) {
    await response.body?.cancel().catch(() => {});
    return unauthorizedMessage();
  }
  const text = await response.text().catch(() => "");
  try {
    const message = errorMessage(JSON.parse(text));
    if (message) return message;
  } catch {
    // Not JSON: fall through to the status line.
  }
  const status = `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
  return text.trim() && text.length < 300 ? `${status}: ${text.trim()}` : status;
}

async function send(text: string): Promise<void> {
  addUserMessage(text);
  history.push({ role: "user", content: text });
  const view = new AnswerView();
  const turn = conversation;
  const controller = new AbortController();
  running = controller;
  updateComposer();

  const messages: ChatMessage[] = settings.system.trim()
    ? [{ role: "system", content: settings.system }, ...history]
    : [...history];
  const started = performance.now();
  let firstToken = 0;
  let lastToken = 0;
  let pieces = 0;
  let usage: ChatUsage | undefined;
  let finishReason: string | null = null;
  let failure: string | undefined;
  let needsKey = false;

  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "text/event-stream",
        ...authHeaders(),
      },
      body: JSON.stringify({
        ...(model ? { model } : {}),
        messages,
        stream: true,
        stream_options: { include_usage: true },
        temperature: settings.temperature,
        max_tokens: settings.maxTokens,
        chat_template_kwargs: { enable_thinking: settings.thinking },
      }),
      signal: controller.signal,
    });
    if (!response.ok) {
      needsKey = response.status === 401;
      throw new Error(await readError(response));
    }
    if (!response.body) throw new Error("The server sent an empty response");
    for await (const data of readEvents(response.body)) {
      const chunk = parseChunk(data);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        const { content, reasoning_content: reasoning } = choice.delta ?? {};
        if (reasoning || content) {
          const now = performance.now();
          firstToken ||= now;
          lastToken = now;
          pieces++;
        }
        if (reasoning) view.addThinking(reasoning);
        if (content) view.addAnswer(content);
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) {
      failure = error instanceof Error ? error.message : String(error);
      if (failure === "Failed to fetch") {
        failure = "Cannot reach the server: is `qwen3 serve` running?";
      }
    }
  }

  if (running === controller) running = null;
  updateComposer();

  const stats: string[] = [];
  if (usage) stats.push(`${usage.prompt_tokens} prompt tokens`);
  // Decode speed: tokens after the first over the time from first to last token, so that the
  // prompt's prefill (inside time to first token) does not count against it.
  const tokens = usage?.completion_tokens ?? pieces;
  if (tokens) stats.push(`${tokens} tokens`);
  if (tokens > 1 && lastToken > firstToken) {
    stats.push(`${((tokens - 1) / ((lastToken - firstToken) / 1000)).toFixed(1)} tok/s`);
  }
  if (firstToken) stats.push(`first token ${seconds(firstToken - started)}`);
  if (finishReason === "length") stats.push("cut at max tokens");

  if (failure !== undefined) {
    view.finish(stats, { text: failure, error: true });
  } else if (controller.signal.aborted) {
    view.finish(stats, { text: "Stopped" });
  } else if (finishReason === null) {
    // The stream ended without a finish_reason: the server went away mid-answer.
    view.finish(stats, { text: "Connection closed before the end" });
  } else {
    view.finish(stats);
  }

  if (needsKey) {
    // Straight to the field that fixes it.
    setSettingsOpen(true);
    apiKeyInput.focus();
    apiKeyInput.select();
  }

  if (turn !== conversation) return;
  if (view.answer.trim()) {
    history.push({ role: "assistant", content: view.answer.trim() });
  } else {
    // No answer to pair with: drop the question so the next turn's messages still alternate.
    history.pop();
  }
  if (document.activeElement === document.body || document.activeElement === stopButton) {
    prompt.focus();
  }
}

async function loadModelName(): Promise<void> {
  try {
    const response = await fetch("v1/models", { headers: authHeaders() });
    if (!response.ok) {
      await response.body?.cancel().catch(() => {});
      // 503 while the server loads its model: ask again shortly.
      if (response.status === 503) setTimeout(() => void loadModelName(), 1000);
      return;
    }
    const body = await response.json() as { data?: { id?: string }[] };
    model = body.data?.[0]?.id;
    if (model) modelName.textContent = model;
  } catch {
    // The header keeps its generic name; sending still works without one.
  }
}

showSettings();
updateComposer();
void loadModelName();
prompt.focus();
