/* json.c - strict, bounded JSON reader (see json.h). */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "platform.h"
#include "qwen3_inference.h"
#include "unicode.h"

/* Values live in blocks of at least this many entries; a block is never moved, so
 * pointers into it stay valid. */
#define JSON_BLOCK_VALUES 65536

typedef struct JsonBlock JsonBlock;
struct JsonBlock {
    JsonBlock* next;
    size_t used, cap;
    Qwen3JsonValue values[]; /* (cap) */
};

struct Qwen3JsonDoc {
    char* text; /* the document's own copy, strings decoded in place; (len + 1) bytes */
    size_t len;
    JsonBlock* blocks;
    Qwen3JsonValue root;
};

typedef struct {
    char* s; /* text, s[len] == '\0' */
    size_t len;
    size_t pos;
    const char* source;
    Qwen3JsonValue* stack; /* children of the containers being parsed; (stack_cap) */
    size_t stack_len, stack_cap;
    Qwen3JsonDoc* doc;
    int failed;
} Parser;

static int fail_at(Parser* p, size_t pos, const char* what) {
    if (!p->failed) {
        qwen3_error_set("%s: invalid JSON at byte %zu: %s", p->source, pos, what);
        p->failed = 1;
    }
    return -1;
}

static Qwen3JsonValue* arena_alloc(Parser* p, size_t n) {
    JsonBlock* b = p->doc->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > JSON_BLOCK_VALUES ? n : JSON_BLOCK_VALUES;
        b = malloc(sizeof *b + cap * sizeof(Qwen3JsonValue));
        if (!b) return NULL;
        b->next = p->doc->blocks;
        b->used = 0;
        b->cap = cap;
        p->doc->blocks = b;
    }
    Qwen3JsonValue* v = b->values + b->used;
    b->used += n;
    return v;
}

static int push(Parser* p, const Qwen3JsonValue* v) {
    if (p->stack_len == p->stack_cap) {
        size_t cap = p->stack_cap ? p->stack_cap * 2 : 1024;
        Qwen3JsonValue* s = realloc(p->stack, cap * sizeof *s);
        if (!s) return fail_at(p, p->pos, "out of memory");
        p->stack = s;
        p->stack_cap = cap;
    }
    p->stack[p->stack_len++] = *v;
    return 0;
}

/* Moves the children pushed since `base` into the arena as one contiguous array. */
static int pop_into(Parser* p, size_t base, Qwen3JsonValue* out) {
    size_t n = p->stack_len - base;
    out->u.items = NULL;
    if (n) {
        Qwen3JsonValue* items = arena_alloc(p, n);
        if (!items) return fail_at(p, p->pos, "out of memory");
        memcpy(items, p->stack + base, n * sizeof *items);
        out->u.items = items;
    }
    p->stack_len = base;
    return 0;
}

