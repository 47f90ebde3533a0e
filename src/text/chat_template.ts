/**
 * Rendering a model's Jinja chat template (from a GGUF's `tokenizer.chat_template` or a Hugging
 * Face folder) into qwen3.c's four printf templates, within fixed bounds: a template comes
 * from a downloaded file, and `{% for i in range(100000000) %}x{% endfor %}` must not take
 * the process down. @huggingface/jinja parses and evaluates; {@link CHAT_TEMPLATE_LIMITS}
 * bounds the source, the evaluation steps, the size of every value and the text written.
 *
 * How the bounds hold with only the interpreter's public `evaluate` to hook: every node the
 * interpreter evaluates passes through it, so each costs a step and its result is measured
 * (a list or dict by the text it would print as, walked with each item costing a step);
 * `range` is ours and refuses to allocate past its limit; the few operations whose output can
 * be far larger than their inputs (`indent(width)`, `join(sep)`, `replace(old, new)`,
 * `tojson(indent=n)`) are checked from their evaluated arguments before they run: the last
 * argument's evaluation is the last hook before the operation.
 *
 * ```ts
 * import { renderChatTemplates } from "./chat_template.ts";
 * const t = renderChatTemplates(
 *   "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
 *     "<|im_start|>assistant\n",
 *   "chat_template.jinja",
 * );
 * console.log(JSON.stringify(t.plain)); // "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n"
 * ```
 * @module
 */

// Inline, not through deno.json's import map: the module must also load from a plain URL
// (a checkout served over HTTP, or run from another folder), where no import map applies.
// deno-lint-ignore no-import-prefix
import { Environment, Interpreter, Template } from "npm:@huggingface/jinja@0.5.11";
import { escapeForMessage, Qwen3Error } from "../errors.ts";
import { type ChatTemplates, validateTemplates } from "./template.ts";
import type { PromptPart } from "./tokenizer.ts";

/**
 * Bounds on rendering one chat template (its four renders together). Real templates stay
 * far inside them: Qwen3's template takes about 1,600 steps and writes about 1,100 characters
 * over the four renders.
 */
export const CHAT_TEMPLATE_LIMITS: Readonly<{
  /** Characters of template source. */
  sourceChars: number;
  /** Evaluation steps: one per node evaluated, per list or dict item walked and per 256
   * characters of each value produced, so time is bounded whatever the steps do. */
  steps: number;
  /** The longest value a step may produce: a string, or a list or dict as printed. */
  valueChars: number;
  /** Characters written by the template's statements, counted at each nesting level. */
  outputChars: number;
  /** Items one `range()` may make. */
  rangeItems: number;
}> = Object.freeze({
  sourceChars: 1 << 20,
  steps: 1_000_000,
  valueChars: 1 << 18,
  outputChars: 1 << 22,
  rangeItems: 1 << 16,
});

/** Characters of a value's text per evaluation step charged for producing it. */
const CHARS_PER_STEP = 256;

/** Placeholders rendered in place of the messages, then turned into `%s`. */
const SYSTEM_MARK = "\u{F0000}system\u{F0001}";
const USER_MARK = "\u{F0000}user\u{F0001}";

type Node = NonNullable<Parameters<Interpreter["evaluate"]>[0]>;
type Value = ReturnType<Interpreter["evaluate"]>;

/** The fields of AST nodes read here (the library's node classes are not exported). */
interface AnyNode {
  type: string;
  value?: unknown;
  operand?: Node;
  filter?: AnyNode;
  callee?: AnyNode;
  args?: AnyNode[];
  key?: { value: string };
  argument?: Node;
  object?: Node;
  call?: AnyNode;
  body?: Node[];
  alternate?: Node[];
  defaultBlock?: Node[];
}

/** The fields of runtime values read here. */
interface AnyValue {
  type: string;
  value: unknown;
  builtins: ReadonlyMap<string, unknown>;
}

const as = (v: Value | Node): AnyValue & AnyNode => v as unknown as AnyValue & AnyNode;

