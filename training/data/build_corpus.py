"""Turn the unpacked Debian sources (training/work/raw) into training documents.

Writes training/work/corpus/docs.jsonl: one JSON object per document with
`source`, `kind` ("plain" or "chat") and `text`. Chat documents are already
rendered in Qwen3's chat format with thinking off, so the model learns the exact
token sequence the engines feed it. Everything is seeded: the same raw files
give the same corpus.

Usage: build_corpus.py [--raw DIR] [--out FILE]
"""

import argparse
import gzip
import json
import random
import re
import subprocess
from pathlib import Path

from rdata_text import lazyload_vectors

HERE = Path(__file__).resolve().parent.parent
SEED = 7


def chat(user: str, answer: str) -> str:
    """One user turn and its answer, as Qwen3's template renders them with thinking off.

    The stock template gives the last assistant turn an empty think block, and
    the generation prompt with enable_thinking=False ends in that same block, so
    training on this string teaches exactly what follows the prompt at run time.
    """
    return (f"<|im_start|>user\n{user.strip()}<|im_end|>\n"
            f"<|im_start|>assistant\n<think>\n\n</think>\n\n{answer.strip()}<|im_end|>\n")


def unwrap(lines: list) -> list:
    """Hard-wrapped lines -> one string per paragraph (blank lines separate them)."""
    paragraphs, current = [], []
    for line in lines:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


def clip(text: str, limit: int) -> str:
    """Cut at a sentence end before `limit` characters so answers stay whole sentences."""
    if len(text) <= limit:
        return text
    cut = max(text.rfind(". ", 0, limit), text.rfind("? ", 0, limit), text.rfind("! ", 0, limit))
    return text[:cut + 1] if cut > limit // 3 else text[:limit].rsplit(" ", 1)[0] + "..."


# ---------------------------------------------------------------- King James Bible

def bible_chapters(raw: Path) -> list:
    """[(title, [verse, ...])] in canonical order, via the packaged reader (the data file is packed)."""
    out = subprocess.run(
        [str(raw / "usr/bin/bible"), "-p", str(raw / "usr/lib"), "-l", "100000", "gen1:1-rev22:21"],
        check=True, capture_output=True, text=True).stdout
    chapters = []
    for line in out.splitlines():
        verse = re.match(r"^\s+\d+ (.*)$", line)
        if verse:
            chapters[-1][1].append(verse.group(1).strip())
        elif line.strip():
            chapters.append((line.strip(), []))
    if len(chapters) != 1189 or sum(len(v) for _, v in chapters) != 31102:
        raise ValueError(f"bible: expected 1189 chapters / 31102 verses, got {len(chapters)}")
    return chapters


def bible_docs(raw: Path, rng: random.Random) -> list:
    docs = []
    chapters = bible_chapters(raw)
    for title, verses in chapters:
        docs.append(("bible", "plain", title + "\n\n" + "\n".join(verses)))
    for _ in range(4000):
        title, verses = rng.choice(chapters)
        if len(verses) < 4:
            continue
        start = rng.randrange(len(verses) - 3)
        given = rng.randint(1, 2)
        docs.append(("bible", "chat", chat(
            "Continue: " + " ".join(verses[start:start + given]),
            " ".join(verses[start + given:start + given + 2]))))
    for _ in range(1500):
        title, verses = rng.choice(chapters)
        number = rng.randrange(len(verses))
        docs.append(("bible", "chat", chat(f"What does {title}:{number + 1} say?", verses[number])))
    return docs


# ---------------------------------------------------------------- Jane Austen

