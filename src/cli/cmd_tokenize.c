/*
 * cmd_tokenize.c — `guanaco tokenize`: text to token ids and back.
 *
 *   guanaco tokenize -m PATH -p "Hello world"        -> 1 15043 3186
 *   guanaco tokenize -m PATH -f text.txt --pieces    -> one "id<TAB>piece" line per token
 *   guanaco tokenize -m PATH --decode "1 15043 3186" -> Hello world
 *
 * PATH is a tokenizer.model, tokenizer.json, a .gguf (vocab-only or full) or an
 * HF model folder. Batch modes used by the tests (one process for many texts):
 *   -f rows.jsonl --jsonl FIELD      one id line per JSON row (its string FIELD)
 *   ... --roundtrip                  instead, one JSON string per row: decode(encode(text))
 *   --decode-each FILE               one JSON string per line of ids in FILE
 */
#include "cli.h"

#include <stdio.h>   // printf, fputs
#include <stdlib.h>  // free
#include <string.h>  // strcmp, strlen

#include <cjson/cJSON.h>  // cJSON_Parse (for --jsonl rows)


static const char HELP[] =
    "usage: guanaco tokenize -m PATH (-p TEXT | -f FILE) [options]\n"
    "       guanaco tokenize -m PATH --decode \"IDS\"\n"
    "\n"
    "Prints the token ids of the text, space-separated on one line.\n"
    "\n"
    "  -m, --model PATH      tokenizer.model, tokenizer.json, a .gguf or an HF model folder (required)\n"
    "  -p, --prompt TEXT     text to encode\n"
    "  -f, --file FILE       encode the bytes of FILE\n"
    "      --no-bos          do not prepend BOS (default: prepend it when the tokenizer does)\n"
    "      --eos             append EOS\n"
    "      --special         recognise special tokens written in the text (e.g. <|im_start|>);\n"
    "                        with --decode, print special tokens instead of dropping them\n"
    "      --pieces          print one \"id<TAB>piece\" line per token instead of the id line\n"
    "      --decode IDS      print the text of the ids (\"1 2 3\" or \"1,2,3\")\n"
    "      --jsonl FIELD     with -f: FILE holds JSON rows; print one id line per row (its FIELD)\n"
    "      --roundtrip       with --jsonl: print decode(encode(text)) per row as a JSON string\n"
    "      --decode-each F   print each line of ids in F decoded, as one JSON string per line\n"
    "  -h, --help            this help\n";

static int usage_fail(const char *fmt, const char *arg) {
    fputs("guanaco: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (see guanaco tokenize --help)\n", stderr);
    return 2;
}

static void print_ids(const int32_t *ids, int n) {
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", (int)ids[i]);
    putchar('\n');
}

// Prints s as a JSON string literal (s is valid UTF-8 after decode's repair).
static void print_json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { putchar('\\'); putchar(c); }
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\u%04x", c);
        else putchar(c);
    }
    fputs("\"\n", stdout);
}

// Length of the valid UTF-8 character at s (1..4), 0 when invalid or cut short.
static int utf8_len(const char *s, int n) {
    const unsigned char *u = (const unsigned char *)s;
    int L = u[0] < 0x80 ? 1 : u[0] >= 0xC2 && u[0] <= 0xDF ? 2 : u[0] >= 0xE0 && u[0] <= 0xEF ? 3
          : u[0] >= 0xF0 && u[0] <= 0xF4 ? 4 : 0;
    if (L == 0 || L > n) return 0;
    for (int i = 1; i < L; i++)
        if ((u[i] & 0xC0) != 0x80) return 0;
    if ((u[0] == 0xE0 && u[1] < 0xA0) || (u[0] == 0xED && u[1] > 0x9F) || (u[0] == 0xF0 && u[1] < 0x90) ||
        (u[0] == 0xF4 && u[1] > 0x8F))
        return 0;
    return L;
}

// Prints a piece with control bytes escaped so each token stays on one line.
static void print_piece_line(const gn_tokenizer *tok, int32_t id) {
    char small[256];
    int n = gn_tokenizer_token_bytes(tok, id, small, sizeof small);
    char *b = small;
    if (n > (int)sizeof small) {
        b = gn_malloc((size_t)n);
        gn_tokenizer_token_bytes(tok, id, b, n);
    }
    printf("%d\t", (int)id);
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        int L = utf8_len(b + i, n - i);
        if (L > 1) { fwrite(b + i, 1, (size_t)L, stdout); i += L - 1; continue; }
        if (L == 0) printf("\\x%02x", c);  // a byte of a partial or invalid UTF-8 character
        else if (c == '\\') fputs("\\\\", stdout);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('\n');
    if (b != small) free(b);
}

static int encode_print(const gn_tokenizer *tok, const char *text, size_t len, int flags, int pieces) {
    int32_t *ids;
    int n;
    if (gn_tokenizer_encode(tok, text, len, flags, &ids, &n) != GN_OK) return cli_fail_lib();
    if (pieces)
        for (int i = 0; i < n; i++) print_piece_line(tok, ids[i]);
    else
        print_ids(ids, n);
    free(ids);
    return 0;
}

static int roundtrip_print(const gn_tokenizer *tok, const char *text, size_t len, int flags) {
    int32_t *ids;
    int n;
    if (gn_tokenizer_encode(tok, text, len, flags, &ids, &n) != GN_OK) return cli_fail_lib();
    char *out;
    size_t olen;
    gn_status st = gn_tokenizer_decode(tok, ids, n, !(flags & GN_ENC_SPECIAL), &out, &olen);
    free(ids);
    if (st != GN_OK) return cli_fail_lib();
    print_json_string(out, olen);
    free(out);
    return 0;
}

