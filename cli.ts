/**
 * The `qwen3` command line: chat with a model, continue a prompt, tokenize or embed text, describe
 * a model file, export a Hugging Face model. Run it as `deno run -A jsr:@q3/qwen3/cli
 * <command>` (or `deno run -A cli.ts <command>` in a checkout); `qwen3 chat` with no model
 * chats with the demo model ({@linkcode demoModelPath}).
 *
 * ```sh
 * deno run -A jsr:@q3/qwen3/cli chat
 * deno run -A cli.ts chat model.bin -y "You are terse." -r 0
 * deno run -A cli.ts generate model.bin -i "The future of AI is" -t 0 -n 64
 * deno run -A cli.ts inference model.bin --mode generate --input "Hello" --temperature 0.7
 * deno run -A cli.ts tokenize tokenizer.json -i "Hello world"
 * deno run -A cli.ts embed qwen3-embedding.bin -i "The sea" -i "The sun" --dimensions 256
 * deno run -A cli.ts info model.bin
 * deno run -A cli.ts export Qwen3-0.6B qwen3-0.6b.bin
 * ```
 *
 * Flags follow both peers: qwen3.c's short ones (`-t -p -s -c -m -i -y -r`) and qwen3-rs's
 * long ones (`--temperature --topp --seed --context --mode --input --system --reasoning`).
 * `qwen3 <command> --help` lists a command's options. The one export, {@linkcode main},
 * runs a command line from code.
 * @module
 */

import { basename } from "node:path";
import { parseArgs } from "node:util";
import { cpuFeatures, kernelName } from "./ffi/c_engine.ts";
import { libraryPath } from "./ffi/library.ts";
import { Qwen3Error } from "./src/errors.ts";
import {
  DEFAULT_GROUP_SIZE,
  type ExportFormat,
  exportHfModel,
  GGUF_MIXTURE_TYPES,
  GGUF_WEIGHT_TYPES,
  type GgufWeightType,
} from "./src/export/export.ts";
import type { GenerationStats, Piece, PieceKind } from "./src/api/generate.ts";
import type { KvCacheType } from "./src/types.ts";
import { demoModelPath } from "./src/api/demo.ts";
import { Qwen3 } from "./src/api/qwen3.ts";
import { readSideText, TOKENIZER_JSON_LIMIT } from "./src/formats/side_file.ts";
import { Tokenizer } from "./src/text/tokenizer.ts";
import { type Qwen3Server, startServer } from "./src/server/server.ts";
import type { SamplerOptions } from "./src/types.ts";

/** A mistake in the command line (exit status 2). */
class UsageError extends Error {}

