#!/usr/bin/env python3
r"""Generates csrc/src/unicode_tables.c: the Unicode data the C tokenizer needs.

    pip install unicodedataplus==16.0.0.post1
    python3 tools/gen_unicode_tables.py > csrc/src/unicode_tables.c

Hugging Face's `tokenizers` (the reference the C tokenizer must match) mixes two Unicode
versions, so the tables do too; both were measured against `tokenizers` 0.23.2:
- the pre-tokenizer regex runs on Oniguruma, whose \p{L} and \p{N} follow Unicode 16.0
  (U+1E5D0, new in 16.0, is a letter there; U+10940, new in 17.0, is not);
- its NFC normalizer (the unicode-normalization-alignments crate) carries Unicode 9.0 data:
  marks added in 10.0 (U+1DF6) have class 0 for it and compositions added in 13.0 (U+11938)
  do not happen. Decompositions and combining classes never change once assigned (Unicode
  stability policy), so the 9.0 data is the current data restricted to characters whose
  age is 9.0 or less.
`unicodedataplus` is Python's unicodedata with Unicode 16.0 data plus the Age property.

The tables:
- per code point: letter (general category L*), number (N*), White_Space, and whether the
  character can take part in NFC (a "check" flag: canonical combining class != 0,
  NFC quick-check No, or a possible second half of a composition, i.e. quick-check Maybe);
  plus its canonical combining class. Stored as a two-level table: stage1[cp >> SHIFT]
  picks a block of stage2 bytes, each byte an index into a small record table, so identical
  blocks (most of the code space) are stored once.
- canonical full decompositions (already recursive), sorted by code point;
- canonical composition pairs, composition exclusions already removed, sorted by
  (first << 21 | second). Hangul syllables are done algorithmically in unicode.c.
"""
import sys

try:
    import unicodedataplus as unicodedata
except ImportError:
    sys.exit("needs unicodedataplus: pip install unicodedataplus==16.0.0.post1")

REGEX_UNICODE = "16.0.0"  # letters and numbers: Oniguruma in HF tokenizers
NFC_UNICODE = (9, 0)  # NFC: unicode-normalization-alignments in HF tokenizers

MAX_CP = 0x110000

# The White_Space property (PropList.txt). unicodedata does not expose it and str.isspace()
# differs (it adds U+001C..U+001F), so it is listed here; it has been stable since Unicode 6.3.
WHITE_SPACE = set(
    list(range(0x09, 0x0E))
    + [0x20, 0x85, 0xA0, 0x1680]
    + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)

FLAG_LETTER = 1
FLAG_NUMBER = 2
FLAG_SPACE = 4
FLAG_NFC_CHECK = 8

HANGUL_V = range(0x1161, 0x1176)
HANGUL_T = range(0x11A8, 0x11C3)


def in_nfc_data(cp):
    """Whether cp was assigned by NFC_UNICODE (9.0)."""
    age = unicodedata.age(chr(cp))
    if not age[0].isdigit():
        return False
    major, minor = (int(x) for x in age.split(".")[:2])
    return (major, minor) <= NFC_UNICODE


def is_hangul_syllable(cp):
    return 0xAC00 <= cp <= 0xD7A3


def canonical_mapping(cp):
    """The raw canonical decomposition mapping of cp as a list, or None."""
    d = unicodedata.decomposition(chr(cp))
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


