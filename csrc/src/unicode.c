/* unicode.c - UTF-8 coding and NFC over code point arrays (tables in unicode_tables.c). */
#include "unicode.h"

#include <stdlib.h>
#include <string.h>

/* Hangul syllables are composed and decomposed arithmetically (Unicode chapter 3.12). */
enum {
    HANGUL_S_BASE = 0xAC00,
    HANGUL_L_BASE = 0x1100,
    HANGUL_V_BASE = 0x1161,
    HANGUL_T_BASE = 0x11A7,
    HANGUL_L_COUNT = 19,
    HANGUL_V_COUNT = 21,
    HANGUL_T_COUNT = 28,
    HANGUL_N_COUNT = HANGUL_V_COUNT * HANGUL_T_COUNT,
    HANGUL_S_COUNT = HANGUL_L_COUNT * HANGUL_N_COUNT
};

/* --------------------------------------------------------------------------------------
 * UTF-8
 * ------------------------------------------------------------------------------------ */

size_t qwen3_utf8_decode(const uint8_t* s, size_t len, uint32_t* cp) {
    uint32_t b0 = s[0];
    if (b0 < 0x80) {
        *cp = b0;
        return 1;
    }
    /* Second-byte bounds per lead byte (RFC 3629 table) rule out overlongs, surrogates
     * and values above U+10FFFF in one comparison. */
    uint32_t need, lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        *cp = QWEN3_UC_INVALID_BASE + b0;
        return 1;
    }
    if (len <= need || s[1] < lo || s[1] > hi) {
        *cp = QWEN3_UC_INVALID_BASE + b0;
        return 1;
    }
    uint32_t v = b0 & (0x3Fu >> need);
    for (uint32_t i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = QWEN3_UC_INVALID_BASE + b0;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    *cp = v;
    return need + 1;
}

size_t qwen3_utf8_encode(uint32_t cp, uint8_t out[4]) {
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | (cp >> 6));
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp < 0x110000) {
        out[0] = (uint8_t)(0xF0 | (cp >> 18));
        out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (uint8_t)(0x80 | (cp & 0x3F));
        return 4;
    }
    out[0] = (uint8_t)(cp - QWEN3_UC_INVALID_BASE);
    return 1;
}

/* --------------------------------------------------------------------------------------
 * Decomposition and composition lookups
 * ------------------------------------------------------------------------------------ */

size_t qwen3_uc_decompose(uint32_t cp, uint32_t out[4]) {
    /* No canonical decomposition exists below U+00C0. */
    if (cp < 0xC0 || cp >= 0x110000) return 0;
    if (cp >= HANGUL_S_BASE && cp < HANGUL_S_BASE + HANGUL_S_COUNT) {
        uint32_t s = cp - HANGUL_S_BASE;
        out[0] = HANGUL_L_BASE + s / HANGUL_N_COUNT;
        out[1] = HANGUL_V_BASE + (s % HANGUL_N_COUNT) / HANGUL_T_COUNT;
        uint32_t t = s % HANGUL_T_COUNT;
        if (t == 0) return 2;
        out[2] = HANGUL_T_BASE + t;
        return 3;
    }
    size_t lo = 0, hi = qwen3_uc_decomp_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t m = qwen3_uc_decomps[mid].cp;
        if (m == cp) {
            const Qwen3UcDecomp* d = &qwen3_uc_decomps[mid];
            memcpy(out, &qwen3_uc_decomp_pool[d->offset], d->len * sizeof(uint32_t));
            return d->len;
        }
        if (m < cp) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

uint32_t qwen3_uc_compose(uint32_t a, uint32_t b) {
    if (a >= 0x110000 || b >= 0x110000) return 0;
    if (a >= HANGUL_L_BASE && a < HANGUL_L_BASE + HANGUL_L_COUNT && b >= HANGUL_V_BASE &&
        b < HANGUL_V_BASE + HANGUL_V_COUNT) {
        return HANGUL_S_BASE + ((a - HANGUL_L_BASE) * HANGUL_V_COUNT + (b - HANGUL_V_BASE)) * HANGUL_T_COUNT;
    }
    if (a >= HANGUL_S_BASE && a < HANGUL_S_BASE + HANGUL_S_COUNT && (a - HANGUL_S_BASE) % HANGUL_T_COUNT == 0 &&
        b > HANGUL_T_BASE && b < HANGUL_T_BASE + HANGUL_T_COUNT) {
        return a + (b - HANGUL_T_BASE);
    }
    uint64_t key = ((uint64_t)a << 21) | b;
    size_t lo = 0, hi = qwen3_uc_comp_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint64_t m = qwen3_uc_comps[mid].key;
        if (m == key) return qwen3_uc_comps[mid].cp;
        if (m < key) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

/* --------------------------------------------------------------------------------------
 * NFC
 * ------------------------------------------------------------------------------------ */

int qwen3_nfc_needed(const uint32_t* cps, size_t n) {
    for (size_t i = 0; i < n; i++) {
        /* Nothing below U+0300 carries the check flag. */
        if (cps[i] >= 0x300 && (qwen3_uc_flags(cps[i]) & QWEN3_UC_NFC_CHECK)) return 1;
    }
    return 0;
}

/* Stable sort of a run of non-starters by combining class. Long runs (hostile input can
 * hold a megabyte of combining marks) use a counting sort so the cost stays linear. */
static void sort_by_ccc(uint32_t* cps, uint8_t* ccc, size_t n, uint32_t* tmp_cp, uint8_t* tmp_cc) {
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            uint32_t c = cps[i];
            uint8_t k = ccc[i];
            size_t j = i;
            while (j > 0 && ccc[j - 1] > k) {
                cps[j] = cps[j - 1];
                ccc[j] = ccc[j - 1];
                j--;
            }
            cps[j] = c;
            ccc[j] = k;
        }
        return;
    }
    size_t start[257] = {0};
    for (size_t i = 0; i < n; i++) start[ccc[i] + 1]++;
    for (size_t k = 1; k <= 256; k++) start[k] += start[k - 1];
    for (size_t i = 0; i < n; i++) {
        size_t at = start[ccc[i]]++;
        tmp_cp[at] = cps[i];
        tmp_cc[at] = ccc[i];
    }
    memcpy(cps, tmp_cp, n * sizeof *cps);
    memcpy(ccc, tmp_cc, n);
}