const OPTIONS = {
  temperature: { type: "string", short: "t" },
  topp: { type: "string", short: "p" },
  seed: { type: "string", short: "s" },
  context: { type: "string", short: "c" },
  "kv-type": { type: "string" },
  mode: { type: "string", short: "m" },
  input: { type: "string", short: "i" },
  system: { type: "string", short: "y" },
  reasoning: { type: "string", short: "r" },
  engine: { type: "string" },
  "max-tokens": { type: "string", short: "n" },
  threads: { type: "string" },
  "top-k": { type: "string" },
  "min-p": { type: "string" },
  "presence-penalty": { type: "string" },
  "frequency-penalty": { type: "string" },
  special: { type: "boolean" },
  host: { type: "string" },
  port: { type: "string" },
  parallel: { type: "string" },
  queue: { type: "string" },
  "max-body": { type: "string" },
  "max-messages": { type: "string" },
  timeout: { type: "string" },
  "chat-template-file": { type: "string" },
  "api-key": { type: "string" },
  metrics: { type: "boolean" },
  cors: { type: "string" },
  "no-prompt-cache": { type: "boolean" },
  "no-speculate": { type: "boolean" },
  "group-size": { type: "string" },
  format: { type: "string" },
  type: { type: "string" },
  force: { type: "boolean" },
  dimensions: { type: "string" },
  instruction: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type OptionName = keyof typeof OPTIONS;
type Values = {
  [K in OptionName]?: (typeof OPTIONS)[K]["type"] extends "boolean" ? boolean : string;
};

const MODEL_FLAGS =
  `  --engine c|ts             engine: c (native, default) or ts (TypeScript reference)
  -c, --context N           context length in tokens (0 = the model's, default)
  --kv-type f16|f32|q8      KV cache: f16 (default: binary16, as llama.cpp's), f32 (the
                            reference numerics, 2x larger) or q8 (int8, 1.8x smaller)
  --threads N               threads for the C engine (default: all CPUs)`;

const SAMPLING_FLAGS = `  -t, --temperature T       0 = greedy (default 1.0)
  -p, --topp P              nucleus sampling in (0,1); 0 or >= 1 disables (default 0.9)
  --top-k K                 keep the K most likely tokens; 0 disables (default 0)
  --min-p P                 drop tokens below P x the top probability (default 0)
  --presence-penalty X      penalise tokens already generated (default 0)
  --frequency-penalty X     penalise tokens by how often generated (default 0)
  -s, --seed N              random seed; 0 = from the clock (default 0)
  -n, --max-tokens N        stop after N new tokens (default: until done or context full)
  --no-speculate            no speculative decoding (default: on with the C engine; the
                            output is the same either way, only the speed differs)`;

const HELP: Record<string, string> = {
  main: `qwen3: run Qwen3 language models on the CPU

Usage: qwen3 <command> [options]

Commands:
  chat [MODEL]              interactive chat (stdin lines; an empty line or EOF ends it)
  generate MODEL -i PROMPT  continue a prompt
  inference MODEL           qwen3-rs / qwen3.c style: --mode chat|generate
  tokenize MODEL|tokenizer.json -i TEXT
                            print the token ids of TEXT
  embed MODEL -i TEXT [-i TEXT ...]
                            embeddings (Qwen3-Embedding) of texts, as JSON
  info MODEL                model configuration, format, kernels and CPU features
  export HF_DIR OUT         convert a Hugging Face Qwen3 folder to model.bin or GGUF
  serve [MODEL]             OpenAI-compatible HTTP server (chat and text completions)

Run \`qwen3 <command> --help\` for a command's options.`,
  chat: `Usage: qwen3 chat [MODEL] [options]

Chats with MODEL (default: the demo model, models/demo/model.bin, downloaded once into
the cache folder when qwen3 runs from JSR). Each stdin line is a user turn; an empty
line or end of input ends the chat. The conversation stays in the KV cache across turns.
Prefill and decode speed go to stderr after each answer.

Options:
  -i, --input TEXT          first user turn (then stdin)
  -y, --system TEXT         system prompt
  -r, --reasoning 0|1       let the model think before answering (default 0)
${MODEL_FLAGS}
${SAMPLING_FLAGS}
  -h, --help                this help`,
  generate: `Usage: qwen3 generate MODEL -i PROMPT [options]

Prints PROMPT and its continuation (until a stop token, --max-tokens or a full context).

Options:
  -i, --input TEXT          the prompt (required)
  --special                 read control-token text such as <|im_start|> in the prompt
${MODEL_FLAGS}
${SAMPLING_FLAGS}
  -h, --help                this help`,
  inference: `Usage: qwen3 inference MODEL [options]

The peers' entry point: qwen3-rs long flags and qwen3.c short flags.

Options:
  -m, --mode chat|generate  default chat
  -i, --input TEXT          the prompt (generate) or first user turn (chat)
  -y, --system TEXT         system prompt (chat)
  -r, --reasoning 0|1       thinking template (chat, default 0)
${MODEL_FLAGS}
${SAMPLING_FLAGS}
  -h, --help                this help`,
  embed: `Usage: qwen3 embed MODEL -i TEXT [-i TEXT ...] [options]

Prints the embeddings of the texts as JSON: {"model", "dimensions", "instruction",
"data": [{"index", "text", "tokens", "embedding": [...]}, ...]}, one entry per line. Each
text (with --instruction: "Instruct: {instruction}\nQuery:{text}", the Qwen3-Embedding
query format) is followed by <|endoftext|>; the embedding is the last token's final hidden
state, L2-normalised. MODEL should be a Qwen3-Embedding model (qwen3 export reads them).

Options:
  -i, --input TEXT          a text to embed (required; repeat for more)
  --dimensions N            keep the first N values, then renormalise (default: all)
  --instruction TEXT        task description for queries (documents go without)
${MODEL_FLAGS}
  -h, --help                this help`,
  tokenize: `Usage: qwen3 tokenize MODEL|tokenizer.json -i TEXT [--special]

Prints the token ids of TEXT, separated by spaces. MODEL uses the tokenizer beside the
model file (tokenizer.json or MODEL.tokenizer).

Options:
  -i, --input TEXT          the text (required)
  --special                 read control-token text such as <|im_end|> as control tokens
  -h, --help                this help`,
  serve: `Usage: qwen3 serve [MODEL] [options]

Serves MODEL (default: the demo model) over HTTP with OpenAI's API, as llama-server does:
POST /v1/chat/completions and /v1/completions (JSON or streamed server-sent events), POST
/v1/embeddings (with a Qwen3-Embedding model), GET /v1/models, GET /health, POST /tokenize,
/detokenize and /apply-template, and a chat page at /. Sampling is per request.
Conversations are rendered with the model's own Jinja chat template (a GGUF's, or
chat_template.jinja / tokenizer_config.json beside the model), else Qwen3's. The server
listens at once; until the model is loaded, GET /health answers 503 {"status": "loading"}.
Ctrl-C stops it.

Options:
  --host ADDR               address to listen on (default 127.0.0.1; 0.0.0.0 exposes it
                            to the network)
  --port N                  port (default 8080; 0 picks a free one)
  --parallel N              requests generating at once (default 1)
  --queue N                 requests waiting for a slot before 503 (default 16)
  --max-body BYTES          largest request body (default 1048576)
  --max-messages N          most messages in one chat request (default 1024)
  --timeout SECONDS         per-request deadline from arrival (default 600): a reply
                            still generating then ends with finish_reason "length"; one
                            still waiting for a slot gets 503
  --chat-template-file FILE render chats with this Jinja template instead of the model's
  --api-key KEY             require \`Authorization: Bearer KEY\` (all routes but /health)
  --metrics                 serve GET /metrics (Prometheus text format)
  --cors ORIGIN             allow browsers from ORIGIN (Access-Control-Allow-Origin)
  --no-prompt-cache         prefill every prompt whole (default: reuse a slot's KV cache)
  --no-speculate            no speculative decoding (default: on with the C engine)
${MODEL_FLAGS}
  -h, --help                this help`,
  info: `Usage: qwen3 info MODEL [options]

Prints the model's configuration, file format and size, tokenizer exactness, the C
engine's kernel tier and the CPU features it found.

Options:
  --engine c|ts             engine to load with (default c)
  -h, --help                this help`,
  export: `Usage: qwen3 export HF_DIR OUT [options]

Converts a Hugging Face Qwen3 folder (config.json, model.safetensors or shards with
model.safetensors.index.json in BF16/F16/F32, tokenizer.json, tokenizer_config.json) into
OUT. The weights stream one block at a time, so memory stays far below the model's size.

--format bin (default) writes qwen3.c's model.bin (int8 groups) with OUT.tokenizer and the
four OUT.template* files rendered from the model's own chat template, and copies the model's
tokenizer.json as OUT.tokenizer.json (the loaders read it for exact tokenization), so
models can share a folder. --format gguf writes one llama.cpp GGUF file with the tokenizer
and chat template inside.

An output that exists is refused unless --force; one that is an input of the export, a
symbolic link, folder, device or FIFO is refused even then. Files are written as
NAME.partial-<pid> and renamed in together at the end: on an error, Ctrl-C, SIGTERM or
SIGHUP the partials are removed and every output name holds what it held before.

Options:
  --format bin|gguf         output format (default bin)
  --group-size N            bin: values per int8 scale (default ${DEFAULT_GROUP_SIZE}; halved until it
                            divides every row width)
  --type TYPE               gguf weight type (norms are always F32): q8_0 (default), f16,
                            bf16, f32, or one of llama.cpp's quantised mixtures
                            ${GGUF_MIXTURE_TYPES.join(", ")}: tensor for tensor
                            and byte for byte what llama-quantize writes from the same
                            weights (both engines run them). Q4_K quantises at about
                            1 M values/s per thread in TypeScript
  --threads N               threads that quantise those mixtures (default: all CPUs; the
                            bytes do not depend on it)
  --force                   replace existing output files (regular files only)
  -h, --help                this help`,
};

/** Flags each command accepts (others are rejected, so typos do not pass silently). */
const ACCEPTS: Record<string, readonly OptionName[]> = {
  chat: [
    "input",
    "system",
    "reasoning",
    "engine",
    "context",
    "kv-type",
    "threads",
    "temperature",
    "topp",
    "top-k",
    "min-p",
    "presence-penalty",
    "frequency-penalty",
    "seed",
    "max-tokens",
    "no-speculate",
    "help",
  ],
  generate: [
    "input",
    "special",
    "engine",
    "context",
    "kv-type",
    "threads",
    "temperature",
    "topp",
    "top-k",
    "min-p",
    "presence-penalty",
    "frequency-penalty",
    "seed",
    "max-tokens",
    "no-speculate",
    "help",
  ],
  inference: [
    "mode",
    "input",
    "system",
    "reasoning",
    "special",
    "engine",
    "context",
    "kv-type",
    "threads",
    "temperature",
    "topp",
    "top-k",
    "min-p",
    "presence-penalty",
    "frequency-penalty",
    "seed",
    "max-tokens",
    "no-speculate",
    "help",
  ],
  serve: [
    "host",
    "port",
    "parallel",
    "queue",
    "max-body",
    "max-messages",
    "timeout",
    "chat-template-file",
    "api-key",
    "metrics",
    "cors",
    "no-prompt-cache",
    "no-speculate",
    "engine",
    "context",
    "kv-type",
    "threads",
    "help",
  ],
  tokenize: ["input", "special", "help"],
  embed: ["input", "dimensions", "instruction", "engine", "context", "kv-type", "threads", "help"],
  info: ["engine", "help"],
  export: ["group-size", "format", "type", "threads", "force", "help"],
};

function flagName(name: OptionName): string {
  const short = (OPTIONS[name] as { short?: string }).short;
  return short ? `-${short}/--${name}` : `--${name}`;
}

function number(
  v: Values,
  name: OptionName,
  opts: { min?: number; max?: number; integer?: boolean },
): number | undefined {
  const raw = v[name];
  if (raw === undefined) return undefined;
  const s = String(raw).trim();
  const n = s === "" ? NaN : Number(s);
  const bad = !Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) ||
    (opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max);
  if (bad) {
    const what = opts.integer ? "an integer" : "a number";
    const range = opts.min !== undefined && opts.max !== undefined
      ? `${what} in ${opts.min}..${opts.max}`
      : opts.min !== undefined
      ? `${what} >= ${opts.min}`
      : opts.max !== undefined
      ? `${what} <= ${opts.max}`
      : what;
    throw new UsageError(`${flagName(name)} must be ${range}, got "${raw}"`);
  }
  return n;
}