def main():
    if unicodedata.unidata_version != REGEX_UNICODE:
        sys.exit(f"unicodedataplus has Unicode {unicodedata.unidata_version}, want {REGEX_UNICODE}")
    decomps = {}
    compositions = {}
    second_halves = set(HANGUL_V) | set(HANGUL_T)
    for cp in range(MAX_CP):
        if 0xD800 <= cp <= 0xDFFF or is_hangul_syllable(cp) or not in_nfc_data(cp):
            continue
        mapping = canonical_mapping(cp)
        if mapping is None:
            continue
        full = [ord(c) for c in unicodedata.normalize("NFD", chr(cp))]
        if full != [cp]:
            decomps[cp] = full
        # A primary composite: a two-character mapping that NFC recomposes (this excludes
        # singletons, non-starter decompositions and the script-specific exclusions).
        if len(mapping) == 2 and unicodedata.normalize("NFC", chr(cp)) == chr(cp):
            compositions[(mapping[0], mapping[1])] = cp
            second_halves.add(mapping[1])

    records = {}
    values = bytearray(MAX_CP)
    for cp in range(MAX_CP):
        flags = 0
        ccc = 0
        if not (0xD800 <= cp <= 0xDFFF):
            ch = chr(cp)
            cat = unicodedata.category(ch)
            if cat.startswith("L"):
                flags |= FLAG_LETTER
            elif cat.startswith("N"):
                flags |= FLAG_NUMBER
            if in_nfc_data(cp):
                ccc = unicodedata.combining(ch)
                if ccc != 0 or unicodedata.normalize("NFC", ch) != ch or cp in second_halves:
                    flags |= FLAG_NFC_CHECK
        if cp in WHITE_SPACE:
            flags |= FLAG_SPACE
        key = (flags, ccc)
        if key not in records:
            records[key] = len(records)
        values[cp] = records[key]
    if len(records) > 256:
        sys.exit("more than 256 distinct (flags, ccc) records")

    best = None
    for shift in range(5, 10):
        size = 1 << shift
        blocks = {}
        stage1 = []
        for start in range(0, MAX_CP, size):
            block = bytes(values[start : start + size])
            if block not in blocks:
                blocks[block] = len(blocks)
            stage1.append(blocks[block])
        cost = len(stage1) * 2 + len(blocks) * size
        if best is None or cost < best[0]:
            best = (cost, shift, stage1, list(blocks.keys()))
    cost, shift, stage1, blocks = best

    record_list = sorted(records.items(), key=lambda kv: kv[1])
    pool = []
    decomp_rows = []
    for cp in sorted(decomps):
        seq = decomps[cp]
        decomp_rows.append((cp, len(pool), len(seq)))
        pool.extend(seq)
    comp_rows = sorted(((a << 21) | b, c) for (a, b), c in compositions.items())

    out = []
    w = out.append
    w("/*")
    w(" * unicode_tables.c - GENERATED by tools/gen_unicode_tables.py; do not edit.")
    w(f" * Letters, numbers, White_Space: Unicode {unicodedata.unidata_version}; NFC: Unicode "
      f"{NFC_UNICODE[0]}.{NFC_UNICODE[1]} (the versions HF tokenizers uses; see the generator).")
    w(f" * {len(records)} property records, {len(stage1)} x {1 << shift}-entry blocks "
      f"({len(blocks)} distinct), {len(decomp_rows)} decompositions, {len(comp_rows)} compositions;")
    w(f" * {cost + len(pool) * 4 + len(decomp_rows) * 8 + len(comp_rows) * 12} bytes of tables.")
    w(" */")
    w('#include "unicode.h"')
    w("")
    w(f'const char qwen3_unicode_version[] = "{unicodedata.unidata_version} (NFC {NFC_UNICODE[0]}.{NFC_UNICODE[1]})";')
    w("")
    w(f"const uint32_t qwen3_uc_block_shift = {shift};")
    w("")
    w("/* (record) flags and canonical combining class */")
    w(f"const Qwen3UcRecord qwen3_uc_records[{len(record_list)}] = {{")
    for (flags, ccc), _ in record_list:
        w(f"    {{{flags}, {ccc}}},")
    w("};")
    w("")
    w(f"/* (cp >> {shift}) -> block index */")
    w(f"const uint16_t qwen3_uc_stage1[{len(stage1)}] = {{")
    for i in range(0, len(stage1), 16):
        w("    " + ", ".join(str(x) for x in stage1[i : i + 16]) + ",")
    w("};")
    w("")
    w(f"/* (block, cp & {(1 << shift) - 1}) -> record index */")
    w(f"const uint8_t qwen3_uc_stage2[{len(blocks) * (1 << shift)}] = {{")
    flat = b"".join(blocks)
    for i in range(0, len(flat), 32):
        w("    " + ",".join(str(x) for x in flat[i : i + 32]) + ",")
    w("};")
    w("")
    w(f"const uint32_t qwen3_uc_decomp_count = {len(decomp_rows)};")
    w("/* sorted by code point: (cp, offset into the pool, length) */")
    w(f"const Qwen3UcDecomp qwen3_uc_decomps[{len(decomp_rows)}] = {{")
    for cp, off, n in decomp_rows:
        w(f"    {{0x{cp:X}, {off}, {n}}},")
    w("};")
    w(f"const uint32_t qwen3_uc_decomp_pool[{len(pool)}] = {{")
    for i in range(0, len(pool), 12):
        w("    " + ", ".join(f"0x{x:X}" for x in pool[i : i + 12]) + ",")
    w("};")
    w("")
    w(f"const uint32_t qwen3_uc_comp_count = {len(comp_rows)};")
    w("/* sorted by key = first << 21 | second */")
    w(f"const Qwen3UcComp qwen3_uc_comps[{len(comp_rows)}] = {{")
    for key, c in comp_rows:
        w(f"    {{0x{key:X}ull, 0x{c:X}}},")
    w("};")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
