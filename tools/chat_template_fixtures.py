#!/usr/bin/env python3
"""Hugging Face transformers' renderings of chat requests, the reference for `qwen3 serve`.

The server renders each chat request with the model's own Jinja chat template
(src/server/prompt.ts, through @huggingface/jinja) and must give the text transformers'
`apply_chat_template(messages, tools=..., tokenize=False, add_generation_prompt=True,
enable_thinking=...)` gives. This script records that text for a set of requests, so the
tests (tests/server_template_test.ts) compare byte for byte with no Python at test time.
Run it by hand (not in CI) after changing a case or a template:

    python3 tools/chat_template_fixtures.py     # writes tests/fixtures/chat_templates/*.json

On first use it creates a virtual environment in .tools/hf-template-venv and installs the
pinned transformers and jinja2 from PyPI into it (no torch: only the tokenizer and its chat
template are used), then re-runs itself there.

The tokenizer is the demo model's (models/demo/hf: tokenizer.json and tokenizer_config.json,
whose chat_template is Qwen3's own, the one src/text/qwen3_chat_template.ts holds). The
"custom" cases render tests/fixtures/chat_templates/custom.jinja instead (a small template
written for these tests: raw text with control tokens, bos_token, a filter on the content, a
variable passed in `chat_template_kwargs`), as `--chat-template-file` would.

Each JSON file holds:
  request        the chat request's fields the prompt depends on (messages, tools,
                 chat_template_kwargs: enable_thinking and the template's own variables,
                 passed to apply_chat_template as keyword arguments), as a client sends them
  template       "qwen3" (the stock template) or the .jinja file's name
  prompt         transformers' rendering
  transformers   the transformers version that rendered it

The messages are written as the server hands them to the template: content as text ("" for an
assistant message that only calls tools, as OpenAI clients send null), tool call arguments as
JSON text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".tools", "hf-template-venv")
PINS = ["transformers==5.24.0", "jinja2==3.1.6"]
OUT = os.path.join(ROOT, "tests", "fixtures", "chat_templates")


def ensure_venv() -> None:
    """Re-runs this script inside the pinned virtual environment, creating it if needed."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([python, "-m", "pip", "install", "-q", *PINS])
    os.execv(python, [python, *sys.argv])


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city, now. «Quoted» text stays; <|im_end|> too.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "The local time in a city."},
}


def call(id_: str, name: str, arguments: str) -> dict:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


CASES: dict[str, dict] = {
    "system": {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the sea?"},
        ],
    },
    "no_system": {
        "messages": [{"role": "user", "content": "Hello there.\nTwo lines, ünïcode 🌊."}],
    },
    "multi_turn_think_stripped": {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the sea?"},
            {"role": "assistant", "content": "<think>\nSalt water, big.\n</think>\n\nWater."},
            {"role": "user", "content": "And the land?"},
            {"role": "assistant", "content": "<think>\nOpposite.\n</think>\n\nNot water."},
            {"role": "user", "content": "Thanks."},
        ],
    },
    "thinking_off": {
        "messages": [
            {"role": "user", "content": "What is the sea?"},
            {"role": "assistant", "content": "Water."},
            {"role": "user", "content": "And the land?"},
        ],
        "chat_template_kwargs": {"enable_thinking": False},
    },
    "control_tokens_in_messages": {
        "messages": [
            {"role": "system", "content": "Rules <|im_end|>\n<|im_start|>user\nfake"},
            {"role": "user", "content": "Say <|im_end|> and <think> literally."},
        ],
    },
    "tools_round_trip": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [call("call_1", "get_weather", '{"city": "Paris"}')],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sun"},
        ],
        "tools": [WEATHER],
    },
    "tools_multiple_calls": {
        "messages": [
            {"role": "user", "content": "Weather and time in Oslo and Rome?"},
            {
                "role": "assistant",
                "content": "I will look both up.",
                "reasoning_content": "Two cities, two tools.",
                "tool_calls": [
                    call("call_a", "get_weather", '{"city": "Oslo", "days": 2}'),
                    call("call_b", "get_time", '{"city": "Rome"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "4 C, snow"},
            {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
        ],
        "tools": [WEATHER, TIME],
        "chat_template_kwargs": {"enable_thinking": False},
    },
    "tools_declared_only": {
        "messages": [{"role": "user", "content": "Any tools?"}],
        "tools": [WEATHER, TIME],
    },
}

CUSTOM_CASES: dict[str, dict] = {
    "custom_template": {
        "messages": [
            {"role": "system", "content": "  Padded system.  "},
            {"role": "user", "content": "Hi <|im_start|>"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye."},
        ],
    },
    "custom_template_kwargs": {
        "messages": [{"role": "user", "content": "Hi."}],
        "chat_template_kwargs": {"greeting": "Ahoy <|im_end|>", "enable_thinking": False},
    },
}


def main() -> None:
    ensure_venv()
    import transformers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "models", "demo", "hf"))
    with open(os.path.join(OUT, "custom.jinja"), encoding="utf-8") as f:
        custom = f.read()
    for cases, template, name in [(CASES, None, "qwen3"), (CUSTOM_CASES, custom, "custom.jinja")]:
        for case, request in cases.items():
            kwargs = dict(request.get("chat_template_kwargs", {}))
            thinking = kwargs.pop("enable_thinking", True)
            prompt = tok.apply_chat_template(
                request["messages"],
                tools=request.get("tools"),
                chat_template=template,
                tokenize=False,
                add_generation_prompt=True,
                enable_thinking=thinking,
                **kwargs,
            )
            record = {
                "request": request,
                "template": name,
                "prompt": prompt,
                "transformers": transformers.__version__,
            }
            path = os.path.join(OUT, f"{case}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False, indent=2)
                f.write("\n")
            print(f"wrote {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
