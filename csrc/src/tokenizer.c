/*
 * tokenizer.c - Qwen3's byte-level BPE, reproducing Hugging Face's `tokenizers`
 * (docs/tokenizer.md#encoding-pipeline).
 *
 * Sections: hashing and maps, loading (tokenizer.json, qwen3.c .tokenizer, GGUF lists),
 * pre-tokenizer, BPE, encode.
 *
 * Pipeline of qwen3_tokenizer_encode:
 *   1. added tokens ("<|im_end|>", "<think>", ...) are cut out of the raw text literally,
 *      leftmost-longest, only when the caller allows it (otherwise they are plain text);
 *   2. each remaining span is decoded to code points (an invalid UTF-8 byte becomes its own
 *      code point of class "other", see unicode.h) and NFC-normalised (skipped when a quick
 *      check proves it a no-op, e.g. for ASCII);
 *   3. the pre-tokenizer regex of tokenizer.json splits the span into pieces (hand-written
 *      matcher below, same leftmost-first backtracking semantics as Oniguruma);
 *   4. each piece's UTF-8 bytes start as byte tokens and the adjacent pair of lowest merge
 *      rank (leftmost on ties) is merged until none is mergeable: a heap keyed by
 *      (rank, position) with lazy invalidation, so long pieces stay O(n log n).
 *
 * Merge ranks come either from an exact merge list (tokenizer.json, GGUF) as a hash map
 * (left id, right id) -> (rank, merged id), or, from a .tokenizer file, from per-token
 * ranks rank = exp(-score) - 1: a pair is mergeable when its concatenation is a token with
 * a rank, ranked by that token (the tiktoken rule).
 *
 * A loaded tokenizer is immutable; encode allocates its scratch per call, so one
 * tokenizer serves many threads without locks.
 */
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "error.h"
#include "json.h"
#include "platform.h"
#include "qwen3_inference.h"
#include "unicode.h"

/* The only pre-tokenizer this file implements (Qwen2, Qwen2.5 and Qwen3 share it). */
static const char QWEN_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* Bounds that keep hostile files from asking for absurd allocations. */
#define MAX_TOKENS (1u << 24)
#define MAX_TOKEN_BYTES (1u << 16)
#define NO_RANK UINT32_MAX
/* Scores at or below this mark byte and added tokens in a .tokenizer file (they are -1e6). */
#define BIN_NO_RANK_SCORE (-1e5f)

typedef struct {
    uint32_t off; /* into pool */
    uint32_t len; /* bytes */
} TokenSpan;

typedef struct {
    uint64_t key;   /* left id << 32 | right id; UINT64_MAX = empty */
    uint32_t rank;  /* merge number */
    int32_t merged; /* id of the merged token */
} PairSlot;

struct Qwen3Tokenizer {
    uint32_t n_tokens;
    TokenSpan* spans; /* (n_tokens) raw bytes of each token; len 0 = no such id */
    uint8_t* pool;    /* token bytes, back to back */
    uint32_t max_len; /* longest token, bytes */

    int32_t* map; /* (map_mask + 1) open-addressed bytes -> id, -1 = empty */
    uint32_t map_mask;

    int exact;
    PairSlot* pairs; /* exact: (pair_mask + 1) (left, right) -> (rank, merged) */
    uint32_t pair_mask;
    uint32_t* rank; /* vocab-only: (n_tokens) rank of the merge that makes each token, NO_RANK */

    int32_t byte_id[256]; /* token of each single byte, -1 when the vocabulary lacks it */
    int nfc;              /* apply NFC (the tokenizer.json normalizer) */

    int32_t* specials; /* (n_specials) added-token ids, longest text first */
    uint32_t n_specials;
    uint8_t special_first[256]; /* 1 when some added token starts with this byte */
};

/* ======================================================================================
 * Hashing and maps
 * ==================================================================================== */

static uint64_t hash_bytes(uint64_t h, const uint8_t* s, size_t n) {
    /* FNV-1a: streaming, so a pair's concatenation hashes without being copied. */
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001B3ull;
    return h;
}
#define HASH_SEED 0xCBF29CE484222325ull

static uint32_t hash_finish(uint64_t h) { return (uint32_t)((h ^ (h >> 29)) * 0x9E3779B97F4A7C15ull >> 32); }

static uint32_t table_size(uint32_t n) {
    uint32_t size = 16;
    while (size < n * 2u) size <<= 1;
    return size;
}

static const uint8_t* token_ptr(const Qwen3Tokenizer* t, int32_t id) { return t->pool + t->spans[id].off; }

/* The id whose bytes are a followed by b, or -1. */
static int32_t map_find2(const Qwen3Tokenizer* t, const uint8_t* a, size_t an, const uint8_t* b, size_t bn) {
    size_t n = an + bn;
    if (n == 0 || n > t->max_len) return -1;
    uint32_t i = hash_finish(hash_bytes(hash_bytes(HASH_SEED, a, an), b, bn)) & t->map_mask;
    for (;;) {
        int32_t id = t->map[i];
        if (id < 0) return -1;
        const TokenSpan* s = &t->spans[id];
        if (s->len == n) {
            const uint8_t* p = t->pool + s->off;
            if (memcmp(p, a, an) == 0 && (bn == 0 || memcmp(p + an, b, bn) == 0)) return id;
        }
        i = (i + 1) & t->map_mask;
    }
}

/* Builds the bytes -> id map; on equal bytes the lower id wins. */
static int build_map(Qwen3Tokenizer* t) {
    uint32_t size = table_size(t->n_tokens);
    t->map = malloc(size * sizeof *t->map);
    if (!t->map) return -1;
    memset(t->map, 0xFF, size * sizeof *t->map);
    t->map_mask = size - 1;
    for (uint32_t id = 0; id < t->n_tokens; id++) {
        const TokenSpan* s = &t->spans[id];
        if (s->len == 0) continue;
        const uint8_t* p = t->pool + s->off;
        uint32_t i = hash_finish(hash_bytes(HASH_SEED, p, s->len)) & t->map_mask;
        for (;;) {
            int32_t other = t->map[i];
            if (other < 0) {
                t->map[i] = (int32_t)id;
                break;
            }
            if (t->spans[other].len == s->len && memcmp(t->pool + t->spans[other].off, p, s->len) == 0) break;
            i = (i + 1) & t->map_mask;
        }
    }
    return 0;
}