/* NFC of one chunk in[0..n) into d (room for its full decomposition), using cc, tmp_cp and
 * tmp_cc as scratch of the same size. Returns the normalised length. */
static size_t nfc_chunk(const uint32_t* in, size_t n, uint32_t* d, uint8_t* cc, uint32_t* tmp_cp, uint8_t* tmp_cc) {
    /* 1. Full canonical decomposition. */
    uint32_t buf[4];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = qwen3_uc_decompose(in[i], buf);
        if (k == 0) {
            d[m++] = in[i];
        } else {
            for (size_t j = 0; j < k; j++) d[m++] = buf[j];
        }
    }
    for (size_t i = 0; i < m; i++) cc[i] = (uint8_t)qwen3_uc_ccc(d[i]);

    /* 2. Canonical ordering of every run of non-starters. */
    for (size_t i = 0; i < m;) {
        if (cc[i] == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < m && cc[j] != 0) j++;
        if (j - i > 1) sort_by_ccc(d + i, cc + i, j - i, tmp_cp, tmp_cc);
        i = j;
    }

    /* 3. Canonical composition, in place: a character composes with the last starter
     * unless something between them blocks it (a starter, or a mark of equal or
     * higher class - the sort above makes the last one kept the highest). Only a
     * character with the check flag can be the second half of a composition. */
    size_t w = 0;
    size_t starter = SIZE_MAX;
    uint8_t last_cc = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = d[i];
        uint8_t k = cc[i];
        if (starter != SIZE_MAX && (w == starter + 1 || (last_cc != 0 && last_cc < k)) &&
            (qwen3_uc_flags(c) & QWEN3_UC_NFC_CHECK)) {
            uint32_t comp = qwen3_uc_compose(d[starter], c);
            if (comp) {
                d[starter] = comp;
                continue;
            }
        }
        if (k == 0) starter = w;
        last_cc = k;
        d[w++] = c;
    }
    return w;
}

static size_t decomposed_length(const uint32_t* in, size_t n) {
    uint32_t buf[4];
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = qwen3_uc_decompose(in[i], buf);
        total += k ? k : 1;
    }
    return total;
}

static int is_boundary(uint32_t cp) { return cp < 0x300 || !(qwen3_uc_flags(cp) & QWEN3_UC_NFC_CHECK); }

/*
 * A character with NFC quick-check Yes and class 0 (exactly the ones without the check
 * flag) neither reorders nor composes with anything before it, so the text splits into
 * chunks before each such character; only chunks holding a flagged character are
 * normalised, the rest is copied. Mostly-normalised text costs a scan and a copy.
 */
int qwen3_nfc(const uint32_t* cps, size_t n, uint32_t** out, size_t* out_n) {
    *out = NULL;
    *out_n = 0;
    size_t cap = n + 16, w = 0;
    uint32_t* o = malloc(cap * sizeof *o);
    uint32_t* d = NULL;
    uint8_t* cc = NULL;
    uint32_t* tmp_cp = NULL;
    uint8_t* tmp_cc = NULL;
    size_t scratch = 0;
    if (!o) return -1;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && is_boundary(cps[j])) j++;
        /* The chunk starts at the boundary character just before the first flagged one
         * (it may compose with what follows) and ends before the next boundary. */
        size_t k = j > i ? j - 1 : i;
        size_t e = j < n ? j + 1 : n;
        while (e < n && !is_boundary(cps[e])) e++;
        size_t copy = j < n ? k - i : n - i;
        size_t dn = j < n ? decomposed_length(cps + k, e - k) : 0;
        if (w + copy + dn > cap) {
            while (w + copy + dn > cap) cap *= 2;
            uint32_t* grown = realloc(o, cap * sizeof *o);
            if (!grown) goto oom;
            o = grown;
        }
        memcpy(o + w, cps + i, copy * sizeof *o);
        w += copy;
        if (j == n) break;
        if (dn > scratch) {
            free(d);
            free(cc);
            free(tmp_cp);
            free(tmp_cc);
            d = malloc(dn * sizeof *d);
            cc = malloc(dn);
            tmp_cp = malloc(dn * sizeof *tmp_cp);
            tmp_cc = malloc(dn);
            scratch = dn;
            if (!d || !cc || !tmp_cp || !tmp_cc) goto oom;
        }
        size_t m = nfc_chunk(cps + k, e - k, d, cc, tmp_cp, tmp_cc);
        memcpy(o + w, d, m * sizeof *o);
        w += m;
        i = e;
    }
    free(d);
    free(cc);
    free(tmp_cp);
    free(tmp_cc);
    *out = o;
    *out_n = w;
    return 0;
oom:
    free(o);
    free(d);
    free(cc);
    free(tmp_cp);
    free(tmp_cc);
    return -1;
}
