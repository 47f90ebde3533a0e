/* test_model.c - the checkpoint loader: both layouts accepted, every kind of bad header
 * or side file rejected with a message naming the problem, and no crash on fuzzed input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "qwen3_inference.h"
#include "test_util.h"

/* A small vocabulary with a byte-level `.tokenizer` (259 tokens), so loads stay fast. */
#define SMALL_VOCAB 512

static TuSpec small_vocab_spec(uint32_t format) {
    TuSpec s = tu_small_spec();
    s.format = format;
    s.vocab_size = SMALL_VOCAB;
    return s;
}

/* Writes dir/name with the checkpoint of `s` plus its byte tokenizer. */
static int make_small_model(const char* dir, const char* name, const TuSpec* s, char* path,
                            size_t cap) {
    snprintf(path, cap, "%s/%s", dir, name);
    char tok[1100];
    snprintf(tok, sizeof tok, "%s.tokenizer", path);
    return tu_write_checkpoint(path, s) && tu_write_byte_tokenizer(tok);
}

/* ------------------------------------------------------------------------------------
 * Header parsing in memory
 * ---------------------------------------------------------------------------------- */

/* Parses a header as if the file had `size` bytes. */
static int32_t parse(const uint8_t* header, uint64_t size, Qwen3Header* out) {
    return qwen3_header_parse(header, size, "test.bin", out);
}

static void set_field(const TuSpec* s, uint8_t* header, int field, uint32_t value) {
    tu_put_u32(header + tu_field_offset(s, field), value);
}

static void test_header_valid(void) {
    for (uint32_t format = QWEN3_FORMAT_QWEN3C; format <= QWEN3_FORMAT_QWEN3RS; format++) {
        TuSpec s = tu_small_spec();
        s.format = format;
        s.shared_classifier = format == QWEN3_FORMAT_QWEN3C ? 1 : 0;
        uint8_t h[256];
        tu_header(&s, h);
        Qwen3Header out;
        int32_t rc = parse(h, tu_file_size(&s), &out);
        CHECK(rc == QWEN3_OK, "format %u: rc %d (%s)", format, rc, qwen3_get_last_error());
        CHECK(out.format == format, "format %u detected as %u", format, out.format);
        CHECK(out.dim == s.dim && out.hidden_dim == s.hidden_dim && out.n_layers == s.n_layers &&
                  out.n_heads == s.n_heads && out.n_kv_heads == s.n_kv_heads &&
                  out.vocab_size == s.vocab_size && out.seq_len == s.seq_len &&
                  out.head_dim == s.head_dim && out.group_size == s.group_size &&
                  out.shared_classifier == s.shared_classifier,
              "format %u: fields differ", format);
        CHECK(out.file_size == tu_file_size(&s), "file_size %llu",
              (unsigned long long)out.file_size);
    }
}

/* One header mutation and the words its error must contain. */
static void expect_reject(const char* what, const TuSpec* s, int field, uint32_t value,
                          int32_t status, const char* needle) {
    uint8_t h[256];
    tu_header(s, h);
    if (field >= 0) set_field(s, h, field, value);
    Qwen3Header out;
    int32_t rc = parse(h, tu_file_size(s), &out);
    CHECK(rc == status, "%s: rc %d, expected %d (%s)", what, rc, status, qwen3_get_last_error());
    CHECK_ERROR_HAS(needle);
    CHECK_ERROR_HAS("test.bin");
}