static uint32_t pair_hash(uint64_t key) { return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32); }

static const PairSlot* pair_find(const Qwen3Tokenizer* t, int32_t left, int32_t right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint32_t i = pair_hash(key) & t->pair_mask;
    for (;;) {
        const PairSlot* s = &t->pairs[i];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
        i = (i + 1) & t->pair_mask;
    }
}

/* A later duplicate of a merge replaces the earlier one, as in Hugging Face's BPE. */
static void pair_insert(Qwen3Tokenizer* t, int32_t left, int32_t right, uint32_t rank, int32_t merged) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint32_t i = pair_hash(key) & t->pair_mask;
    while (t->pairs[i].key != UINT64_MAX && t->pairs[i].key != key) i = (i + 1) & t->pair_mask;
    t->pairs[i].key = key;
    t->pairs[i].rank = rank;
    t->pairs[i].merged = merged;
}

/* ======================================================================================
 * Loading
 * ==================================================================================== */

void qwen3_tokenizer_free(Qwen3Tokenizer* t) {
    if (!t) return;
    free(t->spans);
    free(t->pool);
    free(t->map);
    free(t->pairs);
    free(t->rank);
    free(t->specials);
    free(t);
}

static Qwen3Tokenizer* tokenizer_new(uint32_t n_tokens, size_t pool_cap) {
    Qwen3Tokenizer* t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n_tokens = n_tokens;
    t->spans = calloc(n_tokens ? n_tokens : 1, sizeof *t->spans);
    t->pool = malloc(pool_cap ? pool_cap : 1);
    t->nfc = 1;
    if (!t->spans || !t->pool) {
        qwen3_tokenizer_free(t);
        return NULL;
    }
    return t;
}

/* Added-token order for matching: longer text first, then lower id. */
static int special_before(const Qwen3Tokenizer* t, int32_t a, int32_t b) {
    uint32_t la = t->spans[a].len, lb = t->spans[b].len;
    return la != lb ? la > lb : a < b;
}

/* Finishes a tokenizer whose spans, pool and (optional) special flags are set: maps,
 * byte tokens, the added-token list. is_special: (n_tokens) or NULL. */
static int tokenizer_finish(Qwen3Tokenizer* t, const uint8_t* is_special, const char* source) {
    t->max_len = 0;
    for (uint32_t id = 0; id < t->n_tokens; id++)
        if (t->spans[id].len > t->max_len) t->max_len = t->spans[id].len;
    if (build_map(t)) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "%s: out of memory building the token map", source);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    uint32_t n_special = 0;
    for (uint32_t id = 0; id < t->n_tokens; id++) {
        if (is_special && is_special[id]) {
            if (t->spans[id].len > 0) n_special++;
            continue;
        }
        if (t->spans[id].len == 1) {
            uint8_t b = t->pool[t->spans[id].off];
            if (t->byte_id[b] < 0) t->byte_id[b] = (int32_t)id;
        }
    }
    t->n_specials = 0;
    if (n_special) {
        t->specials = malloc(n_special * sizeof *t->specials);
        if (!t->specials) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "%s: out of memory", source);
        for (uint32_t id = 0; id < t->n_tokens; id++) {
            if (is_special[id] && t->spans[id].len > 0) {
                t->specials[t->n_specials++] = (int32_t)id;
                t->special_first[t->pool[t->spans[id].off]] = 1;
            }
        }
        /* Longest first, so the first match at a position is the leftmost-longest one. */
        for (uint32_t i = 1; i < t->n_specials; i++) {
            int32_t v = t->specials[i];
            uint32_t j = i;
            while (j > 0 && special_before(t, v, t->specials[j - 1])) {
                t->specials[j] = t->specials[j - 1];
                j--;
            }
            t->specials[j] = v;
        }
    }
    return 0;
}

/* ---- the GPT-2 byte-to-unicode alphabet ---------------------------------------------- */

/* GPT-2 shows each byte as a printable code point: printable Latin-1 bytes as themselves,
 * the other 68 bytes (0x00-0x20, 0x7F-0xA0, 0xAD) as U+0100 + their order among them.
 * Returns the byte of a code point of that alphabet, or -1. */
static int gpt2_byte_of(uint32_t cp) {
    if (cp < 256) {
        int printable = (cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE;
        return printable ? (int)cp : -1;
    }
    uint32_t k = cp - 256;
    if (k < 33) return (int)k;                  /* 0x00..0x20 */
    if (k < 67) return (int)(0x7F + (k - 33)); /* 0x7F..0xA0 */
    if (k == 67) return 0xAD;
    return -1;
}

/* Converts a token in the GPT-2 alphabet to raw bytes (out has room for n bytes: the raw
 * form is never longer). Returns the raw length, or -1 for a character outside it. */
static int64_t gpt2_decode(const char* s, size_t n, uint8_t* out) {
    size_t i = 0, w = 0;
    while (i < n) {
        uint32_t cp;
        i += qwen3_utf8_decode((const uint8_t*)s + i, n - i, &cp);
        int b = gpt2_byte_of(cp);
        if (b < 0) return -1;
        out[w++] = (uint8_t)b;
    }
    return (int64_t)w;
}

/* ---- quoting file text in errors ------------------------------------------------------ */

/* Error messages may quote a little of the file they reject, never more, and never raw:
 * at most EXCERPT_BYTES bytes, every byte outside printable ASCII (and the quote and
 * backslash) written as \xNN, "..." when cut. A hostile tokenizer file can then neither
 * flood a message nor put control sequences into a user's terminal or log. */
#define EXCERPT_BYTES 48

typedef struct {
    char s[EXCERPT_BYTES * 4 + 4];
} Excerpt;

static Excerpt excerpt(const char* text, size_t n) {
    Excerpt e;
    size_t w = 0;
    for (size_t i = 0; i < n && i < EXCERPT_BYTES; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            e.s[w++] = (char)c;
        } else {
            static const char hex[] = "0123456789ABCDEF";
            e.s[w++] = '\\';
            e.s[w++] = 'x';
            e.s[w++] = hex[c >> 4];
            e.s[w++] = hex[c & 15];
        }
    }
    if (n > EXCERPT_BYTES) {
        memcpy(e.s + w, "...", 3);
        w += 3;
    }
    e.s[w] = '\0';
    return e;
}

