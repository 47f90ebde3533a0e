"""List the words of the training corpus, for tests that ask "is this output English-like?".

A word is a run of ASCII letters (apostrophes split words), lower-cased; only
words seen at least `--min-count` times are kept, so one-off typos and Roman
numerals from headings do not count as vocabulary. One word per line, sorted.

Usage: word_list.py [--docs training/work/corpus/docs.jsonl] [--out models/demo/words.txt]
"""

import argparse
import json
import re
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=Path, default=HERE / "work/corpus/docs.jsonl")
    parser.add_argument("--out", type=Path, default=HERE.parent / "models/demo/words.txt")
    parser.add_argument("--min-count", type=int, default=3)
    args = parser.parse_args()
    counts = Counter()
    control = re.compile(r"<\|[a-z_]+\|>|</?think>")
    with args.docs.open(encoding="utf-8") as f:
        for line in f:
            text = control.sub(" ", json.loads(line)["text"])
            counts.update(w.lower() for w in re.findall(r"[A-Za-z]+", text))
    words = sorted(w for w, n in counts.items() if n >= args.min_count)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(words) + "\n", encoding="utf-8")
    covered = sum(counts[w] for w in words) / sum(counts.values())
    print(f"{args.out}: {len(words)} words seen >= {args.min_count} times "
          f"(of {len(counts)} distinct; they cover {covered:.2%} of running words)")


if __name__ == "__main__":
    main()