/** Statements whose values the interpreter writes out: the elements of every block. */
function outputStatements(program: Node): WeakSet<Node> {
  const out = new WeakSet<Node>();
  const visit = (block: Node[] | undefined) => {
    if (!Array.isArray(block)) return;
    for (const s of block) {
      out.add(s);
      const n = as(s);
      visit(n.body);
      visit(n.alternate);
      visit(n.defaultBlock);
    }
  };
  visit(as(program).body);
  return out;
}

/** One render's argument nodes: the expressions evaluated for a call's arguments. */
function argumentNodes(args: AnyNode[]): Node[] {
  return args.map((a) =>
    a.type === "KeywordArgumentExpression"
      ? a.value as Node
      : a.type === "SpreadExpression" || a.type === "KeywordSpreadExpression"
      ? a.argument!
      : a as unknown as Node
  );
}

/** Positional and keyword argument values, assembled from the evaluated argument nodes. */
function argumentValues(
  args: AnyNode[],
  values: Value[],
): { positional: AnyValue[]; keywords: Map<string, AnyValue> } {
  const positional: AnyValue[] = [];
  const keywords = new Map<string, AnyValue>();
  args.forEach((a, i) => {
    const v = as(values[i]);
    if (a.type === "KeywordArgumentExpression") keywords.set(a.key!.value, v);
    else if (a.type === "KeywordSpreadExpression" && v.value instanceof Map) {
      for (const [k, x] of v.value) keywords.set(k, x);
    } else if (a.type === "SpreadExpression" && Array.isArray(v.value)) positional.push(...v.value);
    else positional.push(v);
  });
  return { positional, keywords };
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Operations whose output can outgrow their inputs, checked before they run. */
const GROWING_FILTERS = new Set(["indent", "join", "replace", "tojson"]);

/** A node whose children's values are wanted before its own operation runs. */
interface Frame {
  watch: Node[];
  got: Value[];
  pending: number;
  /** Runs when every watched child has been evaluated, before the node's own operation. */
  ready?: (got: Value[]) => void;
}

/**
 * A chat template stopped at one of {@link CHAT_TEMPLATE_LIMITS}: a template that has to be
 * refused, unlike one that merely fails to render (which a caller may replace by the stock
 * Qwen3 templates).
 */
export class ChatTemplateLimitError extends Qwen3Error {
  /** @param message Names the file and the limit that was reached. */
  constructor(message: string) {
    super("format", message);
    this.name = "ChatTemplateLimitError";
  }
}

/** The budget of one renderChatTemplates call, shared by its four renders. */
class Budget {
  steps = 0;
  output = 0;
  /** The first limit hit: every later step fails with it too, whoever caught the first. */
  stopped: Qwen3Error | undefined;
  /**
   * Values that never change during the render: the context's lists and dicts (a template can
   * only assign into namespaces, and no list or dict method mutates). Their sizes are measured
   * once; `messages` looked up in every turn of a loop then costs a step per 64 items, not a
   * walk of the whole conversation.
   */
  readonly frozen: WeakSet<object> = new WeakSet();
  readonly #sizes = new WeakMap<object, { total: number; items: number }>();

  constructor(
    readonly file: string,
    readonly limits: typeof CHAT_TEMPLATE_LIMITS = CHAT_TEMPLATE_LIMITS,
  ) {}

  stop(reason: string): never {
    this.stopped ??= new ChatTemplateLimitError(
      `${this.file}: chat_template rendering stopped ${reason}`,
    );
    throw this.stopped;
  }

  step(n = 1): void {
    if (this.stopped) throw this.stopped;
    this.steps += n;
    if (this.steps > this.limits.steps) {
      this.stop(`after ${this.limits.steps} steps (the limit)`);
    }
  }

  /** Fails when an operation about to run would produce more than a value may hold. */
  fits(what: string, chars: number): void {
    if (chars > this.limits.valueChars) {
      this.stop(
        `before ${what}: it would make ${chars} characters, more than ` +
          `${this.limits.valueChars} (the limit)`,
      );
    }
  }

  /**
   * The characters `v` takes as text (a string, or a list or dict as printed, quotes and
   * separators included), with `perItem` more for each item at each depth (indentation),
   * walked up to just past the value limit. Each item walked and each 256 characters cost a
   * step, so measuring is bounded like everything else.
   */
  measure(v: Value, perItem?: (depth: number) => number): number {
    const cacheable = perItem === undefined && this.frozen.has(v);
    if (cacheable) {
      const known = this.#sizes.get(v);
      if (known) {
        this.step(1 + Math.ceil(known.items / 64));
        return known.total;
      }
    }
    perItem ??= () => 2;
    const limit = this.limits.valueChars;
    let total = 0;
    let items = 0;
    const stack: [AnyValue, number][] = [[as(v), 0]];
    while (stack.length > 0 && total <= limit) {
      const [x, depth] = stack.pop()!;
      items++;
      if (typeof x.value === "string") {
        total += x.value.length + 2;
      } else if (Array.isArray(x.value)) {
        total += 2;
        for (const y of x.value) {
          total += perItem(depth);
          stack.push([y, depth + 1]);
          if (total > limit) break;
        }
      } else if (x.value instanceof Map && x.type !== "FunctionValue") {
        total += 2;
        for (const [k, y] of x.value) {
          total += String(k).length + 4 + perItem(depth);
          stack.push([y, depth + 1]);
          if (total > limit) break;
        }
      } else {
        total += 8;
      }
    }
    this.step(items + Math.ceil(total / CHARS_PER_STEP));
    if (cacheable && total <= limit) this.#sizes.set(v, { total, items });
    return total;
  }
}

/** The interpreter, with every evaluation counted, measured and, where it grows, checked. */
class BoundedInterpreter extends Interpreter {
  readonly #budget: Budget;
  readonly #written: WeakSet<Node>;
  readonly #frames: Frame[] = [];
  /** A string's `replace` method, once looked up, to the string it replaces in. */
  readonly #replaceOf = new WeakMap<object, string>();

  constructor(env: Environment, budget: Budget, written: WeakSet<Node>) {
    super(env);
    this.#budget = budget;
    this.#written = written;
  }

  override evaluate(statement: Node | undefined, environment: Environment): Value {
    const budget = this.#budget;
    budget.step();
    if (!statement) return super.evaluate(statement, environment);
    const frame = this.#frameFor(statement);
    let v: Value;
    if (frame) this.#frames.push(frame);
    try {
      v = super.evaluate(statement, environment);
    } finally {
      if (frame) this.#frames.pop();
    }
    const size = budget.measure(v);
    if (size > budget.limits.valueChars) {
      budget.stop(
        `at a value of more than ${budget.limits.valueChars} characters (the limit)`,
      );
    }
    if (this.#written.has(statement) && v.type !== "NullValue" && v.type !== "UndefinedValue") {
      budget.output += size;
      if (budget.output > budget.limits.outputChars) {
        budget.stop(`after writing ${budget.limits.outputChars} characters (the limit)`);
      }
    }
    if (frame && statement.type === "MemberExpression") this.#noteReplace(frame, v);
    const parent = this.#frames.at(-1);
    if (parent) {
      const i = parent.watch.indexOf(statement);
      if (i >= 0 && parent.got[i] === undefined) {
        parent.got[i] = v;
        if (--parent.pending === 0) parent.ready?.(parent.got);
      }
    }
    return v;
  }

  /** What must be seen of `node`'s children before its operation runs, if anything. */
  #frameFor(node: Node): Frame | undefined {
    const n = as(node);
    const frame = (watch: Node[], ready?: (got: Value[]) => void): Frame => ({
      watch,
      got: new Array(watch.length),
      pending: watch.length,
      ready,
    });
    if (n.type === "MemberExpression") return frame([n.object!]);
    // A call statement (`{% call f() %}`) evaluates its call's arguments and callee as a
    // call expression does.
    const call = n.type === "CallExpression" ? n : n.type === "CallStatement" ? n.call : undefined;
    if (call) {
      const args = call.args!;
      return frame([...argumentNodes(args), call.callee as unknown as Node], (got) => {
        const target = this.#replaceOf.get(got[got.length - 1]);
        if (target === undefined) return;
        const { positional, keywords } = argumentValues(args, got.slice(0, -1));
        this.#checkReplace(target, positional, keywords);
      });
    }
    const f = n.filter;
    if (
      n.type !== "FilterExpression" || f?.type !== "CallExpression" ||
      f.callee?.type !== "Identifier" || !GROWING_FILTERS.has(f.callee.value as string)
    ) {
      return undefined;
    }
    const name = f.callee.value as string;
    const args = f.args!;
    return frame([n.operand!, ...argumentNodes(args)], (got) => {
      const operand = as(got[0]);
      const { positional, keywords } = argumentValues(args, got.slice(1));
      this.#checkFilter(name, operand, positional, keywords);
    });
  }

  /** Remembers which string a looked-up `replace` method belongs to. */
  #noteReplace(frame: Frame, v: Value): void {
    const object = frame.got[0] && as(frame.got[0]);
    if (v.type !== "FunctionValue" || typeof object?.value !== "string") return;
    if (object.builtins.get("replace") === v) this.#replaceOf.set(v, object.value);
  }

  #checkReplace(text: string, positional: AnyValue[], keywords: Map<string, AnyValue>): void {
    const [old, by] = positional;
    if (typeof old?.value !== "string" || typeof by?.value !== "string") return;
    const count = (positional[2] ?? keywords.get("count"))?.value;
    let hits = old.value.length === 0
      ? text.length + 1
      : Math.floor(text.length / old.value.length);
    if (typeof count === "number" && count >= 0) hits = Math.min(hits, count);
    const growth = Math.max(0, by.value.length - old.value.length);
    this.#budget.fits("replace()", text.length + hits * growth);
  }

  #checkFilter(
    name: string,
    operand: AnyValue,
    positional: AnyValue[],
    keywords: Map<string, AnyValue>,
  ): void {
    const budget = this.#budget;
    const arg = (i: number, key: string) => (positional[i] ?? keywords.get(key))?.value;
    const text = typeof operand.value === "string" ? operand.value : undefined;
    switch (name) {
      case "replace":
        if (text !== undefined) this.#checkReplace(text, positional, keywords);
        return;
      case "indent": {
        const width = arg(0, "width");
        if (text === undefined || typeof width !== "number") return;
        budget.fits(`indent(${width})`, width);
        let lines = 1;
        for (let i = text.indexOf("\n"); i >= 0; i = text.indexOf("\n", i + 1)) lines++;
        budget.fits(`indent(${width})`, text.length + lines * width);
        return;
      }
      case "join": {
        const sep = arg(0, "separator");
        if (typeof sep !== "string") return;
        const items = Array.isArray(operand.value) ? operand.value.length : text?.length ?? 0;
        budget.fits("join()", budget.measure(operand as unknown as Value) + items * sep.length);
        return;
      }
      case "tojson": {
        const indent = keywords.get("indent")?.value;
        const separators = keywords.get("separators")?.value;
        const sepChars = Array.isArray(separators)
          ? separators.reduce((n, s) => n + String((s as AnyValue).value).length, 0)
          : 4;
        const width = typeof indent === "number" && indent > 0 ? indent : 0;
        budget.fits(`tojson(indent=${width})`, width);
        const size = budget.measure(
          operand as unknown as Value,
          (depth) => sepChars + (width > 0 ? 1 + width * (depth + 1) : 0),
        );
        budget.fits(`tojson(indent=${width})`, size);
        return;
      }
    }
  }
}