/* ---- tokenizer.json ------------------------------------------------------------------ */

/* Checks that the normalizer and pre-tokenizer are the ones this file implements, so a
 * foreign tokenizer.json is refused instead of silently mis-tokenised. */
static int check_json_pipeline(const Qwen3JsonValue* root, const char* path, int* nfc) {
    const Qwen3JsonValue* norm = qwen3_json_get(root, "normalizer");
    *nfc = 0;
    if (norm && norm->type != QWEN3_JSON_NULL) {
        const Qwen3JsonValue* type = qwen3_json_get_type(norm, "type", QWEN3_JSON_STRING);
        const Qwen3JsonValue* inner = qwen3_json_get_type(norm, "normalizers", QWEN3_JSON_ARRAY);
        if (type && strcmp(type->u.str, "Sequence") == 0 && inner && inner->len == 1) {
            type = qwen3_json_get_type(qwen3_json_at(inner, 0), "type", QWEN3_JSON_STRING);
        }
        if (!type || strcmp(type->u.str, "NFC") != 0)
            return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported (only NFC)", path,
                              type ? excerpt(type->u.str, type->len).s : "(no type)");
        *nfc = 1;
    }
    const Qwen3JsonValue* pre = qwen3_json_get(root, "pre_tokenizer");
    if (!pre || pre->type == QWEN3_JSON_NULL) return 0;
    const Qwen3JsonValue* list = pre;
    size_t count = 1;
    const Qwen3JsonValue* type = qwen3_json_get_type(pre, "type", QWEN3_JSON_STRING);
    if (type && strcmp(type->u.str, "Sequence") == 0) {
        list = qwen3_json_get_type(pre, "pretokenizers", QWEN3_JSON_ARRAY);
        if (!list) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: pre_tokenizer Sequence without pretokenizers", path);
        count = list->len;
    }
    for (size_t i = 0; i < count; i++) {
        const Qwen3JsonValue* step = list == pre ? pre : qwen3_json_at(list, i);
        const Qwen3JsonValue* st = qwen3_json_get_type(step, "type", QWEN3_JSON_STRING);
        if (!st) return qwen3_fail(QWEN3_ERR_FORMAT, "%s: pre_tokenizer step %zu has no type", path, i);
        if (strcmp(st->u.str, "Split") == 0) {
            const Qwen3JsonValue* re = qwen3_json_get_type(qwen3_json_get(step, "pattern"), "Regex", QWEN3_JSON_STRING);
            if (!re || strcmp(re->u.str, QWEN_REGEX) != 0)
                return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "%s: pre_tokenizer Split pattern is not Qwen's regex", path);
        } else if (strcmp(st->u.str, "ByteLevel") == 0) {
            const Qwen3JsonValue* ur = qwen3_json_get(step, "use_regex");
            if (!ur || ur->type != QWEN3_JSON_FALSE)
                return qwen3_fail(QWEN3_ERR_UNSUPPORTED,
                                  "%s: ByteLevel pre_tokenizer with use_regex (GPT-2's regex) is not supported", path);
        } else {
            return qwen3_fail(QWEN3_ERR_UNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported", path,
                              excerpt(st->u.str, st->len).s);
        }
    }
    return 0;
}

/* Looks up a merge side (GPT-2 alphabet) as a token id, or -1. */
static int32_t merge_side_id(const Qwen3Tokenizer* t, const char* s, size_t n, uint8_t* buf) {
    int64_t raw = gpt2_decode(s, n, buf);
    if (raw <= 0) return -1;
    return map_find2(t, buf, (size_t)raw, NULL, 0);
}

/* Adds merge number `rank` (left, right in the GPT-2 alphabet) to the pair map. */
static int add_merge(Qwen3Tokenizer* t, uint32_t rank, const char* a, size_t an, const char* b, size_t bn,
                     uint8_t* buf, const char* source) {
    /* buf holds MAX_TOKEN_BYTES * 2 + 1 bytes; a raw side is never longer than its text. */
    if (an > MAX_TOKEN_BYTES * 2u || bn > MAX_TOKEN_BYTES * 2u)
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: merge %u is longer than %u bytes", source, rank, MAX_TOKEN_BYTES * 2u);
    int32_t left = merge_side_id(t, a, an, buf);
    int32_t right = merge_side_id(t, b, bn, buf);
    if (left < 0 || right < 0)
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: merge %u (\"%s %s\") uses a token not in the vocabulary", source,
                          rank, excerpt(a, an).s, excerpt(b, bn).s);
    const TokenSpan* l = &t->spans[left];
    const TokenSpan* r = &t->spans[right];
    int32_t merged = map_find2(t, t->pool + l->off, l->len, t->pool + r->off, r->len);
    if (merged < 0)
        return qwen3_fail(QWEN3_ERR_FORMAT, "%s: merge %u (\"%s %s\") makes a token not in the vocabulary", source,
                          rank, excerpt(a, an).s, excerpt(b, bn).s);
    pair_insert(t, left, right, rank, merged);
    return 0;
}

static int alloc_pairs(Qwen3Tokenizer* t, uint32_t n_merges) {
    uint32_t size = table_size(n_merges ? n_merges : 1);
    t->pairs = malloc(size * sizeof *t->pairs);
    if (!t->pairs) return -1;
    for (uint32_t i = 0; i < size; i++) t->pairs[i].key = UINT64_MAX;
    t->pair_mask = size - 1;
    t->exact = 1;
    return 0;
}

/* Splits a merge given as "left right" at its single space. */
static int split_merge(const char* s, size_t n, size_t* at) {
    const char* sp = memchr(s, ' ', n);
    if (!sp || sp == s || (size_t)(sp - s) == n - 1 || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1)) return -1;
    *at = (size_t)(sp - s);
    return 0;
}

/* The parts of a tokenizer.json that load_json_doc reads, found and type-checked. */
typedef struct {
    const Qwen3JsonValue* vocab;  /* object: GPT-2-alphabet text -> id */
    const Qwen3JsonValue* merges; /* array of "left right" or [left, right] */
    const Qwen3JsonValue* added;  /* array of {content, id}, or NULL */
    uint32_t n_added;
    int nfc;
} JsonDocParts;