static void skip_ws(Parser* p) {
    const char* s = p->s;
    size_t i = p->pos;
    while (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t') i++;
    p->pos = i;
}

static int hex4(const char* s, uint32_t* out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        uint32_t d;
        if (c >= '0' && c <= '9') d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (uint32_t)(c - 'A' + 10);
        else return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* Decodes the string starting at the opening quote in place: the decoded form is never
 * longer than the escaped one, so it is written over it and NUL-terminated. */
static int parse_string(Parser* p, Qwen3JsonValue* out) {
    char* s = p->s;
    size_t r = p->pos + 1, w = r;
    size_t start = r;
    for (;;) {
        unsigned char c = (unsigned char)s[r];
        if (c == '"') break;
        if (c == '\\') {
            size_t at = r;
            char e = s[r + 1];
            r += 2;
            switch (e) {
                case '"': s[w++] = '"'; break;
                case '\\': s[w++] = '\\'; break;
                case '/': s[w++] = '/'; break;
                case 'b': s[w++] = '\b'; break;
                case 'f': s[w++] = '\f'; break;
                case 'n': s[w++] = '\n'; break;
                case 'r': s[w++] = '\r'; break;
                case 't': s[w++] = '\t'; break;
                case 'u': {
                    uint32_t cp;
                    if (r + 4 > p->len || hex4(s + r, &cp)) return fail_at(p, at, "bad \\u escape");
                    r += 4;
                    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail_at(p, at, "lone low surrogate in \\u escape");
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        uint32_t lo;
                        if (r + 6 > p->len || s[r] != '\\' || s[r + 1] != 'u' || hex4(s + r + 2, &lo) ||
                            lo < 0xDC00 || lo > 0xDFFF)
                            return fail_at(p, at, "high surrogate not followed by a low surrogate");
                        r += 6;
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    uint8_t buf[4];
                    size_t n = qwen3_utf8_encode(cp, buf);
                    memcpy(s + w, buf, n);
                    w += n;
                    break;
                }
                default: return fail_at(p, at, "unknown escape");
            }
            continue;
        }
        if (c < 0x20) {
            if (r >= p->len) return fail_at(p, p->pos, "unterminated string");
            return fail_at(p, r, "control character in string");
        }
        if (c < 0x80) {
            s[w++] = (char)c;
            r++;
            continue;
        }
        uint32_t cp;
        size_t n = qwen3_utf8_decode((const uint8_t*)s + r, p->len - r, &cp);
        if (cp >= QWEN3_UC_INVALID_BASE) return fail_at(p, r, "invalid UTF-8 in string");
        memmove(s + w, s + r, n);
        w += n;
        r += n;
    }
    if (w - start > UINT32_MAX) return fail_at(p, start, "string longer than 4 GiB");
    s[w] = '\0';
    out->type = QWEN3_JSON_STRING;
    out->len = (uint32_t)(w - start);
    out->u.str = s + start;
    p->pos = r + 1;
    return 0;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Integers up to 2^53 and decimals with up to 19 significant digits and small exponents
 * are exact; anything else is within a few ulps (no locale-dependent strtod). */
static int parse_number(Parser* p, Qwen3JsonValue* out) {
    const char* s = p->s;
    size_t i = p->pos;
    int neg = 0;
    if (s[i] == '-') {
        neg = 1;
        i++;
    }
    uint64_t mant = 0;
    int digits = 0;
    long exp10 = 0;
    if (s[i] == '0') {
        i++;
        if (is_digit(s[i])) return fail_at(p, p->pos, "leading zero in number");
    } else if (is_digit(s[i])) {
        while (is_digit(s[i])) {
            if (digits < 19) {
                mant = mant * 10 + (uint64_t)(s[i] - '0');
                if (mant) digits++;
            } else {
                exp10++;
            }
            i++;
        }
    } else {
        return fail_at(p, p->pos, "bad number");
    }
    if (s[i] == '.') {
        i++;
        if (!is_digit(s[i])) return fail_at(p, i, "digit expected after decimal point");
        while (is_digit(s[i])) {
            if (digits < 19) {
                mant = mant * 10 + (uint64_t)(s[i] - '0');
                if (mant) digits++;
                exp10--;
            }
            i++;
        }
    }
    if (s[i] == 'e' || s[i] == 'E') {
        i++;
        int eneg = 0;
        if (s[i] == '+' || s[i] == '-') eneg = s[i++] == '-';
        if (!is_digit(s[i])) return fail_at(p, i, "digit expected in exponent");
        long e = 0;
        while (is_digit(s[i])) {
            if (e < 100000) e = e * 10 + (s[i] - '0');
            i++;
        }
        exp10 += eneg ? -e : e;
    }
    static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                           1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                           1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    double v = (double)mant;
    if (mant == 0) {
        v = 0.0;
    } else if (exp10 >= 0 && exp10 <= 22) {
        v *= pow10_exact[exp10];
    } else if (exp10 < 0 && exp10 >= -22) {
        v /= pow10_exact[-exp10];
    } else {
        v = (double)((long double)mant * powl(10.0L, (long double)exp10));
    }
    out->type = QWEN3_JSON_NUMBER;
    out->len = 0;
    out->u.num = neg ? -v : v;
    p->pos = i;
    return 0;
}

static int parse_value(Parser* p, Qwen3JsonValue* out, int depth);

static int parse_container(Parser* p, Qwen3JsonValue* out, int depth, int object) {
    if (depth >= QWEN3_JSON_MAX_DEPTH) return fail_at(p, p->pos, "nesting deeper than 256 levels");
    char close = object ? '}' : ']';
    size_t base = p->stack_len;
    size_t count = 0;
    p->pos++;
    skip_ws(p);
    if (p->s[p->pos] == close) {
        p->pos++;
    } else {
        for (;;) {
            Qwen3JsonValue v;
            if (object) {
                if (p->s[p->pos] != '"') return fail_at(p, p->pos, "object key (a string) expected");
                if (parse_string(p, &v) || push(p, &v)) return -1;
                skip_ws(p);
                if (p->s[p->pos] != ':') return fail_at(p, p->pos, "':' expected after object key");
                p->pos++;
                skip_ws(p);
            }
            if (parse_value(p, &v, depth + 1) || push(p, &v)) return -1;
            count++;
            skip_ws(p);
            char c = p->s[p->pos];
            if (c == ',') {
                p->pos++;
                skip_ws(p);
                continue;
            }
            if (c == close) {
                p->pos++;
                break;
            }
            return fail_at(p, p->pos, object ? "',' or '}' expected" : "',' or ']' expected");
        }
    }
    if (count > UINT32_MAX) return fail_at(p, p->pos, "container with more than 2^32 items");
    out->type = object ? QWEN3_JSON_OBJECT : QWEN3_JSON_ARRAY;
    out->len = (uint32_t)count;
    return pop_into(p, base, out);
}

static int parse_literal(Parser* p, const char* word, Qwen3JsonType type, Qwen3JsonValue* out) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) return fail_at(p, p->pos, "unexpected character");
    p->pos += n;
    out->type = type;
    out->len = 0;
    out->u.num = 0;
    return 0;
}

static int parse_value(Parser* p, Qwen3JsonValue* out, int depth) {
    if (p->pos >= p->len) return fail_at(p, p->pos, "unexpected end of input");
    switch (p->s[p->pos]) {
        case '{': return parse_container(p, out, depth, 1);
        case '[': return parse_container(p, out, depth, 0);
        case '"': return parse_string(p, out);
        case 't': return parse_literal(p, "true", QWEN3_JSON_TRUE, out);
        case 'f': return parse_literal(p, "false", QWEN3_JSON_FALSE, out);
        case 'n': return parse_literal(p, "null", QWEN3_JSON_NULL, out);
        default:
            if (p->s[p->pos] == '-' || is_digit(p->s[p->pos])) return parse_number(p, out);
            return fail_at(p, p->pos, "unexpected character");
    }
}

void qwen3_json_free(Qwen3JsonDoc* doc) {
    if (!doc) return;
    JsonBlock* b = doc->blocks;
    while (b) {
        JsonBlock* next = b->next;
        free(b);
        b = next;
    }
    free(doc->text);
    free(doc);
}

/* Parses text (malloc'd, len + 1 bytes, text[len] == '\0'); the document takes it over. */
static Qwen3JsonDoc* parse_owned(char* text, size_t len, const char* source) {
    Qwen3JsonDoc* doc = calloc(1, sizeof *doc);
    if (!doc) {
        free(text);
        qwen3_error_set("%s: out of memory parsing JSON", source);
        return NULL;
    }
    doc->text = text;
    doc->len = len;
    Parser p = {.s = text, .len = len, .source = source, .doc = doc};
    skip_ws(&p);
    int rc = parse_value(&p, &doc->root, 0);
    if (rc == 0) {
        skip_ws(&p);
        if (p.pos != len) rc = fail_at(&p, p.pos, "trailing characters after the JSON value");
    }
    free(p.stack);
    if (rc != 0) {
        qwen3_json_free(doc);
        return NULL;
    }
    return doc;
}

Qwen3JsonDoc* qwen3_json_parse(const char* text, size_t len, const char* source) {
    if (!source) source = "JSON";
    if (!text && len) {
        qwen3_error_set("%s: NULL text", source);
        return NULL;
    }
    char* copy = malloc(len + 1);
    if (!copy) {
        qwen3_error_set("%s: out of memory copying %zu bytes of JSON", source, len);
        return NULL;
    }
    if (len) memcpy(copy, text, len);
    copy[len] = '\0';
    return parse_owned(copy, len, source);
}

Qwen3JsonDoc* qwen3_json_load_file(const char* path, size_t max_bytes) {
    if (!path) {
        qwen3_error_set("JSON file path is NULL");
        return NULL;
    }
    char* buf = NULL;
    size_t len = 0;
    if (qwen3_file_read_all(path, max_bytes, &buf, &len) != QWEN3_OK) return NULL;
    return parse_owned(buf, len, path);
}

const Qwen3JsonValue* qwen3_json_root(const Qwen3JsonDoc* doc) { return doc ? &doc->root : NULL; }

const Qwen3JsonValue* qwen3_json_get(const Qwen3JsonValue* v, const char* key) {
    if (!v || v->type != QWEN3_JSON_OBJECT || !key) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < v->len; i++) {
        const Qwen3JsonValue* k = &v->u.items[2 * (size_t)i];
        if (k->len == n && memcmp(k->u.str, key, n) == 0) return k + 1;
    }
    return NULL;
}

const Qwen3JsonValue* qwen3_json_at(const Qwen3JsonValue* v, size_t i) {
    if (!v || v->type != QWEN3_JSON_ARRAY || i >= v->len) return NULL;
    return &v->u.items[i];
}

const Qwen3JsonValue* qwen3_json_get_type(const Qwen3JsonValue* v, const char* key, Qwen3JsonType type) {
    const Qwen3JsonValue* m = qwen3_json_get(v, key);
    return m && m->type == (uint32_t)type ? m : NULL;
}

int qwen3_json_int(const Qwen3JsonValue* v, int64_t lo, int64_t hi, int64_t* out) {
    if (!v || v->type != QWEN3_JSON_NUMBER) return 0;
    double d = v->u.num;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) return 0;
    *out = (int64_t)d;
    return 1;
}
