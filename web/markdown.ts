/**
 * The small part of Markdown that chat answers lean on, turned into HTML: fenced code blocks,
 * inline code, bold, italics, headings, bullet and numbered lists, paragraphs. Every character of
 * the model's text is escaped before any tag is added, so an answer can never inject markup.
 * An unclosed fence (the answer is still streaming) renders as an open code block.
 * @module
 */

/** Escapes the five characters that matter in HTML text and attributes. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function inline(escaped: string): string {
  // Code spans first, so that stars inside them stay stars.
  return escaped.split(/(`[^`\n]+`)/).map((part, i) =>
    i % 2 ? `<code>${part.slice(1, -1)}</code>` : part
      .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
      .replace(/(^|[^*\w])\*([^*\s][^*\n]*?)\*(?!\w)/g, "$1<em>$2</em>")
  ).join("");
}

/**
 * Renders `text` as HTML.
 *
 * @param text the model's answer, possibly cut mid-token
 * @returns safe HTML
 * @example
 * ```ts
 * import { renderMarkdown } from "./markdown.ts";
 * renderMarkdown("**hi** <b>"); // "<p><strong>hi</strong> &#60;b&#62;</p>"
 * ```
 */
export function renderMarkdown(text: string): string {
  const out: string[] = [];
  const lines = text.split("\n");
  let paragraph: string[] = [];
  let list: { tag: "ul" | "ol"; items: string[] } | null = null;
  const flush = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map(inline).join("<br>")}</p>`);
    paragraph = [];
    if (list) {
      out.push(`<${list.tag}>${list.items.map((x) => `<li>${x}</li>`).join("")}</${list.tag}>`);
    }
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = escapeHtml(lines[i]);
    const fence = /^\s*```\s*([\w+-]*)/.exec(line);
    if (fence) {
      flush();
      const code: string[] = [];
      while (++i < lines.length && !/^\s*```\s*$/.test(lines[i])) code.push(escapeHtml(lines[i]));
      const lang = fence[1] ? ` data-lang="${fence[1]}"` : "";
      out.push(`<pre${lang}><code>${code.join("\n")}</code></pre>`);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
    const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      const level = Math.min(heading[1].length + 2, 6); // h3..h6: an answer is not a page title
      out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
    } else if (bullet || numbered) {
      const tag = bullet ? "ul" : "ol";
      if (paragraph.length || (list && list.tag !== tag)) flush();
      list ??= { tag, items: [] };
      list.items.push(inline((bullet ?? numbered)![1]));
    } else if (line.trim() === "") {
      flush();
    } else if (list && /^\s+\S/.test(line)) {
      list.items[list.items.length - 1] += "<br>" + inline(line.trim());
    } else {
      if (list) flush();
      paragraph.push(line);
    }
  }
  flush();
  return out.join("");
}