/* Checks the document's kind (a BPE model without affixes, a supported pipeline) and finds its parts. */
static int check_json_doc(const Qwen3JsonValue* root, const char* path, JsonDocParts* p) {
    if (!root || root->type != QWEN3_JSON_OBJECT) {
        qwen3_error_set("%s: not a tokenizer.json (top level is not an object)", path);
        return -1;
    }
    const Qwen3JsonValue* model = qwen3_json_get_type(root, "model", QWEN3_JSON_OBJECT);
    if (!model) {
        qwen3_error_set("%s: no \"model\" object", path);
        return -1;
    }
    const Qwen3JsonValue* mtype = qwen3_json_get(model, "type");
    if (mtype && (mtype->type != QWEN3_JSON_STRING || strcmp(mtype->u.str, "BPE") != 0)) {
        qwen3_error_set("%s: model.type is not \"BPE\"", path);
        return -1;
    }
    static const char* const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const Qwen3JsonValue* a = qwen3_json_get(model, affixes[i]);
        if (a && a->type == QWEN3_JSON_STRING && a->len > 0) {
            qwen3_error_set("%s: model.%s is not supported", path, affixes[i]);
            return -1;
        }
    }
    p->vocab = qwen3_json_get_type(model, "vocab", QWEN3_JSON_OBJECT);
    p->merges = qwen3_json_get_type(model, "merges", QWEN3_JSON_ARRAY);
    if (!p->vocab || !p->merges) {
        qwen3_error_set("%s: model.vocab (object) and model.merges (array) are required", path);
        return -1;
    }
    p->added = qwen3_json_get(root, "added_tokens");
    if (p->added && p->added->type != QWEN3_JSON_ARRAY && p->added->type != QWEN3_JSON_NULL) {
        qwen3_error_set("%s: added_tokens is not an array", path);
        return -1;
    }
    p->n_added = p->added && p->added->type == QWEN3_JSON_ARRAY ? p->added->len : 0;
    return check_json_pipeline(root, path, &p->nfc) ? -1 : 0;
}

/* Pass 1: checks every vocabulary and added-token id and sums the bytes the pool needs. */
static int size_json_vocab(const JsonDocParts* p, const char* path, uint32_t* n_tokens, size_t* pool_cap) {
    int64_t max_id = -1;
    size_t cap = 0;
    for (uint32_t i = 0; i < p->vocab->len; i++) {
        const Qwen3JsonValue* k = &p->vocab->u.items[2 * (size_t)i];
        int64_t id;
        if (!qwen3_json_int(k + 1, 0, MAX_TOKENS - 1, &id)) {
            qwen3_error_set("%s: model.vocab[\"%s\"] is not an id in [0, %u)", path, excerpt(k->u.str, k->len).s,
                            MAX_TOKENS);
            return -1;
        }
        if (k->len == 0 || k->len > MAX_TOKEN_BYTES * 2u) {
            qwen3_error_set("%s: model.vocab entry %lld has a length of %u bytes", path, (long long)id, k->len);
            return -1;
        }
        if (id > max_id) max_id = id;
        cap += k->len;
    }
    for (uint32_t i = 0; i < p->n_added; i++) {
        const Qwen3JsonValue* a = &p->added->u.items[i];
        const Qwen3JsonValue* content = qwen3_json_get_type(a, "content", QWEN3_JSON_STRING);
        int64_t id;
        if (!content || content->len == 0 || content->len > MAX_TOKEN_BYTES ||
            !qwen3_json_int(qwen3_json_get(a, "id"), 0, MAX_TOKENS - 1, &id)) {
            qwen3_error_set("%s: added_tokens[%u] needs a non-empty \"content\" and an \"id\" in [0, %u)", path, i,
                            MAX_TOKENS);
            return -1;
        }
        if (id > max_id) max_id = id;
        cap += content->len;
    }
    if (max_id < 0) {
        qwen3_error_set("%s: empty vocabulary", path);
        return -1;
    }
    *n_tokens = (uint32_t)max_id + 1;
    *pool_cap = cap;
    return 0;
}

/* Pass 2: decodes the vocabulary into the pool, then appends the added tokens' literal text. */
static int fill_json_vocab(Qwen3Tokenizer* t, const JsonDocParts* p, uint8_t* is_special, const char* path) {
    uint32_t used = 0;
    for (uint32_t i = 0; i < p->vocab->len; i++) {
        const Qwen3JsonValue* k = &p->vocab->u.items[2 * (size_t)i];
        uint32_t id = (uint32_t)k[1].u.num;
        if (t->spans[id].len) {
            qwen3_error_set("%s: id %u appears twice in model.vocab", path, id);
            return -1;
        }
        int64_t n = gpt2_decode(k->u.str, k->len, t->pool + used);
        if (n < 0) {
            qwen3_error_set("%s: model.vocab token %u (\"%s\") has a character outside the byte-level alphabet",
                            path, id, excerpt(k->u.str, k->len).s);
            return -1;
        }
        t->spans[id].off = used;
        t->spans[id].len = (uint32_t)n;
        used += (uint32_t)n;
    }
    for (uint32_t i = 0; i < p->n_added; i++) {
        const Qwen3JsonValue* a = &p->added->u.items[i];
        const Qwen3JsonValue* content = qwen3_json_get(a, "content");
        uint32_t id = (uint32_t)qwen3_json_get(a, "id")->u.num;
        /* Added tokens are matched and decoded by their literal text. */
        memcpy(t->pool + used, content->u.str, content->len);
        t->spans[id].off = used;
        t->spans[id].len = content->len;
        used += content->len;
        is_special[id] = 1;
    }
    return 0;
}

