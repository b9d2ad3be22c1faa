/*
 * fuzz_jsonl.c — the training-data reader (src/train/data.c gn_dataset_load:
 * JSONL lines, BOM/CRLF/blank lines, format detection, the oasst1 / alpaca /
 * input-output / messages renderings, "<s>"/"</s>" handling, truncation) with
 * a small SentencePiece-style tokenizer built in memory (byte fallback, so any
 * text encodes).
 * First input byte: low 3 bits -> format (0 auto .. 4 messages, 5-7 auto);
 * bit 7 -> tiny source/target limits (8 / 4) instead of qlora's 1024 / 256;
 * bit 6 -> train_on_source. The rest is the file.
 */
#include "fuzz_common.h"
#include "tokenizer/tok_internal.h"
#include "train/data.h"

static gn_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fz_setup();
#define SP "\xe2\x96\x81" // U+2581, SentencePiece's space
    static const char *const words[] = {SP, SP "###", SP "Human", SP "Assistant", ":", "a", "e", SP "the", "s", "t"};
    int nw = (int)(sizeof words / sizeof words[0]);
    tok = tok_new(3 + 256 + nw);
    tok->kind = GN_TOK_SPM;
    tok_set_piece(tok, 0, "<unk>", 5);
    tok->type[0] = TOK_UNKNOWN;
    tok_set_piece(tok, 1, "<s>", 3);
    tok->type[1] = TOK_CONTROL;
    tok_set_piece(tok, 2, "</s>", 4);
    tok->type[2] = TOK_CONTROL;
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        tok_set_piece(tok, 3 + b, s, 6);
        tok->type[3 + b] = TOK_BYTE;
    }
    for (int i = 0; i < nw; i++) {
        tok_set_piece(tok, 259 + i, words[i], strlen(words[i]));
        tok->type[259 + i] = TOK_NORMAL;
        tok->score[259 + i] = (float)-i;
    }
    tok->unk = 0;
    tok->bos = 1;
    tok->eos = 2;
    tok->add_bos = 1;
    tok->byte_fallback = 1;
    if (tok_finish(tok) != GN_OK) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char p[512];
    fz_write("train.jsonl", data + 1, size - 1, p, sizeof p);
    gn_data_opts o;
    gn_data_opts_default(&o);
    int f = data[0] & 7;
    o.format = f <= 4 ? (gn_data_format)f : GN_DATA_AUTO;
    if (data[0] & 0x80) { o.source_max_len = 8; o.target_max_len = 4; }
    o.train_on_source = (data[0] >> 6) & 1;
    gn_dataset ds;
    if (gn_dataset_load(&ds, p, tok, &o) == GN_OK) {
        for (int i = 0; i < ds.n; i++) {
            const gn_example *e = &ds.ex[i];
            if (e->n < 0 || e->n > o.source_max_len + o.target_max_len + 2) abort(); // truncation holds
            for (int k = 0; k < e->n; k++)
                if (e->ids[k] < 0 || e->ids[k] >= tok->n_vocab) abort();
        }
        if (ds.n > 1) {
            gn_dataset ev;
            gn_dataset_split(&ds, 1, 7, &ev);
            gn_dataset_free(&ev);
        }
        gn_dataset_free(&ds);
    }
    return 0;
}