/**
 * The globals a template sees, as @huggingface/jinja's Template provides them, with `range`
 * refusing to allocate past its limit.
 */
function globals(budget: Budget): Record<string, unknown> {
  return {
    false: false,
    true: true,
    none: null,
    False: false,
    True: true,
    None: null,
    raise_exception: (message: unknown) => {
      throw new Error(String(message));
    },
    range: (start: number, stop?: number, step = 1) => {
      if (stop === undefined) [start, stop] = [0, start];
      if (![start, stop, step].every(Number.isFinite)) {
        throw new Error("range() arguments must be finite numbers");
      }
      if (step === 0) throw new Error("range() step must not be zero");
      const items = Math.max(0, Math.ceil((stop - start) / step));
      if (items > budget.limits.rangeItems) {
        budget.stop(
          `at range(): ${items} items, more than ${budget.limits.rangeItems} (the limit)`,
        );
      }
      return Array.from({ length: items }, (_, i) => start + i * step);
    },
    strftime_now: (format: unknown) => strftime(new Date(), String(format)),
  };
}

const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];
const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/** Python's `strftime` for the directives chat templates use (C locale names). */
function strftime(d: Date, format: string): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return format.replace(/%[YmdebBaAHMSyjIp%]/g, (t) => {
    switch (t[1]) {
      case "Y":
        return String(d.getFullYear());
      case "y":
        return two(d.getFullYear() % 100);
      case "m":
        return two(d.getMonth() + 1);
      case "d":
        return two(d.getDate());
      case "e":
        return String(d.getDate()).padStart(2, " ");
      case "b":
        return MONTHS[d.getMonth()].slice(0, 3);
      case "B":
        return MONTHS[d.getMonth()];
      case "a":
        return DAYS[d.getDay()].slice(0, 3);
      case "A":
        return DAYS[d.getDay()];
      case "H":
        return two(d.getHours());
      case "I":
        return two(d.getHours() % 12 || 12);
      case "p":
        return d.getHours() < 12 ? "AM" : "PM";
      case "M":
        return two(d.getMinutes());
      case "S":
        return two(d.getSeconds());
      case "j": {
        const day = (Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()) -
          Date.UTC(d.getFullYear(), 0, 1)) / 86_400_000;
        return String(day + 1).padStart(3, "0");
      }
      default:
        return "%";
    }
  });
}