/* Reads model.merges, each "left right" or [left, right], into the pair map in rank order. */
static int read_json_merges(Qwen3Tokenizer* t, const Qwen3JsonValue* merges, uint8_t* buf, const char* path) {
    if (alloc_pairs(t, merges->len)) {
        qwen3_error_set("%s: out of memory for %u merges", path, merges->len);
        return -1;
    }
    for (uint32_t i = 0; i < merges->len; i++) {
        const Qwen3JsonValue* m = &merges->u.items[i];
        const char *a, *b;
        size_t an, bn;
        if (m->type == QWEN3_JSON_STRING) {
            size_t at;
            if (split_merge(m->u.str, m->len, &at)) {
                qwen3_error_set("%s: model.merges[%u] (\"%s\") is not \"left right\"", path, i,
                                excerpt(m->u.str, m->len).s);
                return -1;
            }
            a = m->u.str;
            an = at;
            b = m->u.str + at + 1;
            bn = m->len - at - 1;
        } else if (m->type == QWEN3_JSON_ARRAY && m->len == 2 && m->u.items[0].type == QWEN3_JSON_STRING &&
                   m->u.items[1].type == QWEN3_JSON_STRING) {
            a = m->u.items[0].u.str;
            an = m->u.items[0].len;
            b = m->u.items[1].u.str;
            bn = m->u.items[1].len;
        } else {
            qwen3_error_set("%s: model.merges[%u] is neither \"left right\" nor [left, right]", path, i);
            return -1;
        }
        if (add_merge(t, i, a, an, b, bn, buf, path)) return -1;
    }
    return 0;
}

/* Builds a tokenizer from a parsed tokenizer.json; NULL with the error set on failure. */
static Qwen3Tokenizer* load_json_doc(const Qwen3JsonValue* root, const char* path) {
    JsonDocParts p;
    uint32_t n_tokens;
    size_t pool_cap;
    if (check_json_doc(root, path, &p) || size_json_vocab(&p, path, &n_tokens, &pool_cap)) return NULL;
    Qwen3Tokenizer* t = tokenizer_new(n_tokens, pool_cap);
    uint8_t* is_special = calloc(n_tokens, 1);
    uint8_t* buf = malloc(MAX_TOKEN_BYTES * 2u + 1);
    if (!t || !is_special || !buf) {
        qwen3_error_set("%s: out of memory for %u tokens", path, n_tokens);
        goto fail;
    }
    t->nfc = p.nfc;
    if (fill_json_vocab(t, &p, is_special, path) || tokenizer_finish(t, is_special, path) ||
        read_json_merges(t, p.merges, buf, path))
        goto fail;
    free(is_special);
    free(buf);
    return t;
fail:
    free(is_special);
    free(buf);
    qwen3_tokenizer_free(t);
    return NULL;
}

Qwen3Tokenizer* qwen3_tokenizer_load_json(const char* path) {
    Qwen3JsonDoc* doc = qwen3_json_load_file(path, QWEN3_TOKENIZER_JSON_MAX_BYTES);
    if (!doc) return NULL;
    Qwen3Tokenizer* t = load_json_doc(qwen3_json_root(doc), path);
    qwen3_json_free(doc);
    return t;
}

/* ---- qwen3.c .tokenizer -------------------------------------------------------------- */

Qwen3Tokenizer* qwen3_tokenizer_load_bin(const char* path) {
    if (!path) {
        qwen3_error_set("tokenizer path is NULL");
        return NULL;
    }
    size_t size;
    char* text = NULL;
    if (qwen3_file_read_all(path, QWEN3_TOKENIZER_BIN_MAX_BYTES, &text, &size) != QWEN3_OK) {
        return NULL;
    }
    uint8_t* data = (uint8_t*)text;
    Qwen3Tokenizer* t = NULL;
    uint8_t* is_special = NULL;
    if (size < 12) {
        qwen3_error_set("%s: %zu bytes, too short for the 12-byte .tokenizer header", path, size);
        goto fail;
    }
    /* Pass 1: count and check the records (f32 score, u32 length, bytes) up to EOF. */
    uint32_t n = 0;
    size_t pos = 12;
    while (pos < size) {
        if (size - pos < 8) {
            qwen3_error_set("%s: truncated record header for token %u at byte %zu", path, n, pos);
            goto fail;
        }
        uint32_t len = qwen3_read_u32le(data + pos + 4);
        if (len > MAX_TOKEN_BYTES || len > size - pos - 8) {
            qwen3_error_set("%s: token %u at byte %zu claims %u bytes (limit %u, %zu left)", path, n, pos, len,
                            MAX_TOKEN_BYTES, size - pos - 8);
            goto fail;
        }
        if (++n > MAX_TOKENS) {
            qwen3_error_set("%s: more than %u tokens", path, MAX_TOKENS);
            goto fail;
        }
        pos += 8 + (size_t)len;
    }
    if (n == 0) {
        qwen3_error_set("%s: no tokens after the header", path);
        goto fail;
    }
    t = tokenizer_new(n, size);
    is_special = calloc(n, 1);
    if (!t || !is_special || !(t->rank = malloc(n * sizeof *t->rank))) {
        qwen3_error_set("%s: out of memory for %u tokens", path, n);
        goto fail;
    }
    /* Pass 2: bytes and ranks. rank = exp(-score) - 1 inverts the exporter's
     * score = -ln(rank + 1); f32 keeps it within 0.1 of an integer for ranks < 2^20. */
    pos = 12;
    uint32_t used = 0;
    for (uint32_t id = 0; id < n; id++) {
        float score = qwen3_read_f32le(data + pos);
        uint32_t len = qwen3_read_u32le(data + pos + 4);
        memcpy(t->pool + used, data + pos + 8, len);
        t->spans[id].off = used;
        t->spans[id].len = len;
        used += len;
        pos += 8 + (size_t)len;
        t->rank[id] = NO_RANK;
        if (score > BIN_NO_RANK_SCORE && score <= 0.0f) {
            double r = exp(-(double)score) - 1.0;
            if (r < 4.0e9) t->rank[id] = (uint32_t)llround(r);
        } else if (!(score > BIN_NO_RANK_SCORE) && len > 1) {
            is_special[id] = 1; /* -1e6 and longer than a byte: an added token */
        }
    }
    if (tokenizer_finish(t, is_special, path)) goto fail;
    free(is_special);
    free(data);
    return t;
fail:
    free(is_special);
    free(data);
    qwen3_tokenizer_free(t);
    return NULL;
}

/* ---- GGUF lists ---------------------------------------------------------------------- */