// --jsonl: one output line per non-empty input line.
static int run_jsonl(const gn_tokenizer *tok, const char *file, const char *field, int flags, int pieces,
                     int roundtrip) {
    char *data;
    size_t len;
    if (gn_read_file(file, &data, &len) != GN_OK) return cli_fail_lib();
    int rc = 0;
    gn_lines it = {data, len, 0, 0};
    size_t L;
    for (char *p; rc == 0 && (p = gn_lines_next(&it, &L));) {
        const int lineno = it.lineno;
        if (!gn_line_blank(p)) {
            cJSON *row = cJSON_ParseWithLength(p, L);
            const cJSON *v = row ? cJSON_GetObjectItemCaseSensitive(row, field) : NULL;
            if (!cJSON_IsString(v)) {
                rc = cli_fail("%s: line %d: %s, expected a JSON object with a string field \"%s\"", file, lineno,
                              row ? "field missing or not a string" : "invalid JSON", field);
            } else if (roundtrip) {
                rc = roundtrip_print(tok, v->valuestring, strlen(v->valuestring), flags);
            } else {
                rc = encode_print(tok, v->valuestring, strlen(v->valuestring), flags, pieces);
            }
            cJSON_Delete(row);
        }
    }
    free(data);
    return rc;
}

static int run_decode(const gn_tokenizer *tok, const char *s, int skip_special, int json) {
    int32_t *ids;
    int n;
    if (cli_parse_ids(s, &ids, &n) != 0) return 1;
    char *out;
    size_t olen;
    gn_status st = gn_tokenizer_decode(tok, ids, n, skip_special, &out, &olen);
    free(ids);
    if (st != GN_OK) return cli_fail_lib();
    if (json) print_json_string(out, olen);
    else { fwrite(out, 1, olen, stdout); putchar('\n'); }
    free(out);
    return 0;
}

static int run_decode_each(const gn_tokenizer *tok, const char *file, int skip_special) {
    char *data;
    size_t len;
    if (gn_read_file(file, &data, &len) != GN_OK) return cli_fail_lib();
    int rc = 0;
    char *p = data, *end = data + len;
    while (p < end && rc == 0) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl) *nl = 0;
        rc = run_decode(tok, p, skip_special, 1);
        p = nl ? nl + 1 : end;
    }
    free(data);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *file = NULL, *decode = NULL, *jsonl = NULL, *decode_each = NULL;
    int no_bos = 0, eos = 0, special = 0, pieces = 0, roundtrip = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
#define IS(s, l) (!strcmp(a, s) || !strcmp(a, l))
#define VAL(dst) do { if (i + 1 >= argc) return usage_fail("%s needs a value", a); dst = argv[++i]; } while (0)
        if (IS("-h", "--help")) { fputs(HELP, stdout); return 0; }
        else if (IS("-m", "--model")) VAL(model);
        else if (IS("-p", "--prompt")) VAL(prompt);
        else if (IS("-f", "--file")) VAL(file);
        else if (IS("--decode", "--decode")) VAL(decode);
        else if (IS("--jsonl", "--jsonl")) VAL(jsonl);
        else if (IS("--decode-each", "--decode-each")) VAL(decode_each);
        else if (IS("--no-bos", "--no-bos")) no_bos = 1;
        else if (IS("--eos", "--eos")) eos = 1;
        else if (IS("--special", "--special")) special = 1;
        else if (IS("--pieces", "--pieces")) pieces = 1;
        else if (IS("--roundtrip", "--roundtrip")) roundtrip = 1;
        else return usage_fail("unknown option '%s'", a);
#undef IS
#undef VAL
    }
    if (!model) return usage_fail("%s", "-m PATH is required");
    int modes = (prompt || file) + (decode != NULL) + (decode_each != NULL);
    if (prompt && file) return usage_fail("%s", "give -p TEXT or -f FILE, not both");
    if (modes != 1) return usage_fail("%s", "give one of -p TEXT, -f FILE, --decode IDS or --decode-each FILE");
    if (jsonl && !file) return usage_fail("%s", "--jsonl FIELD needs -f FILE");
    if (roundtrip && !jsonl) return usage_fail("%s", "--roundtrip needs --jsonl FIELD");

    gn_tokenizer *tok;
    if (gn_tokenizer_load(&tok, model) != GN_OK) return cli_fail_lib();
    int flags = (no_bos ? 0 : GN_ENC_BOS) | (eos ? GN_ENC_EOS : 0) | (special ? GN_ENC_SPECIAL : 0);
    int rc;
    if (decode) rc = run_decode(tok, decode, !special, 0);
    else if (decode_each) rc = run_decode_each(tok, decode_each, !special);
    else if (jsonl) rc = run_jsonl(tok, file, jsonl, flags, pieces, roundtrip);
    else if (file) {
        char *data;
        size_t len;
        if (gn_read_file(file, &data, &len) != GN_OK) rc = cli_fail_lib();
        else { rc = encode_print(tok, data, len, flags, pieces); free(data); }
    } else {
        rc = encode_print(tok, prompt, strlen(prompt), flags, pieces);
    }
    gn_tokenizer_free(tok);
    if (fflush(stdout) != 0 && rc == 0) rc = cli_fail("writing to stdout failed");
    return rc;
}