static void test_header_rejections(void) {
    static const char* const names[10] = {"dim",     "hidden_dim", "n_layers", "n_heads",
                                          "n_kv_heads", "vocab_size", "seq_len", "head_dim",
                                          "shared_classifier", "group_size"};
    for (uint32_t format = QWEN3_FORMAT_QWEN3C; format <= QWEN3_FORMAT_QWEN3RS; format++) {
        TuSpec s = tu_small_spec();
        s.format = format;
        char what[128];
        for (int i = 0; i < 10; i++) {
            if (i == 8) continue;
            snprintf(what, sizeof what, "%s = 0", names[i]);
            expect_reject(what, &s, i, 0, QWEN3_ERR_FORMAT, names[i]);
            snprintf(what, sizeof what, "%s = -5", names[i]);
            expect_reject(what, &s, i, (uint32_t)-5, QWEN3_ERR_FORMAT, "must be positive");
            snprintf(what, sizeof what, "%s = 2^31-1", names[i]);
            expect_reject(what, &s, i, 0x7FFFFFFFu, QWEN3_ERR_FORMAT, "exceeds the limit");
        }
        expect_reject("shared_classifier 2", &s, 8, 2, QWEN3_ERR_FORMAT, "0 or 1");
        expect_reject("n_kv_heads 3", &s, 4, 3, QWEN3_ERR_FORMAT, "not a multiple of n_kv_heads");
        expect_reject("group_size 48", &s, 9, 48, QWEN3_ERR_FORMAT, "does not divide dim");
        expect_reject("hidden_dim 200", &s, 1, 200, QWEN3_ERR_FORMAT, "does not divide hidden_dim");
        expect_reject("head_dim 33", &s, 7, 33, QWEN3_ERR_FORMAT, "even");
        /* a header that is valid on its own but describes another file */
        expect_reject("dim 128", &s, 0, 128, QWEN3_ERR_FORMAT, "header implies");
        expect_reject("vocab 10^6", &s, 5, 1000000, QWEN3_ERR_FORMAT, "truncated");
        expect_reject("n_layers 4000", &s, 2, 4000, QWEN3_ERR_FORMAT, "n_layers 4000");
    }

    TuSpec s = tu_small_spec();
    uint8_t h[256];
    Qwen3Header out;
    tu_header(&s, h);
    tu_put_u32(h, 0x46554747u); /* "GGUF" */
    CHECK(parse(h, tu_file_size(&s), &out) == QWEN3_ERR_FORMAT, "wrong magic accepted");
    CHECK_ERROR_HAS("magic is 0x46554747");
    tu_header(&s, h);
    tu_put_u32(h + 4, 3);
    CHECK(parse(h, tu_file_size(&s), &out) == QWEN3_ERR_FORMAT, "version 3 accepted");
    CHECK_ERROR_HAS("version = 3, expected 1 (dense) or 2 (Qwen3-MoE)");
    tu_header(&s, h);
    tu_put_u32(h + 4, 2); /* a dense header read as a Qwen3-MoE one: no experts */
    CHECK(parse(h, tu_file_size(&s), &out) == QWEN3_ERR_FORMAT, "dense header as version 2 accepted");
    CHECK_ERROR_HAS("n_experts = 0 is not in 1..1024");

    tu_header(&s, h);
    CHECK(parse(h, tu_file_size(&s) + 1, &out) == QWEN3_ERR_FORMAT, "one byte too many accepted");
    CHECK_ERROR_HAS("longer than its header says");
    char expected[64];
    snprintf(expected, sizeof expected, "implies %llu", (unsigned long long)tu_file_size(&s));
    CHECK_ERROR_HAS(expected);
    CHECK(parse(h, tu_file_size(&s) - 1, &out) == QWEN3_ERR_FORMAT, "one byte short accepted");
    CHECK_ERROR_HAS("truncated");
    CHECK(parse(h, 100, &out) == QWEN3_ERR_FORMAT, "100-byte file accepted");
    CHECK_ERROR_HAS("shorter than the 256-byte");
    CHECK(parse(NULL, 0, &out) == QWEN3_ERR_FORMAT, "empty file accepted");

    TuSpec rs = tu_small_spec();
    rs.format = QWEN3_FORMAT_QWEN3RS;
    tu_header(&rs, h);
    tu_put_u32(h + 8, 2);
    CHECK(parse(h, tu_file_size(&rs), &out) == QWEN3_ERR_UNSUPPORTED, "Llama architecture accepted");
    CHECK_ERROR_HAS("LlamaForCausalLM");
}

