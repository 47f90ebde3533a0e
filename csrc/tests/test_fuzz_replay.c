/*
 * test_fuzz_replay.c - replays the committed fuzz corpus through the fuzz harnesses in
 * the ordinary test build, so every input that once crashed a loader or broke a harness
 * invariant stays a regression test without clang or libFuzzer.
 *
 * csrc/fuzz/corpus/<harness>/ holds each harness's seeds (small valid files, written by
 * csrc/fuzz/make_corpus.ts) and its reproducers (crash-*, named after the bug they
 * caught). The harness sources are included here with their libFuzzer entry points
 * renamed; tools/fuzz.ts links the same files with libFuzzer to search for new inputs.
 */
#include "test_util.h"

#define LLVMFuzzerTestOneInput replay_model_header
#include "../fuzz/fuzz_model_header.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput replay_tokenizer_bin
#include "../fuzz/fuzz_tokenizer_bin.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput replay_tokenizer_json
#include "../fuzz/fuzz_tokenizer_json.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput replay_gguf
#include "../fuzz/fuzz_gguf.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput replay_tokenize
#define LLVMFuzzerInitialize replay_tokenize_init
#include "../fuzz/fuzz_tokenize.c"
#undef LLVMFuzzerTestOneInput
#undef LLVMFuzzerInitialize

#define LLVMFuzzerTestOneInput replay_template
#define LLVMFuzzerInitialize replay_template_init
#include "../fuzz/fuzz_template.c"
#undef LLVMFuzzerTestOneInput
#undef LLVMFuzzerInitialize

#if defined(_WIN32)
#include <io.h>
#else
#include <dirent.h>
#endif

typedef struct {
    const char* name;
    int (*init)(int*, char***);
    int (*one)(const uint8_t*, size_t);
} Harness;

static int compare_names(const void* a, const void* b) {
    return strcmp(*(const char* const*)a, *(const char* const*)b);
}

/* The file names in dir, sorted; *count receives how many. NULL when dir is missing. */
static char** list_files(const char* dir, size_t* count) {
    size_t n = 0, cap = 64;
    char** names = (char**)malloc(cap * sizeof *names);
    if (!names) return NULL;
#if defined(_WIN32)
    char pattern[1024];
    snprintf(pattern, sizeof pattern, "%s\\*", dir);
    struct _finddata_t fd;
    intptr_t h = _findfirst(pattern, &fd);
    if (h == -1) {
        free(names);
        return NULL;
    }
    do {
        if (fd.attrib & _A_SUBDIR) continue;
        if (n == cap) names = (char**)realloc(names, (cap *= 2) * sizeof *names);
        names[n++] = _strdup(fd.name);
    } while (_findnext(h, &fd) == 0);
    _findclose(h);
#else
    DIR* d = opendir(dir);
    if (!d) {
        free(names);
        return NULL;
    }
    struct dirent* e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) names = (char**)realloc(names, (cap *= 2) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
#endif
    qsort(names, n, sizeof *names, compare_names);
    *count = n;
    return names;
}

int main(void) {
    static const Harness harnesses[] = {
        {"fuzz_model_header", NULL, replay_model_header},
        {"fuzz_tokenizer_bin", NULL, replay_tokenizer_bin},
        {"fuzz_tokenizer_json", NULL, replay_tokenizer_json},
        {"fuzz_gguf", NULL, replay_gguf},
        {"fuzz_tokenize", replay_tokenize_init, replay_tokenize},
        /* last: its set-up points stdin and stdout at the null device */
        {"fuzz_template", replay_template_init, replay_template},
    };
    for (size_t h = 0; h < sizeof harnesses / sizeof harnesses[0]; h++) {
        char dir[512];
        snprintf(dir, sizeof dir, "csrc/fuzz/corpus/%s", harnesses[h].name);
        size_t count = 0;
        char** names = list_files(dir, &count);
        CHECK(names && count > 0, "%s: no corpus files (run from the repository root)", dir);
        if (!names) continue;
        if (harnesses[h].init) harnesses[h].init(NULL, NULL);
        size_t bytes = 0;
        for (size_t i = 0; i < count; i++) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            size_t len = 0;
            char* data = tu_read_file(path, &len);
            CHECK(data != NULL, "cannot read %s", path);
            if (data) {
                /* a crash or a broken invariant aborts the whole test, naming the harness */
                harnesses[h].one((const uint8_t*)data, len);
                bytes += len;
            }
            free(data);
            free(names[i]);
        }
        free(names);
        fprintf(stderr, "%s: replayed %zu inputs (%zu bytes)\n", harnesses[h].name, count, bytes);
    }
    return tu_finish("test_fuzz_replay");
}