/* GGUF token types (llama.cpp's llama_token_type). */
enum { GGUF_TOKEN_NORMAL = 1, GGUF_TOKEN_CONTROL = 3, GGUF_TOKEN_USER_DEFINED = 4, GGUF_TOKEN_UNUSED = 5,
       GGUF_TOKEN_BYTE = 6 };

static int hex_digit(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

Qwen3Tokenizer* qwen3_tokenizer_from_lists(const char* const* tokens, const uint32_t* lens, uint32_t n_tokens,
                                           const int32_t* token_types, const char* const* merges,
                                           const uint32_t* merge_lens, uint32_t n_merges) {
    const char* source = "GGUF tokenizer";
    if (!tokens || !lens || n_tokens == 0 || (n_merges && (!merges || !merge_lens))) {
        qwen3_error_set("%s: missing token or merge lists", source);
        return NULL;
    }
    if (n_tokens > MAX_TOKENS) {
        qwen3_error_set("%s: %u tokens (limit %u)", source, n_tokens, MAX_TOKENS);
        return NULL;
    }
    size_t pool_cap = 0;
    for (uint32_t i = 0; i < n_tokens; i++) {
        if (lens[i] > MAX_TOKEN_BYTES * 2u || (lens[i] && !tokens[i])) {
            qwen3_error_set("%s: token %u has length %u (limit %u) or no text", source, i, lens[i],
                            MAX_TOKEN_BYTES * 2u);
            return NULL;
        }
        pool_cap += lens[i];
    }
    Qwen3Tokenizer* t = tokenizer_new(n_tokens, pool_cap);
    uint8_t* is_special = calloc(n_tokens, 1);
    uint8_t* buf = malloc(MAX_TOKEN_BYTES * 2u + 1);
    if (!t || !is_special || !buf) {
        qwen3_error_set("%s: out of memory for %u tokens", source, n_tokens);
        goto fail;
    }
    uint32_t used = 0;
    for (uint32_t id = 0; id < n_tokens; id++) {
        const char* s = tokens[id];
        uint32_t len = lens[id];
        int32_t type = token_types ? token_types[id] : GGUF_TOKEN_NORMAL;
        if (!token_types && len >= 4 && s[0] == '<' && s[1] == '|' && s[len - 2] == '|' && s[len - 1] == '>')
            type = GGUF_TOKEN_CONTROL;
        uint8_t* dst = t->pool + used;
        int64_t n;
        if (type == GGUF_TOKEN_CONTROL || type == GGUF_TOKEN_USER_DEFINED || type == GGUF_TOKEN_UNUSED) {
            /* Added tokens are stored as their literal text. */
            memcpy(dst, s, len);
            n = len;
            is_special[id] = type != GGUF_TOKEN_UNUSED;
        } else if (type == GGUF_TOKEN_BYTE && len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' &&
                   hex_digit((uint8_t)s[3]) >= 0 && hex_digit((uint8_t)s[4]) >= 0) {
            dst[0] = (uint8_t)(hex_digit((uint8_t)s[3]) * 16 + hex_digit((uint8_t)s[4]));
            n = 1;
        } else {
            n = gpt2_decode(s, len, dst);
            if (n < 0) {
                qwen3_error_set("%s: token %u (\"%s\") has a character outside the byte-level alphabet", source, id,
                                excerpt(s, len).s);
                goto fail;
            }
        }
        t->spans[id].off = used;
        t->spans[id].len = (uint32_t)n;
        used += (uint32_t)n;
    }
    if (tokenizer_finish(t, is_special, source)) goto fail;
    if (alloc_pairs(t, n_merges)) {
        qwen3_error_set("%s: out of memory for %u merges", source, n_merges);
        goto fail;
    }
    for (uint32_t i = 0; i < n_merges; i++) {
        size_t at;
        if (!merges[i] || merge_lens[i] > MAX_TOKEN_BYTES * 4u || split_merge(merges[i], merge_lens[i], &at)) {
            qwen3_error_set("%s: merge %u is not \"left right\"", source, i);
            goto fail;
        }
        if (add_merge(t, i, merges[i], at, merges[i] + at + 1, merge_lens[i] - at - 1, buf, source)) goto fail;
    }
    free(is_special);
    free(buf);
    return t;
fail:
    free(is_special);
    free(buf);
    qwen3_tokenizer_free(t);
    return NULL;
}

/* ---- queries ------------------------------------------------------------------------- */

uint32_t qwen3_tokenizer_size(const Qwen3Tokenizer* t) { return t ? t->n_tokens : 0; }

int qwen3_tokenizer_is_exact(const Qwen3Tokenizer* t) { return t ? t->exact : 0; }

const char* qwen3_tokenizer_token_bytes(const Qwen3Tokenizer* t, int32_t id, uint32_t* len) {
    if (!t || id < 0 || (uint32_t)id >= t->n_tokens) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->spans[id].len;
    return (const char*)token_ptr(t, id);
}

int32_t qwen3_tokenizer_find(const Qwen3Tokenizer* t, const char* text) {
    if (!t || !text) return -1;
    return map_find2(t, (const uint8_t*)text, strlen(text), NULL, 0);
}

/* ======================================================================================
 * Pre-tokenizer
 * ==================================================================================== */

/* Character classes the regex distinguishes. */
enum { CLS_OTHER = 0, CLS_LETTER, CLS_NUMBER, CLS_SPACE /* \s but not \r \n */, CLS_NEWLINE /* \r \n */ };

static uint8_t classify(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CLS_LETTER;
        if (cp >= '0' && cp <= '9') return CLS_NUMBER;
        if (cp == '\r' || cp == '\n') return CLS_NEWLINE;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CLS_SPACE;
        return CLS_OTHER;
    }
    uint32_t f = qwen3_uc_flags(cp);
    if (f & QWEN3_UC_LETTER) return CLS_LETTER;
    if (f & QWEN3_UC_NUMBER) return CLS_NUMBER;
    if (f & QWEN3_UC_SPACE) return CLS_SPACE;
    return CLS_OTHER;
}

/* Simple case folding for the contraction letters: Oniguruma's (?i) also lets U+017F
 * (long s) match 's'; none of t, r, e, v, m, l, d has another single-character fold. */