/* Random header bytes must never crash the parser nor pass with a wrong size. */
static void test_header_fuzz(void) {
    uint64_t rng = 99;
    TuSpec s = tu_small_spec();
    const uint64_t size = tu_file_size(&s);
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        uint8_t h[256];
        tu_header(&s, h);
        int flips = 1 + (int)(tu_next(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            uint32_t at = (uint32_t)(tu_next(&rng) % 52);
            h[at] = (uint8_t)tu_next(&rng);
        }
        Qwen3Header out;
        int32_t rc = parse(h, size, &out);
        if (rc == QWEN3_OK) {
            accepted++;
            CHECK(out.file_size == size, "accepted a header implying %llu bytes",
                  (unsigned long long)out.file_size);
        } else {
            CHECK(qwen3_get_last_error()[0] != '\0', "rc %d with an empty message", rc);
        }
    }
    CHECK(accepted < 20000, "every mutation accepted");
}

/* A Qwen3-MoE (version 2) header for the small spec: 8 experts, top 2, width 32, block 0
 * sparse and block 1 dense (docs/formats.md#qwen3-moe-checkpoint), and the size it implies,
 * worked out here apart from the loader's formula. */
static uint64_t moe_header(const TuSpec* s, uint8_t h[256]) {
    tu_header(s, h);
    tu_put_u32(h + 4, 2);
    tu_put_u32(h + 48, 8);
    tu_put_u32(h + 52, 2);
    tu_put_u32(h + 56, 32);
    tu_put_u32(h + 60, 1);
    h[128] = 0x01;
    const uint64_t gs = s->group_size, dim = s->dim;
    const uint64_t dense_ffn = 2 * tu_q8_bytes(s->hidden_dim, dim, gs) + tu_q8_bytes(dim, s->hidden_dim, gs);
    const uint64_t experts = 4 * 8 * dim + 8 * (2 * tu_q8_bytes(32, dim, gs) + tu_q8_bytes(dim, 32, gs));
    return tu_file_size(s) - dense_ffn + experts; /* block 0 has experts instead of w1..w3 */
}