/** Parses a template's source within {@link CHAT_TEMPLATE_LIMITS}.sourceChars. */
function parseTemplate(source: string, file: string): Node {
  if (source.length > CHAT_TEMPLATE_LIMITS.sourceChars) {
    throw new ChatTemplateLimitError(
      `${file}: chat_template has ${source.length} characters, more than ` +
        `${CHAT_TEMPLATE_LIMITS.sourceChars} (the limit)`,
    );
  }
  try {
    return new Template(source).parsed;
  } catch (e) {
    throw new Qwen3Error(
      "format",
      `${file}: chat_template does not parse (${escapeForMessage(errorText(e))})`,
    );
  }
}

/**
 * Renders a Jinja chat template into qwen3.c's four printf templates: a user message (and a
 * system message first) with `add_generation_prompt` and `enable_thinking` true/false.
 * Message text is rendered as markers that become `%s` after every literal `%` is doubled,
 * so a template containing `%` still fills correctly.
 *
 * @param source The Jinja source.
 * @param file Where it came from, for messages (e.g. `model.gguf (tokenizer.chat_template)`).
 * @param tokens Special token strings the template may use (bos_token, eos_token, ...).
 * @returns The four templates, checked by validateTemplates.
 * @throws {Qwen3Error} "format", naming `file`, when the template fails to parse or render,
 * drops a message or reorders system and user, or goes past a {@link CHAT_TEMPLATE_LIMITS}
 * bound (`FILE: chat_template rendering stopped after 1000000 steps (the limit)`).
 *
 * @example Qwen3's turn format
 * ```ts
 * import { renderChatTemplates } from "./chat_template.ts";
 * const t = renderChatTemplates(
 *   "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
 *     "<|im_start|>assistant\n{% if enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}",
 *   "chat_template.jinja",
 * );
 * console.log(JSON.stringify(t.plain)); // "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
 * ```
 */