function seedOf(v: Values): bigint | undefined {
  const raw = v.seed;
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw.trim()) || BigInt(raw.trim()) >= 1n << 64n) {
    throw new UsageError(`-s/--seed must be an integer in 0..2^64-1, got "${raw}"`);
  }
  return BigInt(raw.trim());
}

function flag01(v: Values, name: OptionName): boolean {
  const raw = v[name];
  if (raw === undefined) return false;
  const s = String(raw).trim().toLowerCase();
  if (s === "1" || s === "true" || s === "on") return true;
  if (s === "0" || s === "false" || s === "off") return false;
  throw new UsageError(`${flagName(name)} must be 0 or 1, got "${raw}"`);
}

function samplerOptions(v: Values) {
  const opts: SamplerOptions & { maxTokens?: number; speculate?: boolean } = {
    temperature: number(v, "temperature", { min: 0 }) ?? 1,
    topP: number(v, "topp", { min: 0 }) ?? 0.9,
    topK: number(v, "top-k", { min: 0, integer: true }) ?? 0,
    minP: number(v, "min-p", { min: 0, max: 1 }) ?? 0,
    presencePenalty: number(v, "presence-penalty", {}) ?? 0,
    frequencyPenalty: number(v, "frequency-penalty", {}) ?? 0,
    seed: seedOf(v) ?? 0,
  };
  const max = number(v, "max-tokens", { min: 0, integer: true });
  if (max !== undefined) opts.maxTokens = max;
  if (v["no-speculate"]) opts.speculate = false;
  return opts;
}