static void test_header_moe(void) {
    TuSpec s = tu_small_spec();
    uint8_t h[256];
    Qwen3Header out;
    const uint64_t size = moe_header(&s, h);
    int32_t rc = parse(h, size, &out);
    CHECK(rc == QWEN3_OK, "version 2: rc %d (%s)", rc, qwen3_get_last_error());
    CHECK(out.version == 2 && out.moe.n_experts == 8 && out.moe.n_used == 2 && out.moe.hidden_dim == 32 &&
              out.moe.norm_weights == 1 && out.sparse[0] == 1 && out.file_size == size,
          "version 2 fields: %u %u %u %u %u %u", out.version, out.moe.n_experts, out.moe.n_used,
          out.moe.hidden_dim, out.moe.norm_weights, out.sparse[0]);
    static const struct {
        uint32_t at, value; /* a u32 written at `at` (value > 255 never goes to the bitmap) */
        int64_t size_delta;
        const char* needle;
    } cases[] = {
        {0, 0, -1, "the header implies"},
        {0, 0, +1, "longer than its header says"},
        {48, 0, 0, "header field n_experts = 0 is not in 1..1024"},
        {48, 1025, 0, "header field n_experts = 1025 is not in 1..1024"},
        {52, 9, 0, "header field n_experts_used = 9 is not in 1..8"},
        {56, 0x80000000u, 0, "header field expert_hidden_dim = -2147483648 is not in 1..262144"},
        {56, 48, 0, "group_size 32 does not divide expert_hidden_dim = 48"},
        {60, 2, 0, "header field norm_topk_prob = 2 must be 0 or 1"},
        {100, 1, 0, "header byte 100 is 1, must be 0 (reserved)"},
        {128, 0, 0, "no block is marked sparse"},
        {128, 0x05, 0, "sparse-block bit 2 is set but the model has 2 blocks"},
        {252, 0x80000000u, 0, "sparse-block bit 1023 is set"},
        {128, 0x03, 0, "the file is truncated"}, /* block 1's experts are not there */
        {16, 1025, 0, "header field n_layers = 1025 exceeds the limit of 1024"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moe_header(&s, h);
        if (cases[i].at) tu_put_u32(h + cases[i].at, cases[i].value);
        rc = parse(h, (uint64_t)((int64_t)size + cases[i].size_delta), &out);
        CHECK(rc == QWEN3_ERR_FORMAT, "case %zu accepted (rc %d)", i, rc);
        CHECK_ERROR_HAS(cases[i].needle);
        CHECK_ERROR_HAS("qwen3.c layout, version 2 (Qwen3-MoE)");
        CHECK(out.moe.n_experts == 0, "case %zu: header left filled after a rejection", i);
    }
    /* a version 1 header of the same shape stays dense */
    tu_header(&s, h);
    CHECK(parse(h, tu_file_size(&s), &out) == QWEN3_OK && out.moe.n_experts == 0 && out.version == 1,
          "version 1 read as MoE");
}

static void test_templates_validation(void) {
    CHECK(qwen3_template_validate("a %s b", 1, "t") == QWEN3_OK, "one slot rejected");
    CHECK(qwen3_template_validate("100%% %s", 1, "t") == QWEN3_OK, "%%%% rejected");
    CHECK(qwen3_template_validate("%s and %s", 2, "t") == QWEN3_OK, "two slots rejected");
    CHECK(qwen3_template_validate("%s and %s", 1, "t") == QWEN3_ERR_FORMAT, "extra slot accepted");
    CHECK_ERROR_HAS("has 2 %s placeholders, expected 1");
    CHECK(qwen3_template_validate("no slot", 1, "t") == QWEN3_ERR_FORMAT, "no slot accepted");
    CHECK(qwen3_template_validate("%s %d", 1, "t") == QWEN3_ERR_FORMAT, "%%d accepted");
    CHECK_ERROR_HAS("'%d' at byte 3");
    CHECK(qwen3_template_validate("%s %n", 1, "t") == QWEN3_ERR_FORMAT, "%%n accepted");
    CHECK(qwen3_template_validate("%s %", 1, "t") == QWEN3_ERR_FORMAT, "a lone %% accepted");
    for (uint32_t k = 0; k < QWEN3_TEMPLATE_COUNT; k++) {
        CHECK(qwen3_template_validate(qwen3_template_stock(k), k < 2 ? 1 : 2, "stock") == QWEN3_OK,
              "stock template %u invalid", k);
    }
    CHECK(strcmp(qwen3_template_stock(0),
                 "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n") ==
              0,
          "stock plain template: %s", qwen3_template_stock(0));
    CHECK(strcmp(qwen3_template_stock(3),
                 "<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
                 "<|im_start|>assistant\n") == 0,
          "stock system+thinking template: %s", qwen3_template_stock(3));
}

/* ------------------------------------------------------------------------------------
 * Loading files
 * ---------------------------------------------------------------------------------- */

static void test_load_layouts(const char* dir) {
    for (uint32_t format = QWEN3_FORMAT_QWEN3C; format <= QWEN3_FORMAT_QWEN3RS; format++) {
        for (uint32_t shared = 0; shared <= 1; shared++) {
            TuSpec s = small_vocab_spec(format);
            s.shared_classifier = shared;
            s.group_size = shared ? 64 : 32;
            char name[64], path[1100];
            snprintf(name, sizeof name, "layout%u_%u.bin", format, shared);
            CHECK(make_small_model(dir, name, &s, path, sizeof path), "cannot write %s", name);
            Qwen3Model* m = qwen3_model_load(path, 0);
            CHECK(m != NULL, "%s: %s", name, qwen3_get_last_error());
            if (!m) continue;
            const Qwen3ModelConfig* c = qwen3_model_get_config(m);
            CHECK(c->dim == 64 && c->hidden_dim == 192 && c->n_layers == 2 && c->n_heads == 4 &&
                      c->n_kv_heads == 2 && c->vocab_size == SMALL_VOCAB && c->max_seq_len == 256,
                  "%s: config differs", name);
            CHECK(c->rope_theta == 1e6f, "rope_theta %g", (double)c->rope_theta);
            Qwen3ModelInfo info;
            CHECK(qwen3_model_get_info(m, &info) == QWEN3_OK, "get_info");
            CHECK(info.format == format, "%s: format %u", name, info.format);
            CHECK(info.shared_classifier == shared, "%s: shared %u", name, info.shared_classifier);
            CHECK(info.group_size == s.group_size && info.head_dim == 32 && info.file_seq_len == 256,
                  "%s: info fields", name);
            CHECK(info.file_size == tu_file_size(&s), "%s: file_size", name);
            CHECK(info.n_tokens == 259 && info.exact_tokenizer == 0, "%s: tokenizer %u %u", name,
                  info.n_tokens, info.exact_tokenizer);
            CHECK(info.eos_id == 256 && info.im_start_id == 257 && info.im_end_id == 258 &&
                      info.think_id == -1 && info.end_think_id == -1,
                  "%s: special ids %d %d %d %d", name, info.eos_id, info.im_start_id,
                  info.im_end_id, info.think_id);
            CHECK(info.rms_eps == 1e-6f, "rms_eps");
            /* the embedding stays in the file map: the model owns far less than the file */
            const uint8_t* embed = (const uint8_t*)m->weights.embed.q8.q;
            CHECK(embed >= m->map.data && embed < m->map.data + m->map.size,
                  "%s: embedding not a view into the map", name);
            CHECK(shared ? m->weights.classifier.q8.q == m->weights.embed.q8.q
                         : m->weights.classifier.q8.q != m->weights.embed.q8.q,
                  "%s: classifier tying", name);
            qwen3_model_free(m);

            m = qwen3_model_load(path, 100);
            CHECK(m && qwen3_model_get_config(m)->max_seq_len == 100, "ctx_length 100 not applied");
            qwen3_model_free(m);
            m = qwen3_model_load(path, 100000);
            CHECK(m && qwen3_model_get_config(m)->max_seq_len == 256, "ctx_length not clamped");
            qwen3_model_free(m);
        }
    }
}

static void test_load_failures(const char* dir) {
    char path[1100], other[1100];
    snprintf(path, sizeof path, "%s/does-not-exist.bin", dir);
    CHECK(qwen3_model_load(path, 0) == NULL, "missing file loaded");
    CHECK_ERROR_HAS("does-not-exist.bin");
    CHECK_ERROR_HAS("cannot open");
    CHECK(qwen3_model_load(NULL, 0) == NULL, "NULL path loaded");
    CHECK_ERROR_HAS("NULL");
    CHECK(qwen3_model_load(dir, 0) == NULL, "a folder loaded");
    CHECK(qwen3_get_last_error()[0] != '\0', "no message for a folder");

    snprintf(path, sizeof path, "%s/empty.bin", dir);
    CHECK(tu_write_file(path, "", 0), "write");
    CHECK(qwen3_model_load(path, 0) == NULL, "empty file loaded");
    CHECK_ERROR_HAS("shorter than the 256-byte");

    /* a good model, then damaged copies of it */
    TuSpec s = small_vocab_spec(QWEN3_FORMAT_QWEN3C);
    CHECK(make_small_model(dir, "good.bin", &s, path, sizeof path), "write good.bin");
    size_t len = 0;
    char* data = tu_read_file(path, &len);
    CHECK(data && len == tu_file_size(&s), "good.bin size %zu", len);
    if (!data) return;

    CHECK(make_small_model(dir, "truncated.bin", &s, other, sizeof other), "write");
    CHECK(tu_write_file(other, data, len - 1000), "write");
    CHECK(qwen3_model_load(other, 0) == NULL, "truncated file loaded");
    CHECK_ERROR_HAS("truncated.bin");
    CHECK_ERROR_HAS("truncated");

    CHECK(make_small_model(dir, "long.bin", &s, other, sizeof other), "write");
    char* longer = (char*)malloc(len + 7);
    memcpy(longer, data, len);
    memset(longer + len, 0, 7);
    CHECK(tu_write_file(other, longer, len + 7), "write");
    free(longer);
    CHECK(qwen3_model_load(other, 0) == NULL, "longer file loaded");
    CHECK_ERROR_HAS("longer than its header says");

    CHECK(make_small_model(dir, "magic.bin", &s, other, sizeof other), "write");
    data[0] = 'G';
    CHECK(tu_write_file(other, data, len), "write");
    CHECK(qwen3_model_load(other, 0) == NULL, "wrong magic loaded");
    CHECK_ERROR_HAS("magic.bin: magic is");
    data[0] = 0x31;

    CHECK(make_small_model(dir, "heads.bin", &s, other, sizeof other), "write");
    tu_put_u32((uint8_t*)data + tu_field_offset(&s, 4), 3);
    CHECK(tu_write_file(other, data, len), "write");
    CHECK(qwen3_model_load(other, 0) == NULL, "n_heads %% n_kv_heads != 0 loaded");
    CHECK_ERROR_HAS("n_heads 4 is not a multiple of n_kv_heads 3");
    free(data);

    /* no tokenizer at all: the three candidate paths are named */
    snprintf(path, sizeof path, "%s/notok.bin", dir);
    CHECK(tu_write_checkpoint(path, &s), "write");
    CHECK(qwen3_model_load(path, 0) == NULL, "model without tokenizer loaded");
    CHECK_ERROR_HAS("no tokenizer");
    CHECK_ERROR_HAS("notok.bin.tokenizer.json, ");
    CHECK_ERROR_HAS("/tokenizer.json, ");
    CHECK_ERROR_HAS("notok.bin.tokenizer exists");

    /* a tokenizer with more tokens than embedding rows */
    TuSpec tiny = s;
    tiny.vocab_size = 200;
    CHECK(make_small_model(dir, "tiny.bin", &tiny, path, sizeof path), "write");
    CHECK(qwen3_model_load(path, 0) == NULL, "tokenizer larger than the vocabulary loaded");
    CHECK_ERROR_HAS("more than the model's vocab_size 200");
}

static void test_template_files(const char* dir) {
    TuSpec s = small_vocab_spec(QWEN3_FORMAT_QWEN3C);
    char path[1100], file[1200];
    CHECK(make_small_model(dir, "tmpl.bin", &s, path, sizeof path), "write");

    Qwen3Model* m = qwen3_model_load(path, 0);
    CHECK(m != NULL, "load: %s", qwen3_get_last_error());
    for (uint32_t k = 0; m && k < 4; k++) {
        CHECK(strcmp(qwen3_model_get_template(m, k), qwen3_template_stock(k)) == 0,
              "kind %u is not the stock template", k);
    }
    CHECK(m && qwen3_model_get_template(m, 4) == NULL, "kind 4 accepted");
    qwen3_model_free(m);

    snprintf(file, sizeof file, "%s.template", path);
    CHECK(tu_write_file(file, "U:%s:100%%", 10), "write");
    snprintf(file, sizeof file, "%s.template.with-system-and-thinking", path);
    CHECK(tu_write_file(file, "S:%s U:%s", 9), "write");
    m = qwen3_model_load(path, 0);
    CHECK(m != NULL, "load with templates: %s", qwen3_get_last_error());
    if (m) {
        CHECK(strcmp(qwen3_model_get_template(m, 0), "U:%s:100%%") == 0, "template file not read");
        CHECK(strcmp(qwen3_model_get_template(m, 3), "S:%s U:%s") == 0, "template file not read");
        CHECK(strcmp(qwen3_model_get_template(m, 1), qwen3_template_stock(1)) == 0,
              "missing file did not fall back to stock");
    }
    qwen3_model_free(m);

    snprintf(file, sizeof file, "%s.template.with-thinking", path);
    CHECK(tu_write_file(file, "%s %x", 5), "write");
    CHECK(qwen3_model_load(path, 0) == NULL, "template with %%x loaded");
    CHECK_ERROR_HAS("tmpl.bin.template.with-thinking");
    CHECK_ERROR_HAS("'%x'");
    CHECK(tu_write_file(file, "%s %s", 5), "write");
    CHECK(qwen3_model_load(path, 0) == NULL, "user template with two slots loaded");
    CHECK_ERROR_HAS("expected 1");
}

/* A Hugging Face tokenizer.json with `n_extra` + 2 tokens ("a", "b", then "ab", "abb"...
 * made by merges), so which file was loaded shows in the token count. */
static int write_tiny_json(const char* path, int n_extra) {
    char text[512] = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1";
    char merges[256] = "";
    char token[16] = "a";
    for (int i = 0; i < n_extra; i++) {
        char entry[64];
        snprintf(entry, sizeof entry, ", \"%sb\": %d", token, i + 2);
        strcat(text, entry);
        snprintf(entry, sizeof entry, "%s\"%s b\"", i ? ", " : "", token);
        strcat(merges, entry);
        strcat(token, "b");
    }
    strcat(text, "}, \"merges\": [");
    strcat(text, merges);
    strcat(text, "]}}");
    return tu_write_file(path, text, strlen(text));
}

static uint32_t loaded_tokens(const char* path) {
    Qwen3Model* m = qwen3_model_load(path, 0);
    CHECK(m != NULL, "load %s: %s", path, qwen3_get_last_error());
    if (!m) return 0;
    Qwen3ModelInfo info;
    qwen3_model_get_info(m, &info);
    qwen3_model_free(m);
    return info.n_tokens;
}

/* The tokenizer is the first of <model>.tokenizer.json, tokenizer.json in the folder and
 * <model>.tokenizer that exists: two models in one folder each get their own. */
static void test_tokenizer_order(const char* dir) {
    TuSpec s = small_vocab_spec(QWEN3_FORMAT_QWEN3C);
    char a[1100], b[1100], named_a[1200], named_b[1200], folder[1200], bin_a[1200];
    CHECK(make_small_model(dir, "order_a.bin", &s, a, sizeof a), "write order_a.bin");
    CHECK(make_small_model(dir, "order_b.bin", &s, b, sizeof b), "write order_b.bin");
    snprintf(named_a, sizeof named_a, "%s.tokenizer.json", a);
    snprintf(named_b, sizeof named_b, "%s.tokenizer.json", b);
    snprintf(folder, sizeof folder, "%s/tokenizer.json", dir);
    snprintf(bin_a, sizeof bin_a, "%s.tokenizer", a);
    CHECK(write_tiny_json(named_a, 1) && write_tiny_json(named_b, 2) &&
              write_tiny_json(folder, 3),
          "write tokenizer.json files");
    CHECK(loaded_tokens(a) == 3, "order_a.bin did not take order_a.bin.tokenizer.json");
    CHECK(loaded_tokens(b) == 4, "order_b.bin did not take order_b.bin.tokenizer.json");
    remove(named_a);
    CHECK(loaded_tokens(a) == 5, "without its own, order_a.bin did not take tokenizer.json");
    remove(folder);
    CHECK(loaded_tokens(a) == 259, "without JSON, order_a.bin did not take its .tokenizer");
    remove(bin_a);
    CHECK(qwen3_model_load(a, 0) == NULL, "order_a.bin loaded without a tokenizer");
    CHECK_ERROR_HAS("no tokenizer found");
    remove(named_b);
    snprintf(bin_a, sizeof bin_a, "%s.tokenizer", b);
    remove(bin_a);
    remove(a);
    remove(b);
}

/* Random corruption of whole files: a clean error or a model, never a crash. */
static void test_file_fuzz(const char* dir) {
    TuSpec s = small_vocab_spec(QWEN3_FORMAT_QWEN3RS);
    char path[1100];
    CHECK(make_small_model(dir, "fuzz.bin", &s, path, sizeof path), "write");
    size_t len = 0;
    char* good = tu_read_file(path, &len);
    if (!good) return;
    uint64_t rng = 7;
    int loaded = 0;
    for (int iter = 0; iter < 60; iter++) {
        char* data = (char*)malloc(len);
        memcpy(data, good, len);
        size_t n = len;
        if (iter % 3 == 0) n = (size_t)(tu_next(&rng) % len); /* truncation anywhere */
        for (int k = 0; k < 4; k++) data[tu_next(&rng) % 64] = (char)tu_next(&rng);
        CHECK(tu_write_file(path, data, n), "write");
        free(data);
        Qwen3Model* m = qwen3_model_load(path, 0);
        if (m) {
            loaded++;
            qwen3_model_free(m);
        } else {
            CHECK(strstr(qwen3_get_last_error(), "fuzz.bin") != NULL, "message lacks the file: %s",
                  qwen3_get_last_error());
        }
    }
    CHECK(loaded < 60, "every corrupted file loaded");
    free(good);
}

/* A checkpoint over 4 MiB is read into huge pages on Linux (platform.h,
 * qwen3_file_map_to_huge_pages) unless QWEN3_MMAP is set: both loads must give the same
 * logits, and the copy must happen where the machine offers huge pages. */
static void test_huge_pages(const char* dir) {
#if defined(_WIN32)
    (void)dir;
    printf("huge pages: skipped (Linux only)\n");
#else
    char path[1200];
    snprintf(path, sizeof path, "%s/huge.bin", dir);
    TuSpec s = tu_small_spec(); /* the 151936-row embedding makes it ~10 MB */
    CHECK(tu_write_checkpoint(path, &s) && tu_install_tokenizer(dir), "write %s", path);
    const int32_t tokens[5] = {9707, 11, 1879, 0, 151643};
    float* logits[2] = {NULL, NULL};
    int copied[2] = {0, 0};
    const char* old = getenv("QWEN3_MMAP");
    char* saved = old ? strdup(old) : NULL;
    for (int i = 0; i < 2; i++) {
        if (i == 0) {
            unsetenv("QWEN3_MMAP");
        } else {
            setenv("QWEN3_MMAP", "1", 1);
        }
        Qwen3Model* m = qwen3_model_load(path, 64);
        CHECK(m != NULL, "load %s (QWEN3_MMAP %s): %s", path, i ? "set" : "unset", qwen3_get_last_error());
        if (!m) continue;
        copied[i] = m->map.copy_size != 0;
        Qwen3Context* c = qwen3_context_new(m, 64);
        CHECK(c != NULL, "context: %s", qwen3_get_last_error());
        if (c && qwen3_context_prefill(c, tokens, 5) == QWEN3_OK) {
            logits[i] = malloc((size_t)s.vocab_size * sizeof(float));
            if (logits[i]) memcpy(logits[i], qwen3_context_logits(c), (size_t)s.vocab_size * sizeof(float));
        }
        qwen3_context_free(c);
        qwen3_model_free(m);
    }
    if (saved) {
        setenv("QWEN3_MMAP", saved, 1);
    } else {
        unsetenv("QWEN3_MMAP");
    }
    free(saved);
    CHECK(!copied[1], "QWEN3_MMAP set, yet the weights were copied");
    CHECK(logits[0] && logits[1] && memcmp(logits[0], logits[1], (size_t)s.vocab_size * sizeof(float)) == 0,
          "logits differ between the huge-page copy and the file map");
    free(logits[0]);
    free(logits[1]);
#if defined(__linux__)
    /* the budget the copy is held to: MemAvailable, or less inside a memory cgroup */
    const uint64_t budget = qwen3_memory_budget();
    unsigned long long avail_kb = 0;
    FILE* mi = fopen("/proc/meminfo", "r");
    if (mi) {
        char line[256];
        while (fgets(line, sizeof line, mi)) {
            if (sscanf(line, "MemAvailable: %llu kB", &avail_kb) == 1) break;
        }
        fclose(mi);
    }
    CHECK(budget > 0 && budget <= (uint64_t)avail_kb * 1024 + ((uint64_t)64 << 20),
          "memory budget %llu bytes, MemAvailable %llu kB", (unsigned long long)budget, avail_kb);
    printf("huge pages: memory budget %.0f MB (MemAvailable %.0f MB)\n", (double)budget / 1e6,
           (double)avail_kb * 1024 / 1e6);
    char thp[256] = {0};
    FILE* f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f) {
        if (!fgets(thp, sizeof thp, f)) thp[0] = 0;
        fclose(f);
    }
    if (strstr(thp, "[always]") || strstr(thp, "[madvise]")) {
        CHECK(copied[0], "huge pages are on (%s), yet the checkpoint stayed in the file map", thp);
        printf("huge pages: the checkpoint was copied; logits equal the file map's\n");
    } else {
        printf("huge pages: skipped the copy check (transparent huge pages off here)\n");
    }
#else
    printf("huge pages: skipped the copy check (Linux only)\n");
#endif
#endif
}

int main(void) {
    test_header_valid();
    test_header_rejections();
    test_header_fuzz();
    test_header_moe();
    test_templates_validation();
    char dir[1024];
    if (!tu_make_temp_dir(dir, sizeof dir)) {
        fprintf(stderr, "cannot create a temp folder\n");
        return 1;
    }
    test_load_layouts(dir);
    test_load_failures(dir);
    test_template_files(dir);
    test_tokenizer_order(dir);
    test_file_fuzz(dir);
    test_huge_pages(dir);
    tu_remove_dir(dir);
    return tu_finish("test_model");
}