static uint32_t fold_contraction(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if (c == 0x17F) return 's';
    return c;
}

/*
 * The end of the regex match that starts at i (the alternatives tried in order, first
 * success wins, as a backtracking engine does). Every character matches some alternative,
 * so pieces tile the text. The cost is linear in the piece, except for a whitespace run,
 * which is scanned once to find its last newline; the next match starts past it.
 */
static size_t match_piece(const uint32_t* c, const uint8_t* k, size_t n, size_t i) {
    /* (?i:'s|'t|'re|'ve|'m|'ll|'d) */
    if (c[i] == '\'' && i + 1 < n) {
        uint32_t a = fold_contraction(c[i + 1]);
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
        if (i + 2 < n) {
            uint32_t b = fold_contraction(c[i + 2]);
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
        }
    }
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    size_t j = i;
    if ((k[j] == CLS_OTHER || k[j] == CLS_SPACE) && j + 1 < n && k[j + 1] == CLS_LETTER) j++;
    if (k[j] == CLS_LETTER) {
        while (j < n && k[j] == CLS_LETTER) j++;
        return j;
    }
    /* \p{N} */
    if (k[i] == CLS_NUMBER) return i + 1;
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    j = i;
    if (c[j] == ' ' && j + 1 < n && k[j + 1] == CLS_OTHER) j++;
    if (k[j] == CLS_OTHER) {
        while (j < n && k[j] == CLS_OTHER) j++;
        while (j < n && k[j] == CLS_NEWLINE) j++;
        return j;
    }
    /* Here c[i] is whitespace. \s*[\r\n]+ ends after the run's last newline; without one,
     * \s+(?!\S) takes the run minus its last character when a non-space follows (that
     * character then leads the next piece), and \s+ takes a lone one. */
    size_t e = i, last_newline = SIZE_MAX;
    while (e < n && (k[e] == CLS_SPACE || k[e] == CLS_NEWLINE)) {
        if (k[e] == CLS_NEWLINE) last_newline = e;
        e++;
    }
    if (last_newline != SIZE_MAX) return last_newline + 1;
    if (e == n || e - i == 1) return e;
    return e - 1;
}

/* ======================================================================================
 * BPE
 * ==================================================================================== */

typedef struct {
    int32_t id;   /* token; -1 once merged into its left neighbour */
    int32_t prev; /* index of the previous live symbol, -1 at the start */
    int32_t next; /* index of the next live symbol, -1 at the end */
} Symbol;

typedef struct {
    uint32_t rank;  /* merge rank, the heap key */
    uint32_t pos;   /* left symbol index, the tie-break: leftmost first */
    int32_t left;   /* ids when pushed: a stale entry no longer matches them */
    int32_t right;
    int32_t merged;
} Candidate;

/* Per-call scratch, grown as needed; never shared between calls. */
typedef struct {
    uint32_t* cps; /* (cap_cps) code points of the current span */
    uint8_t* cls;  /* (cap_cps) their classes */
    size_t cap_cps;
    uint8_t* bytes; /* (cap_bytes) UTF-8 of the current piece */
    Symbol* syms;   /* (cap_bytes) */
    Candidate* heap; /* (3 * cap_bytes) at most n - 1 initial pairs plus two per merge */
    size_t cap_bytes;
    int32_t* out; /* caller's buffer */
    uint32_t capacity;
    size_t count; /* ids produced so far, also past capacity */
} Scratch;

static int scratch_bytes(Scratch* s, size_t n) {
    if (n <= s->cap_bytes) return 0;
    size_t cap = s->cap_bytes ? s->cap_bytes : 256;
    while (cap < n) cap *= 2;
    uint8_t* b = realloc(s->bytes, cap);
    if (b) s->bytes = b;
    Symbol* y = realloc(s->syms, cap * sizeof *y);
    if (y) s->syms = y;
    Candidate* h = realloc(s->heap, 3 * cap * sizeof *h);
    if (h) s->heap = h;
    if (!b || !y || !h) return -1;
    s->cap_bytes = cap;
    return 0;
}

static void emit(Scratch* s, int32_t id) {
    if (s->count < s->capacity) s->out[s->count] = id;
    s->count++;
}