/** The model flags (`--engine`, `--context`, `--kv-type`, `--threads`), checked. */
function checkModelFlags(v: Values) {
  const engine = v.engine ?? "c";
  if (engine !== "c" && engine !== "ts") {
    throw new UsageError(`--engine must be c or ts, got "${engine}"`);
  }
  const context = number(v, "context", { min: 0, integer: true, max: 0xffffffff });
  const threads = number(v, "threads", { min: 0, integer: true, max: 1024 });
  // absent: undefined, so the module's default (checkKvType) is the one default
  const kvType = v["kv-type"];
  if (kvType !== undefined && kvType !== "f32" && kvType !== "f16" && kvType !== "q8") {
    throw new UsageError(`--kv-type must be f32, f16 or q8, got "${kvType}"`);
  }
  return {
    engine: engine as "c" | "ts",
    context,
    threads,
    kvType: kvType as KvCacheType | undefined,
  };
}

async function loadModel(path: string, v: Values): Promise<Qwen3> {
  const { engine, context, threads, kvType } = checkModelFlags(v);
  await requireFile(path);
  return await Qwen3.load(path, {
    engine,
    contextLength: context || undefined,
    threads,
    kvType,
  });
}

async function requireFile(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch {
    throw new Qwen3Error("io", `${path}: no such file`);
  }
  if (!info.isFile) throw new Qwen3Error("io", `${path}: not a file`);
}

const encoder = new TextEncoder();

async function write(stream: { write(p: Uint8Array): Promise<number> }, text: string) {
  const bytes = encoder.encode(text);
  let off = 0;
  while (off < bytes.length) off += await stream.write(bytes.subarray(off));
}

const out = (text: string) => write(Deno.stdout, text);
const err = (text: string) => write(Deno.stderr, text);

function isTerminal(file: { isTerminal(): boolean }): boolean {
  try {
    return file.isTerminal();
  } catch {
    return false;
  }
}

/** Prints pieces, marking the model's reasoning with <think> tags (dimmed on a terminal). */
class PieceWriter {
  #kind: PieceKind = "answer";
  #color = isTerminal(Deno.stdout);