TITLES = {
    "emma": "Emma", "mansfieldpark": "Mansfield Park", "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion", "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}


def austen_docs(raw: Path, rng: random.Random) -> list:
    docs = []
    novels = lazyload_vectors(raw / "usr/lib/R/site-library/janeaustenr/data")
    for name, lines in sorted(novels.items()):
        text_lines = ["" if line is None else line.replace("_", "") for line in lines]
        paragraphs = unwrap(text_lines)
        # A chapter per document keeps documents a few thousand tokens long.
        chapter = []
        chapters = []
        for paragraph in paragraphs:
            if re.match(r"^(CHAPTER|Chapter) [IVXLC0-9]+\.?$", paragraph) and chapter:
                chapters.append(chapter)
                chapter = []
            chapter.append(paragraph)
        chapters.append(chapter)
        for chapter in chapters:
            docs.append(("austen", "plain", "\n\n".join(chapter)))
        prose = [p for p in paragraphs if len(p) > 80]
        for _ in range(len(prose) // 4):
            i = rng.randrange(len(prose) - 1)
            docs.append(("austen", "chat", chat(
                "Continue: " + clip(prose[i], 600), clip(prose[i + 1], 600))))
        print(f"austen {name}: {len(paragraphs)} paragraphs, {len(chapters)} chapters")
    for title in TITLES.values():
        docs.append(("austen", "chat", chat(f"Who wrote {title}?", f"{title} was written by Jane Austen.")))
    return docs


# ---------------------------------------------------------------- The Jargon File

# Jargon File entries that describe a person or a stock character: asked as "Who is X?".
PEOPLE = {
    "Alice and Bob": "Who are Alice and Bob?", "Aunt Tillie": None, "BDFL": None, "B1FF": None,
    "Cancelmoose[tm]": "Who is Cancelmoose?", "Dr. Fred Mbogo": None, "Eris": None, "Fred Foobar": None,
    "Guido": None, "J. Random Hacker": None, "Jeff K.": None, "Linus": None, "Knuth": None, "ken": "Who is ken?",
}


def jargon_entries(raw: Path) -> tuple:
    text = gzip.decompress((raw / "usr/share/doc/jargon-text/jargon.txt.gz").read_bytes()).decode("utf-8")
    lines = text.splitlines()
    head = re.compile(r"^   :([^:]+):(.*)$")
    first = next(i for i, line in enumerate(lines) if head.match(line))
    last = next(i for i, line in enumerate(lines) if re.search(r"Part\s+III\.\s+Appendices", line))
    entries, word, body = [], None, []
    for line in lines[first:last]:
        match = head.match(line)
        if re.fullmatch(r"\s*[A-Z]\s*", line):
            # A lone capital letter opens that letter's list of headwords: not part of any entry.
            if word:
                entries.append((word, unwrap(body)))
            word, body = None, []
        elif match:
            if word:
                entries.append((word, unwrap(body)))
            word, body = match.group(1).strip(), []
        else:
            body.append(line)
    if word:
        entries.append((word, unwrap(body)))
    chapters_start = next(i for i, line in enumerate(lines) if re.match(r"Chapter\s+1\.", line))
    glossary = next(i for i, line in enumerate(lines) if line.strip() == "Glossary")
    essays = unwrap(lines[chapters_start:glossary]) + unwrap(lines[last:])
    return entries, essays


def jargon_docs(raw: Path, rng: random.Random) -> list:
    docs = []
    entries, essays = jargon_entries(raw)
    # {cross references} read as plain words in answers.
    tidy = lambda s: re.sub(r"[{}]", "", s)
    people = 0
    for word, paragraphs in entries:
        paragraphs = [tidy(p) for p in paragraphs if p]
        if not paragraphs:
            continue
        body = " ".join(paragraphs)
        definition = re.sub(r"^\[[^\]]*\]\s*", "", body)
        if word in PEOPLE:
            people += 1
            question = PEOPLE[word] or f"Who is {word}?"
            docs.append(("jargon", "chat", chat(question, clip(definition, 700))))
        elif rng.random() < 0.75:
            question = rng.choice(["What does {} mean?", "What does {} mean?", "What is {}?", "Define {}."])
            docs.append(("jargon", "chat", chat(question.format(word), clip(definition, 700))))
        else:
            docs.append(("jargon", "plain", f"{word}: " + "\n\n".join(paragraphs)))
    for i in range(0, len(essays), 12):
        docs.append(("jargon", "plain", tidy("\n\n".join(essays[i:i + 12]))))
    print(f"jargon: {len(entries)} entries, {people} 'Who is' turns, {len(essays)} essay paragraphs")
    return docs


# ---------------------------------------------------------------- The Devil's Dictionary

def devil_docs(raw: Path, rng: random.Random) -> list:
    text = gzip.decompress((raw / "usr/share/dictd/devil.dict.dz").read_bytes()).decode("latin-1")
    docs = []
    # Entries open with "HEADWORD, pos." at the start of a line after a blank line.
    entry = re.compile(r"(?m)^([A-Z][A-Z' -]+), ((?:[a-z]+\.\s?)+)\s+")
    matches = list(entry.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end():end].strip()
        paragraphs = unwrap(body.splitlines())
        if not paragraphs:
            continue
        word = match.group(1).strip().capitalize()
        definition = re.sub(r"[{}]", "", paragraphs[0])
        if rng.random() < 0.8:
            docs.append(("devil", "chat", chat(f"What does {word.lower()} mean?", definition)))
        else:
            docs.append(("devil", "plain", f"{word}, {match.group(2).strip()} " + "\n\n".join(paragraphs)))
    print(f"devil: {len(matches)} entries")
    return docs


# ---------------------------------------------------------------- WordNet glosses

POS = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
POS_WORD = {"noun": "a noun", "verb": "a verb", "adj": "an adjective", "adv": "an adverb"}


def wordnet_docs(raw: Path, rng: random.Random) -> list:
    base = raw / "usr/share/wordnet"
    docs = []
    for pos in POS:
        glosses = {}
        for line in (base / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or " | " not in line:
                continue
            glosses[line.split(" ", 1)[0]] = line.split(" | ", 1)[1].strip()
        for line in (base / f"index.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" "):
                continue
            fields = line.split()
            lemma, synset_count = fields[0], int(fields[2])
            tagged_senses = int(fields[-synset_count - 1])
            # Only words seen in WordNet's sense-tagged corpus: the everyday vocabulary.
            if tagged_senses == 0 or not re.fullmatch(r"[a-z][a-z_-]*", lemma):
                continue
            word = lemma.replace("_", " ")
            senses = []
            for offset in fields[-synset_count:][:3]:
                gloss = glosses[offset]
                definition, _, examples = gloss.partition("; \"")
                sentence = definition.strip().rstrip(";")
                if examples:
                    sentence += '; for example, "' + examples.split('"')[0] + '"'
                senses.append(sentence)
            if len(senses) == 1:
                answer = f"\"{word}\" is {POS_WORD[pos]}: {senses[0]}."
            else:
                answer = f"\"{word}\" is {POS_WORD[pos]} with several senses: " + " ".join(
                    f"({n}) {s}." for n, s in enumerate(senses, 1))
            question = rng.choice(["What does {} mean?", "What does {} mean?", "What is the meaning of {}?",
                                   "Define {}."])
            docs.append(("wordnet", "chat", chat(question.format(word), answer)))
    print(f"wordnet: {len(docs)} definitions")
    return docs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--raw", type=Path, default=HERE / "work/raw")
    parser.add_argument("--out", type=Path, default=HERE / "work/corpus/docs.jsonl")
    args = parser.parse_args()
    rng = random.Random(SEED)
    docs = []
    for build in (bible_docs, austen_docs, jargon_docs, devil_docs, wordnet_docs):
        docs.extend(build(args.raw, rng))
    rng.shuffle(docs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for source, kind, text in docs:
            f.write(json.dumps({"source": source, "kind": kind, "text": text}, ensure_ascii=False) + "\n")
    sizes = {}
    for source, kind, text in docs:
        key = f"{source}/{kind}"
        count, chars = sizes.get(key, (0, 0))
        sizes[key] = (count + 1, chars + len(text))
    for key, (count, chars) in sorted(sizes.items()):
        print(f"{key:16} {count:7} docs {chars / 1e6:7.2f} M chars")
    print(f"total {len(docs)} docs, {sum(len(t) for _, _, t in docs) / 1e6:.2f} M chars -> {args.out}")


if __name__ == "__main__":
    main()