export function renderChatTemplates(
  source: string,
  file: string,
  tokens: Record<string, string> = {},
): ChatTemplates {
  const program = parseTemplate(source, file);
  const written = outputStatements(program);
  const budget = new Budget(file);
  const render = (system: boolean, thinking: boolean): string => {
    const messages = system
      ? [{ role: "system", content: SYSTEM_MARK }, { role: "user", content: USER_MARK }]
      : [{ role: "user", content: USER_MARK }];
    let text: string;
    try {
      const env = new Environment();
      const context = {
        ...globals(budget),
        ...tokens,
        messages,
        add_generation_prompt: true,
        enable_thinking: thinking,
      };
      for (const [key, value] of Object.entries(context)) env.set(key, value);
      text = String(new BoundedInterpreter(env, budget, written).run(program as never).value);
    } catch (e) {
      if (budget.stopped) throw budget.stopped;
      if (e instanceof Qwen3Error) throw e;
      throw new Qwen3Error(
        "format",
        `${file}: chat_template failed to render (${escapeForMessage(errorText(e))})`,
      );
    }
    const marks = [...text.matchAll(/\u{F0000}(system|user)\u{F0001}/gu)].map((m) => m[1]);
    const want = system ? ["system", "user"] : ["user"];
    if (marks.join(",") !== want.join(",")) {
      throw new Qwen3Error(
        "format",
        `${file}: the rendered chat_template holds the messages as [${marks.join(", ")}], ` +
          `expected [${want.join(", ")}] (each message once, system first)`,
      );
    }
    return text.replaceAll("%", "%%").replaceAll(SYSTEM_MARK, "%s").replaceAll(USER_MARK, "%s");
  };
  const out: ChatTemplates = {
    plain: render(false, false),
    thinking: render(false, true),
    system: render(true, false),
    systemThinking: render(true, true),
  };
  validateTemplates(out, file);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Whole conversations (the server): the template's own text traced apart from message text.

/** What the template's own text becomes in the traced render: every code unit one of these. */
const TRACE = "\uE000";
const TRACE_ALT = "\uE001";

/** `s` with each UTF-16 code unit replaced by a trace unit different from it. */
function traceText(s: string): string {
  return s.replace(/[\s\S]/g, (c) => c === TRACE ? TRACE_ALT : TRACE);
}

/**
 * Replaces, in place, the string literals whose text the template writes out with their
 * traced text ({@link traceText}): literals that are statements of a block (raw text and
 * `{{ 'x' }}`), with `sets` the value of a `set`, an operand of `+` or `~` or a branch of
 * `a if c else b` that is itself written. Literals that are compared, tested, called with or
 * filtered (`'</think>' in content`, `content.split('</think>')`) keep their text, so the
 * template's decisions do not change.
 */
function traceWrittenLiterals(program: Node, sets: boolean): void {
  const isNode = (v: unknown): v is AnyNode =>
    v !== null && typeof v === "object" && typeof (v as AnyNode).type === "string";
  const visit = (node: AnyNode, writes: boolean): void => {
    if (node.type === "StringLiteral") {
      if (writes && typeof node.value === "string") node.value = traceText(node.value);
      return;
    }
    const n = node as unknown as Record<string, unknown>;
    for (const key of Object.keys(n)) {
      if (key === "type" || key === "operator") continue;
      const child = n[key];
      const childWrites = writesAt(node, key, writes, sets);
      if (Array.isArray(child)) {
        for (const c of child) if (isNode(c)) visit(c, childWrites);
      } else if (child instanceof Map) {
        for (const [k, v] of child) {
          if (isNode(k)) visit(k, false);
          if (isNode(v)) visit(v, false);
        }
      } else if (isNode(child)) visit(child, childWrites);
    }
  };
  visit(as(program), true);
}

/** Whether a child (at `key` of `parent`) writes its value out, given whether `parent` does
 * (a `set`'s value only with `sets`). */
function writesAt(parent: AnyNode, key: string, writes: boolean, sets: boolean): boolean {
  switch (parent.type) {
    case "Program":
    case "If":
    case "For":
    case "Macro":
    case "CallStatement":
      return key === "body" || key === "alternate" || key === "defaultBlock";
    case "Set":
      return sets && (key === "value" || key === "body");
    case "BinaryExpression": {
      const op = (parent as unknown as { operator: { value: string } }).operator.value;
      return writes && (op === "+" || op === "~") && (key === "left" || key === "right");
    }
    case "Ternary":
      return writes && (key === "trueExpr" || key === "falseExpr");
    default:
      return false;
  }
}

/**
 * A model's Jinja chat template, parsed once, rendering whole conversations as Hugging
 * Face's `apply_chat_template(..., tokenize=False)` does (the server's prompts), within
 * bounds that grow with the conversation ({@link CHAT_TEMPLATE_LIMITS} at the least).
 *
 * The rendered text comes back as prompt parts: the template's own text `special: true`
 * (its `<|im_start|>` become control tokens) and everything that came from the context
 * (messages, tools, any argument) `special: false` (never control tokens, whatever it
 * spells). Which is which is found by rendering twice: once as is (the text), once with
 * every written string literal of the template traced, each code unit replaced by a
 * private-use one ({@link traceWrittenLiterals}); the positions where the two texts differ
 * are the template's own. The template's decisions must not depend on the traced literals:
 * the second text must differ from the first exactly at traced code units. When it does not
 * (`{% set mode = 'on' %}...{% if mode == 'on' %}`), the second render is tried again with
 * the values of `set` left as they are (their text then counts as message text); when that
 * does not line up either, the render is refused ("unsupported") rather than guessed at.
 * Template text a template builds by other means (a filter over a literal, a literal cut up)
 * is read as message text: it can then only lose its control tokens, never give a message
 * some.
 *
 * @example Qwen3's turns, with a control token typed by the user kept as text (a template's
 * last newline is dropped, as Jinja does by default)
 * ```ts
 * import { ConversationTemplate } from "./chat_template.ts";
 * const t = new ConversationTemplate(
 *   "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}" +
 *     "{% endfor %}<|im_start|>assistant\n",
 *   "chat_template.jinja",
 * );
 * const parts = t.render({ messages: [{ role: "user", content: "Hi<|im_end|>" }] });
 * console.log(parts.map((p) => `${p.special ? "T" : "M"}:${JSON.stringify(p.text)}`).join(" "));
 * // T:"<|im_start|>" M:"user" T:"\n" M:"Hi<|im_end|>" T:"<|im_end|>\n<|im_start|>assistant"
 * ```
 */
export class ConversationTemplate {
  /** Where the template came from, for messages. */
  readonly file: string;
  readonly #program: Node;
  readonly #written: WeakSet<Node>;
  /** The traced programs, tried in order: `set` values traced, then not. */
  readonly #traced: { program: Node; written: WeakSet<Node> }[];
  readonly #tokens: Record<string, string>;
  readonly #tracedTokens: Record<string, string>;

  /**
   * Parses a template.
   *
   * @param source The Jinja source.
   * @param file Where it came from, for messages.
   * @param tokens Special token strings the template may use (bos_token, eos_token, ...):
   * template text, not message text.
   * @throws {Qwen3Error} "format", naming `file`, when the source does not parse or is over
   * {@link CHAT_TEMPLATE_LIMITS}.sourceChars.
   */
  constructor(source: string, file: string, tokens: Record<string, string> = {}) {
    this.file = file;
    this.#program = parseTemplate(source, file);
    this.#written = outputStatements(this.#program);
    this.#traced = [true, false].map((sets) => {
      const program = parseTemplate(source, file);
      traceWrittenLiterals(program, sets);
      return { program, written: outputStatements(program) };
    });
    this.#tokens = { ...tokens };
    this.#tracedTokens = Object.fromEntries(
      Object.entries(tokens).map(([k, v]) => [k, traceText(v)]),
    );
  }

  /**
   * Renders a conversation.
   *
   * @param context The template's variables: `messages`, `tools`, `add_generation_prompt`,
   * `enable_thinking`, ... (plain JSON values). The token strings given to the constructor
   * and the globals of {@link renderChatTemplates} (`raise_exception`, `range`,
   * `strftime_now`) are added.
   * @returns The text as parts, in order: template text `special: true`, context text
   * `special: false`.
   * @throws {ChatTemplateLimitError} when a bound is reached (the bounds are
   * {@link CHAT_TEMPLATE_LIMITS}, the value and output bounds at least 4 and 8 times the
   * context's JSON size, the steps 1,000,000 plus one per 16 characters of it).
   * @throws {Qwen3Error} "invalid_argument", naming the file, when the template fails on
   * this context (its `raise_exception`, a missing field); "unsupported" when its own text
   * cannot be told apart from the context's (see the class).
   */
  render(context: Record<string, unknown>): PromptPart[] {
    const size = JSON.stringify(context)?.length ?? 0;
    const base = CHAT_TEMPLATE_LIMITS;
    const limits = Object.freeze({
      ...base,
      steps: base.steps + Math.ceil(size / 16),
      valueChars: Math.max(base.valueChars, 4 * size),
      outputChars: Math.max(base.outputChars, 8 * size),
    });
    const text = this.#run(this.#program, this.#written, this.#tokens, context, limits);
    for (const { program, written } of this.#traced) {
      const traced = this.#run(program, written, this.#tracedTokens, context, limits);
      const parts = splitTraced(text, traced);
      if (parts) return parts;
    }
    throw new Qwen3Error(
      "unsupported",
      `${this.file}: the chat template's decisions depend on its own text, so message text ` +
        "cannot be told apart from template text in what it renders",
    );
  }

  #run(
    program: Node,
    written: WeakSet<Node>,
    tokens: Record<string, string>,
    context: Record<string, unknown>,
    limits: typeof CHAT_TEMPLATE_LIMITS,
  ): string {
    const budget = new Budget(this.file, limits);
    try {
      const env = new Environment();
      for (const [key, value] of Object.entries({ ...globals(budget), ...tokens })) {
        env.set(key, value);
      }
      for (const [key, value] of Object.entries(context)) freeze(budget, env.set(key, value));
      return String(new BoundedInterpreter(env, budget, written).run(program as never).value);
    } catch (e) {
      if (budget.stopped) throw budget.stopped;
      if (e instanceof Qwen3Error) throw e;
      throw new Qwen3Error(
        "invalid_argument",
        `${this.file}: chat_template failed to render (${escapeForMessage(errorText(e))})`,
      );
    }
  }
}

/** Marks a context value and every list and dict inside it as never changing. */
function freeze(budget: Budget, value: unknown): void {
  const stack = [value];
  while (stack.length > 0) {
    const v = stack.pop() as AnyValue;
    if (v === null || typeof v !== "object" || budget.frozen.has(v)) continue;
    if (v.type === "ArrayValue" && Array.isArray(v.value)) stack.push(...v.value);
    else if (v.type === "ObjectValue" && v.value instanceof Map) stack.push(...v.value.values());
    else continue;
    budget.frozen.add(v);
  }
}

/** The parts of `text`: where `traced` differs from it, the template's own text; undefined
 * when the two do not line up (they differ other than at traced code units). */
function splitTraced(text: string, traced: string): PromptPart[] | undefined {
  if (traced.length !== text.length) return undefined;
  const parts: PromptPart[] = [];
  let start = 0;
  let special = false;
  for (let i = 0; i <= text.length; i++) {
    const own = i < text.length && traced[i] !== text[i];
    if (own && traced[i] !== (text[i] === TRACE ? TRACE_ALT : TRACE)) return undefined;
    if (i === text.length || own !== special) {
      if (i > start) parts.push({ text: text.slice(start, i), special });
      start = i;
      special = own;
    }
  }
  return parts;
}