  async write(piece: Piece): Promise<void> {
    if (piece.kind !== this.#kind) await this.#switch(piece.kind);
    await out(piece.text);
  }

  async #switch(kind: PieceKind): Promise<void> {
    this.#kind = kind;
    if (kind === "thinking") await out(this.#color ? "\x1b[2m<think>" : "<think>");
    else await out(this.#color ? "</think>\x1b[0m" : "</think>");
  }

  async end(): Promise<void> {
    if (this.#kind === "thinking") await this.#switch("answer");
  }
}

function statsLine(s: GenerationStats): string {
  const line = `prefill ${s.promptTokens} tok ${s.prefillTokensPerSecond.toFixed(1)} tok/s | ` +
    `decode ${s.generatedTokens} tok ${s.decodeTokensPerSecond.toFixed(1)} tok/s` +
    (s.draftedTokens > 0
      ? ` | drafts ${s.acceptedTokens}/${s.draftedTokens} accepted (${
        (100 * s.acceptanceRate).toFixed(0)
      }%)`
      : "");
  const why = s.stopReason === "context_full"
    ? " (context full: raise -c/--context or start a new chat)"
    : s.stopReason === "max_tokens"
    ? " (stopped at --max-tokens)"
    : s.stopReason === "aborted"
    ? " (interrupted)"
    : "";
  return line + why + "\n";
}

/** Ctrl-C stops the current answer (keeping it) instead of ending the program. */
function interruptible<T>(run: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ctl = new AbortController();
  const onSignal = () => ctl.abort();
  let listening = false;
  try {
    Deno.addSignalListener("SIGINT", onSignal);
    listening = true;
  } catch { /* no signal support here: Ctrl-C ends the program as usual */ }
  return run(ctl.signal).finally(() => {
    if (listening) Deno.removeSignalListener("SIGINT", onSignal);
  });
}

async function cmdGenerate(model: Qwen3, v: Values): Promise<void> {
  const prompt = v.input;
  if (prompt === undefined || prompt === "") {
    throw new UsageError("generate needs a prompt: -i/--input TEXT");
  }
  const opts = samplerOptions(v);
  await out(prompt);
  const stats = await interruptible(async (signal) => {
    const writer = new PieceWriter();
    const run = model.generate(prompt, { ...opts, signal, special: v.special ?? false });
    for await (const piece of run) await writer.write(piece);
    await writer.end();
    return run.stats!;
  });
  await out("\n");
  await err(statsLine(stats));
}

async function cmdChat(model: Qwen3, v: Values): Promise<void> {
  const opts = samplerOptions(v);
  using chat = model.chat({ system: v.system, thinking: flag01(v, "reasoning") });
  const tty = isTerminal(Deno.stdin);
  const answer = async (text: string) => {
    const stats = await interruptible(async (signal) => {
      const writer = new PieceWriter();
      const run = chat.send(text, { ...opts, signal });
      for await (const piece of run) await writer.write(piece);
      await writer.end();
      return run.stats!;
    });
    await out("\n");
    await err(statsLine(stats));
    return stats;
  };
  if (v.input !== undefined && v.input !== "") {
    if ((await answer(v.input)).stopReason === "context_full") return;
  }
  if (tty) await out("> ");
  for await (const line of stdinLines(Deno.stdin.readable, MAX_CHAT_LINE_BYTES)) {
    if (line === undefined) {
      // Longer than any context holds: refused unread, as a turn that does not fit would be.
      await err(
        `a chat turn of more than ${MAX_CHAT_LINE_BYTES} bytes cannot fit in the context ` +
          "(context full: raise -c/--context or start a new chat)\n",
      );
      break;
    }
    if (line === "") break;
    if ((await answer(line)).stopReason === "context_full") break;
    if (tty) await out("> ");
  }
}

/**
 * Longest chat line read from stdin, in bytes. Qwen3's 40960 positions hold about 160 KB of
 * text; a longer line is skipped to its end without being kept.
 */
const MAX_CHAT_LINE_BYTES = 4 << 20;

/**
 * The lines of a byte stream (ending at "\n", "\r\n" or "\r", as node:readline splits
 * them), decoded as UTF-8. A line longer than `maxBytes` is not kept: it is read to its end
 * and given as `undefined`, so memory stays at `maxBytes` whatever the input.
 */
async function* stdinLines(
  stream: ReadableStream<Uint8Array>,
  maxBytes: number,
): AsyncGenerator<string | undefined> {
  const decoder = new TextDecoder();
  let parts: Uint8Array[] = [];
  let size = 0;
  let tooLong = false;
  let afterCr = false;
  const take = (): string | undefined => {
    const line = tooLong ? undefined : decoder.decode(concat(parts, size));
    parts = [];
    size = 0;
    tooLong = false;
    return line;
  };
  for await (const chunk of stream) {
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (b !== 0x0a && b !== 0x0d) continue;
      if (b === 0x0a && afterCr && i === start) {
        // the "\n" of a "\r\n" split across chunks, or right after the "\r"
        afterCr = false;
        start = i + 1;
        continue;
      }
      add(chunk.subarray(start, i));
      yield take();
      afterCr = b === 0x0d;
      start = i + 1;
      if (afterCr && chunk[i + 1] === 0x0a) {
        afterCr = false;
        i++;
        start = i + 1;
      }
    }
    if (start < chunk.length) {
      afterCr = false;
      add(chunk.subarray(start));
    }
  }
  if (size > 0 || tooLong) yield take();

  function add(bytes: Uint8Array): void {
    if (tooLong || bytes.length === 0) return;
    if (size + bytes.length > maxBytes) {
      tooLong = true;
      parts = [];
      size = 0;
      return;
    }
    parts.push(bytes.slice());
    size += bytes.length;
  }
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function cmdTokenize(path: string, v: Values): Promise<void> {
  const text = v.input;
  if (text === undefined) throw new UsageError("tokenize needs the text: -i/--input TEXT");
  await requireFile(path);
  const tokenizer = path.toLowerCase().endsWith(".json")
    ? Tokenizer.fromJson(
      await readSideText(path, { limit: TOKENIZER_JSON_LIMIT, what: "tokenizer" }),
      path,
    )
    : await Tokenizer.load(path);
  await out(tokenizer.encode(text, { special: v.special ?? false }).join(" ") + "\n");
}

async function cmdEmbed(path: string, v: Values): Promise<void> {
  // parse() made input a list for this command
  const texts = (v.input as unknown as string[] | undefined) ?? [];
  if (texts.length === 0) throw new UsageError("embed needs at least one text: -i/--input TEXT");
  const dimensions = number(v, "dimensions", { min: 1, integer: true });
  using model = await loadModel(path, v);
  if (dimensions !== undefined && dimensions > model.config.dim) {
    throw new UsageError(
      `--dimensions must be at most the model's dim ${model.config.dim}, got "${v.dimensions}"`,
    );
  }
  const instruction = v.instruction || undefined;
  const vectors = await interruptible((signal) =>
    model.embed(texts, { dimensions, instruction, signal })
  );
  const entries = vectors.map((e, index) =>
    JSON.stringify({
      index,
      text: texts[index],
      tokens: model.embeddingTokens(texts[index], instruction).length,
      embedding: Array.from(e),
    })
  );
  const head = JSON.stringify({
    model: basename(path),
    dimensions: dimensions ?? model.config.dim,
    instruction: instruction ?? null,
  }).slice(0, -1);
  await out(`${head},"data":[\n${entries.join(",\n")}\n]}\n`);
}

function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  let x = n;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${i === 0 ? x : x.toFixed(1)} ${units[i]} (${n} bytes)`;
}

/** KV cache bytes per position and at seq_len: f16, the default (docs/numerics.md#fp16-kv-cache),
 * f32 and q8 (docs/numerics.md#int8-kv-cache: int8 values plus one fp32 scale per group of 32,
 * or of head_dim when 32 does not divide it). */
function kvCacheSizes(c: Qwen3["config"]): string {
  const kvDim = c.nKvHeads * c.headDim;
  const group = c.headDim % 32 === 0 ? 32 : c.headDim;
  const f16 = 2 * c.nLayers * kvDim * 2;
  const q8 = 2 * c.nLayers * (kvDim + (kvDim / group) * 4);
  const mib = (n: number) => (n * c.seqLen / 1048576).toFixed(1);
  return `f16 (default) ${f16} bytes per position (${mib(f16)} MiB at seq_len), f32 ${2 * f16} (${
    mib(2 * f16)
  } MiB; --kv-type f32), q8 ${q8} (${mib(q8)} MiB; --kv-type q8)`;
}

async function cmdInfo(model: Qwen3): Promise<void> {
  const c = model.config;
  const size = (await Deno.stat(model.path)).size;
  let kernel: string;
  let cpu: string;
  try {
    kernel = await kernelName();
    cpu = (await cpuFeatures()).join(" ") || "(none beyond the baseline)";
  } catch (e) {
    kernel = cpu = `unavailable: ${e instanceof Error ? e.message.split(". ")[0] : e}`;
  }
  const rows: [string, string | number | boolean][] = [
    ["file", model.path],
    ["size", formatBytes(size)],
    ["format", c.format],
    ["engine", `${model.engine.kind} (${model.engine.threads} threads)`],
    ["dim", c.dim],
    ["hidden_dim", c.hiddenDim],
    ["n_layers", c.nLayers],
    ["n_heads", c.nHeads],
    ["n_kv_heads", c.nKvHeads],
    ["head_dim", c.headDim],
    ["vocab_size", c.vocabSize],
    ["seq_len", c.seqLen],
    ["group_size", c.groupSize],
    ["shared_classifier", c.sharedClassifier],
    ["rope_theta", c.ropeTheta],
    ["rms_eps", c.rmsEps],
    ...(c.moe
      ? [
        [
          "experts",
          `${c.moe.nExperts}, ${c.moe.nExpertsUsed} per token, width ${c.moe.expertHiddenDim}` +
          (c.moe.normTopkProb ? "" : ", weights not renormalised"),
        ],
        ["sparse_blocks", c.moe.sparse.map((s, l) => s ? l : -1).filter((l) => l >= 0).join(" ")],
      ] as [string, string][]
      : []),
    [
      "tokenizer",
      `${model.tokenizer.size} tokens, ${
        model.tokenizer.exact
          ? `exact (merge list from ${
            c.format === "gguf" ? "the GGUF metadata" : "tokenizer.json"
          })`
          : "merge ranks from .tokenizer scores (equal to Hugging Face on every case tested)"
      }`,
    ],
    ["kv_cache", kvCacheSizes(c)],
    ["kernel", kernel],
    ["cpu_features", cpu],
  ];
  const lib = libraryPath();
  if (lib) rows.push(["library", lib]);
  await out(rows.map(([k, val]) => `${k.padEnd(18)} ${val}`).join("\n") + "\n");
}

/** Progress on stderr: a bar with bytes and ETA on a terminal, else a line every 25%. */
function exportProgress(label: string): (done: number, total: number) => void {
  const start = performance.now();
  const tty = isTerminal(Deno.stderr);
  const mib = (n: number) => (n / 1048576).toFixed(1);
  let nextQuarter = 25;
  return (done, total) => {
    const fraction = total > 0 ? done / total : 1;
    const percent = Math.floor(fraction * 100);
    if (tty) {
      const width = 30;
      const filled = Math.round(fraction * width);
      const elapsed = (performance.now() - start) / 1000;
      // The first blocks say little about the rate: no estimate until 1% or a second in.
      const eta = fraction >= 1 ? 0 : elapsed * (1 / fraction - 1);
      const sure = fraction >= 1 || (fraction >= 0.01 && elapsed >= 1);
      const secs = Math.round(eta);
      const clock = !sure
        ? "--:--"
        : `${Math.floor(secs / 60)}:${String(secs % 60).padStart(2, "0")}`;
      const line = `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ` +
        `${String(percent).padStart(3)}% ${mib(done)} / ${mib(total)} MiB  ETA ${clock}`;
      Deno.stderr.writeSync(encoder.encode(`\r${line}\x1b[K${done >= total ? "\n" : ""}`));
      return;
    }
    while (percent >= nextQuarter) {
      Deno.stderr.writeSync(
        encoder.encode(`${label}: ${nextQuarter}% (${mib(done)} / ${mib(total)} MiB)\n`),
      );
      nextQuarter += 25;
    }
  };
}

/** Signals that stop an export cleanly, with their numbers for the exit status. */
const SIGNAL_NUMBERS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
const EXPORT_SIGNALS = Object.keys(SIGNAL_NUMBERS) as (keyof typeof SIGNAL_NUMBERS)[];

/** Runs `qwen3 export`; returns the exit status (0, or 128 + the signal that stopped it). */
async function cmdExport(hfDir: string, outPath: string | undefined, v: Values): Promise<number> {
  if (outPath === undefined) {
    throw new UsageError("export needs HF_DIR and OUT (see `qwen3 export --help`)");
  }
  const format = (v.format ?? "bin") as ExportFormat;
  if (format !== "bin" && format !== "gguf") {
    throw new UsageError(`--format must be bin or gguf, got "${v.format}"`);
  }
  const groupSize = number(v, "group-size", { min: 1, integer: true, max: 1 << 18 });
  if (v.type !== undefined && !GGUF_WEIGHT_TYPES.includes(v.type as GgufWeightType)) {
    throw new UsageError(`--type must be one of ${GGUF_WEIGHT_TYPES.join(", ")}, got "${v.type}"`);
  }
  if (format === "gguf" && groupSize !== undefined) {
    throw new UsageError("--group-size applies to --format bin (GGUF Q8_0 blocks are 32 values)");
  }
  if (format === "bin" && v.type !== undefined) {
    throw new UsageError("--type applies to --format gguf (model.bin is always int8 groups)");
  }
  const type = v.type as GgufWeightType | undefined;
  const threads = number(v, "threads", { min: 1, integer: true, max: 1024 });
  const started = performance.now();
  // A signal aborts the export, which removes its partial files and puts back anything it
  // replaced; then the process exits as the signal would have ended it (128 + its number).
  const ctl = new AbortController();
  let caught: (typeof EXPORT_SIGNALS)[number] | undefined;
  const listeners: [Deno.Signal, () => void][] = [];
  for (const sig of EXPORT_SIGNALS) {
    const onSignal = () => {
      caught ??= sig;
      ctl.abort();
    };
    try {
      Deno.addSignalListener(sig, onSignal);
      listeners.push([sig, onSignal]);
    } catch { /* not a signal this platform delivers */ }
  }
  let result;
  try {
    result = await exportHfModel(hfDir, outPath, {
      format,
      groupSize,
      type,
      threads,
      force: v.force ?? false,
      signal: ctl.signal,
      onProgress: exportProgress("export"),
      onNote: (m) => Deno.stderr.writeSync(encoder.encode(`note: ${oneLine(m)}\n`)),
    });
  } catch (e) {
    if (caught === undefined) throw e;
    await err(`error: export interrupted by ${caught}; no output file was changed\n`);
    return 128 + SIGNAL_NUMBERS[caught];
  } finally {
    for (const [sig, onSignal] of listeners) Deno.removeSignalListener(sig, onSignal);
  }
  const c = result.config;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const what = result.format === "gguf"
    ? `GGUF ${result.type}`
    : `model.bin, int8 groups of ${c.groupSize}`;
  await err(
    `wrote ${result.path} (${what}, ${formatBytes(result.bytes)}) in ${seconds} s: ` +
      `${c.nLayers} layers, dim ${c.dim}, ${c.sharedClassifier ? "tied" : "untied"} classifier; ` +
      `chat template from ${result.templateSource}\n`,
  );
  for (const f of result.files.slice(1)) await err(`wrote ${f}\n`);
  return 0;
}

/**
 * `qwen3 serve`: checks the flags, loads the model, serves until Ctrl-C or SIGTERM.
 * Returns the exit status.
 */
async function cmdServe(path: string | undefined, v: Values): Promise<number> {
  const hostname = v.host ?? "127.0.0.1";
  const port = number(v, "port", { min: 0, max: 65535, integer: true }) ?? 8080;
  const parallel = number(v, "parallel", { min: 1, max: 1024, integer: true });
  const queue = number(v, "queue", { min: 0, max: 1_000_000, integer: true });
  const maxBody = number(v, "max-body", { min: 1, max: 2 ** 31, integer: true });
  const maxMessages = number(v, "max-messages", { min: 1, max: 1_000_000, integer: true });
  const timeout = number(v, "timeout", { min: 0.001, max: 1_000_000 });
  if (v["api-key"] !== undefined && v["api-key"].trim() === "") {
    throw new UsageError("--api-key must not be empty");
  }
  if (v.cors !== undefined && v.cors.trim() === "") {
    throw new UsageError("--cors must be an origin such as http://localhost:5173, or *");
  }
  const modelPath = path ?? await findDemoModel();
  // The flags and the file are checked first; the load runs while the server listens.
  checkModelFlags(v);
  await requireFile(modelPath);
  const loading = loadModel(modelPath, v);
  loading.catch(() => {}); // reported by server.finished
  if (hostname === "0.0.0.0" || hostname === "::") {
    await err(
      `warning: listening on ${hostname} exposes the model to every network this machine is on` +
        (v["api-key"] === undefined ? "; set --api-key" : "") + "\n",
    );
  }
  let server: Qwen3Server | undefined;
  const stop = () => void server?.shutdown();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  try {
    server = startServer(loading, {
      hostname,
      port,
      parallel,
      queue,
      maxBody,
      maxMessages,
      timeout,
      chatTemplateFile: v["chat-template-file"],
      apiKey: v["api-key"],
      metrics: v.metrics ?? false,
      cors: v.cors,
      promptCache: !v["no-prompt-cache"],
      speculate: v["no-speculate"] ? false : undefined,
      log: (line) => void err(`${oneLine(line)}\n`),
      onListen: (addr) =>
        void err(
          `serving ${modelPath} on http://${addr.hostname}:${addr.port} ` +
            `(${parallel ?? 1} slot(s); POST /v1/chat/completions); loading the model\n`,
        ),
    });
    server.ready.then(
      () => err(`model loaded (chat template: ${server!.chatTemplate}); ready\n`),
      () => {},
    );
    await server.finished;
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, stop);
    (await loading.catch(() => undefined))?.[Symbol.dispose]();
  }
  return 0;
}