static int cand_less(const Candidate* a, const Candidate* b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(Candidate* h, size_t* n, Candidate c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(&c, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = c;
}

/* Moves h[i] down to its place among the first n entries. */
static void heap_sift_down(Candidate* h, size_t n, size_t i) {
    Candidate c = h[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && cand_less(&h[child + 1], &h[child])) child++;
        if (!cand_less(&h[child], &c)) break;
        h[i] = h[child];
        i = child;
    }
    h[i] = c;
}

static Candidate heap_pop(Candidate* h, size_t* n) {
    Candidate top = h[0];
    h[0] = h[--(*n)];
    if (*n) heap_sift_down(h, *n, 0);
    return top;
}

/* The rank and merged id of an adjacent pair; 0 when it does not merge. */
static int pair_rank(const Qwen3Tokenizer* t, int32_t left, int32_t right, uint32_t* rank, int32_t* merged) {
    if (t->exact) {
        const PairSlot* p = pair_find(t, left, right);
        if (!p) return 0;
        *rank = p->rank;
        *merged = p->merged;
        return 1;
    }
    const TokenSpan* l = &t->spans[left];
    const TokenSpan* r = &t->spans[right];
    int32_t id = map_find2(t, t->pool + l->off, l->len, t->pool + r->off, r->len);
    if (id < 0 || t->rank[id] == NO_RANK) return 0;
    *rank = t->rank[id];
    *merged = id;
    return 1;
}

static void push_pair(const Qwen3Tokenizer* t, Scratch* s, size_t* heap_n, int32_t pos) {
    Symbol* y = s->syms;
    int32_t next = y[pos].next;
    Candidate c;
    if (next < 0 || !pair_rank(t, y[pos].id, y[next].id, &c.rank, &c.merged)) return;
    c.pos = (uint32_t)pos;
    c.left = y[pos].id;
    c.right = y[next].id;
    heap_push(s->heap, heap_n, c);
}

static int32_t bpe_piece(const Qwen3Tokenizer* t, Scratch* s, size_t n) {
    const uint8_t* b = s->bytes;
    for (size_t i = 0; i < n; i++) {
        if (t->byte_id[b[i]] < 0)
            return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "tokenizer: the vocabulary has no token for byte 0x%02X",
                              b[i]);
    }
    if (n == 1) {
        emit(s, t->byte_id[b[0]]);
        return 0;
    }
    Symbol* y = s->syms;
    for (size_t i = 0; i < n; i++) {
        y[i].id = t->byte_id[b[i]];
        y[i].prev = (int32_t)i - 1;
        y[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    /* The initial pairs go in unordered, then one bottom-up heapify: O(n), not O(n log n). */
    size_t heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        Candidate c;
        if (!pair_rank(t, y[i].id, y[i + 1].id, &c.rank, &c.merged)) continue;
        c.pos = (uint32_t)i;
        c.left = y[i].id;
        c.right = y[i + 1].id;
        s->heap[heap_n++] = c;
    }
    for (size_t i = heap_n / 2; i-- > 0;) heap_sift_down(s->heap, heap_n, i);
    while (heap_n) {
        Candidate c = heap_pop(s->heap, &heap_n);
        int32_t l = (int32_t)c.pos;
        int32_t r = y[l].next;
        if (y[l].id != c.left || r < 0 || y[r].id != c.right) continue;
        y[l].id = c.merged;
        y[l].next = y[r].next;
        if (y[r].next >= 0) y[y[r].next].prev = l;
        y[r].id = -1;
        if (y[l].prev >= 0) push_pair(t, s, &heap_n, y[l].prev);
        push_pair(t, s, &heap_n, l);
    }
    for (int32_t i = 0; i >= 0; i = y[i].next) emit(s, y[i].id);
    return 0;
}

/* ======================================================================================
 * Encode
 * ==================================================================================== */

/* Bytes of a code point in UTF-8 (an invalid-byte value is one byte). */
static size_t utf8_length(uint32_t cp) {
    return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : cp < 0x110000 ? 4 : 1;
}

/* Pre-tokenises and encodes one span of text that holds no added token. */
static int32_t encode_span(const Qwen3Tokenizer* t, Scratch* s, const uint8_t* text, size_t len) {
    if (len == 0) return 0;
    if (len > s->cap_cps) {
        uint32_t* c = realloc(s->cps, len * sizeof *c);
        if (c) s->cps = c;
        uint8_t* k = realloc(s->cls, len);
        if (k) s->cls = k;
        if (!c || !k) return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for %zu bytes", len);
        s->cap_cps = len;
    }
    uint32_t* cps = s->cps;
    size_t n = 0;
    int ascii = 1;
    for (size_t i = 0; i < len;) {
        if (text[i] < 0x80) {
            cps[n++] = text[i++];
            continue;
        }
        ascii = 0;
        i += qwen3_utf8_decode(text + i, len - i, &cps[n++]);
    }
    uint32_t* normalized = NULL;
    if (!ascii && t->nfc && qwen3_nfc_needed(cps, n)) {
        size_t m;
        if (qwen3_nfc(cps, n, &normalized, &m))
            return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "tokenizer: out of memory normalising %zu bytes", len);
        cps = normalized;
        n = m;
    }
    uint8_t* cls = s->cls;
    if (n > s->cap_cps) {
        cls = malloc(n);
        if (!cls) {
            free(normalized);
            return qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for %zu code points", n);
        }
    }
    for (size_t i = 0; i < n; i++) cls[i] = classify(cps[i]);

    int32_t rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t end = match_piece(cps, cls, n, i);
        size_t nb = 0;
        for (size_t j = i; j < end; j++) nb += utf8_length(cps[j]);
        if (scratch_bytes(s, nb)) {
            rc = qwen3_fail(QWEN3_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for a piece of %zu bytes", nb);
            break;
        }
        nb = 0;
        for (size_t j = i; j < end; j++) nb += qwen3_utf8_encode(cps[j], s->bytes + nb);
        rc = bpe_piece(t, s, nb);
        i = end;
    }
    if (cls != s->cls) free(cls);
    free(normalized);
    return rc;
}

/* The added token starting at text[i] (leftmost-longest), or -1. */
static int32_t special_at(const Qwen3Tokenizer* t, const uint8_t* text, size_t len, size_t i) {
    for (uint32_t k = 0; k < t->n_specials; k++) {
        int32_t id = t->specials[k];
        const TokenSpan* sp = &t->spans[id];
        if (sp->len <= len - i && memcmp(text + i, t->pool + sp->off, sp->len) == 0) return id;
    }
    return -1;
}

int32_t qwen3_tokenizer_encode(const Qwen3Tokenizer* t, const char* text, size_t len, int allow_special,
                               int32_t* out, uint32_t capacity) {
    if (!t) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "tokenizer: NULL tokenizer");
    if (!text && len) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "tokenizer: NULL text of length %zu", len);
    if (!out && capacity) return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "tokenizer: NULL output with capacity %u", capacity);
    /* Every token covers at least one byte, so the count fits int32 when the text does. */
    if (len > (size_t)INT32_MAX)
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "tokenizer: text of %zu bytes exceeds the limit of %d", len,
                          INT32_MAX);
    if (len == 0) return 0;
    Scratch s = {.out = out, .capacity = capacity};
    const uint8_t* u = (const uint8_t*)text;
    int32_t rc = 0;
    size_t start = 0;
    if (allow_special && t->n_specials) {
        for (size_t i = 0; i < len && rc == 0;) {
            int32_t id = t->special_first[u[i]] ? special_at(t, u, len, i) : -1;
            if (id < 0) {
                i++;
                continue;
            }
            rc = encode_span(t, &s, u + start, i - start);
            if (rc == 0) emit(&s, id);
            i += t->spans[id].len;
            start = i;
        }
    }
    if (rc == 0) rc = encode_span(t, &s, u + start, len - start);
    free(s.cps);
    free(s.cls);
    free(s.bytes);
    free(s.syms);
    free(s.heap);
    if (rc == 0 && s.count > (size_t)INT32_MAX)
        return qwen3_fail(QWEN3_ERR_INVALID_ARGUMENT, "tokenizer: more than %d tokens", INT32_MAX);
    return rc < 0 ? rc : (int32_t)s.count;
}