/** The demo model (a checkout's own, or downloaded once from JSR), announced on stderr. */
async function findDemoModel(): Promise<string> {
  let path: string;
  try {
    path = await demoModelPath();
  } catch (e) {
    if (!(e instanceof Qwen3Error)) throw e;
    throw new UsageError(
      `no MODEL given and the demo model is unavailable (${e.message}); pass a model.bin ` +
        "(e.g. `qwen3 chat Qwen3-0.6B.bin`), or write a random-weight one with " +
        "`deno run -A bench/make_model.ts models/demo`",
    );
  }
  await err(
    `loading the demo model ${path}: a 4.2M-parameter Qwen3 trained on public-domain text ` +
      "(models/demo/README.md); pass a MODEL to chat with another\n",
  );
  return path;
}

/**
 * parseArgs reads a value such as "-3" as an option; glue negative numbers to the flag
 * before them (`-n -3` -> `-n-3`, `--x -1` -> `--x=-1`) so their range check can speak.
 */
function glueNegativeValues(args: string[]): string[] {
  const takesValue = new Set<string>();
  for (const [name, o] of Object.entries(OPTIONS)) {
    if (o.type !== "string") continue;
    takesValue.add(`--${name}`);
    const short = (o as { short?: string }).short;
    if (short) takesValue.add(`-${short}`);
  }
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      out.push(...args.slice(i));
      break;
    }
    const next = args[i + 1];
    if (takesValue.has(a) && next !== undefined && /^-\.?\d/.test(next)) {
      out.push(a.startsWith("--") ? `${a}=${next}` : `${a}${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

function parse(command: string, args: string[]) {
  const accepted = ACCEPTS[command];
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  > = Object.fromEntries(accepted.map((k) => [k, OPTIONS[k]]));
  // embed takes -i once per text; elsewhere the last -i wins
  if (command === "embed") options.input = { ...OPTIONS.input, multiple: true };
  const { values, positionals } = parseArgs({
    args: glueNegativeValues(args),
    options: options as typeof OPTIONS,
    allowPositionals: true,
    strict: true,
  });
  return { values: values as Values, positionals };
}

function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, "; ").trim();
}

/**
 * Runs a `qwen3` command line, printing to stdout and stderr as the program does. It never
 * throws: errors are printed to stderr as one `error: ...` line.
 *
 * @param args The arguments without the program name, e.g. `["info", "model.bin"]`.
 * @returns The exit status: 0 on success, 1 on a failure while running, 2 on a
 * command-line mistake (and for no command at all, after the help).
 *
 * @example Tokenize text with the demo model's tokenizer
 * ```ts
 * import { demoModelPath } from "@q3/qwen3";
 * import { main } from "@q3/qwen3/cli";
 *
 * const status = await main(["tokenize", await demoModelPath(), "-i", "Hello world"]);
 * console.log(status); // 0, after "39 664 78 1170" on stdout
 * ```
 */
export async function main(args: string[]): Promise<number> {
  try {
    const [command, ...rest] = args;
    if (command === undefined || command === "--help" || command === "-h" || command === "help") {
      await out(HELP.main + "\n");
      return command === undefined ? 2 : 0;
    }
    if (!(command in ACCEPTS)) {
      throw new UsageError(`unknown command "${command}"; run \`qwen3 --help\` for the list`);
    }
    let parsed;
    try {
      parsed = parse(command, rest);
    } catch (e) {
      const msg = e instanceof Error ? e.message.split(/\.\s/)[0].replace(/\.$/, "") : String(e);
      throw new UsageError(`${msg} (see \`qwen3 ${command} --help\`)`);
    }
    const { values: v, positionals } = parsed;
    if (v.help) {
      await out(HELP[command] + "\n");
      return 0;
    }
    const maxPositionals = command === "export" ? 2 : 1;
    if (positionals.length > maxPositionals) {
      throw new UsageError(
        `unexpected argument "${
          positionals[1]
        }" (quote text with spaces; see \`qwen3 ${command} --help\`)`,
      );
    }
    const path = positionals[0];
    if (command === "chat") {
      samplerOptions(v); // reject bad flags before the (slow) load
      using model = await loadModel(path ?? await findDemoModel(), v);
      await cmdChat(model, v);
      return 0;
    }
    if (command === "serve") return await cmdServe(path, v);
    if (path === undefined) {
      if (command === "export") {
        throw new UsageError("export needs HF_DIR and OUT (see `qwen3 export --help`)");
      }
      throw new UsageError(`${command} needs a MODEL path (see \`qwen3 ${command} --help\`)`);
    }
    if (command === "tokenize") {
      await cmdTokenize(path, v);
      return 0;
    }
    if (command === "export") return await cmdExport(path, positionals[1], v);
    if (command === "embed") {
      await cmdEmbed(path, v);
      return 0;
    }
    if (command === "info") {
      using model = await loadModel(path, v);
      await cmdInfo(model);
      return 0;
    }
    let mode = command;
    if (command === "inference") {
      mode = v.mode ?? "chat";
      if (mode !== "chat" && mode !== "generate") {
        throw new UsageError(`-m/--mode must be chat or generate, got "${mode}"`);
      }
    }
    samplerOptions(v);
    flag01(v, "reasoning");
    if (mode === "generate" && (v.input === undefined || v.input === "")) {
      throw new UsageError("generate needs a prompt: -i/--input TEXT");
    }
    using model = await loadModel(path, v);
    if (mode === "generate") await cmdGenerate(model, v);
    else await cmdChat(model, v);
    return 0;
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    await err(`error: ${oneLine(msg)}\n`);
    return e instanceof UsageError ? 2 : 1;
  }
}

export { startServer } from "./src/server/server.ts";
export type { Qwen3Server, ServerOptions } from "./src/server/server.ts";
export type { Slot, SlotPool } from "./src/server/slots.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
