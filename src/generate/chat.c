/*
 * chat.c — turning a conversation into the prompt text a model was trained on.
 *
 * Guanaco (the default for models without a template of their own) has two
 * spellings in use (docs/FACTS.md §6.8): the released evaluation generations
 *   "{system} ### Human: {q} ### Assistant:"
 * and the demo script
 *   "{system} ### Human: {q}### Assistant: "
 * We default to the first, since the paper's Elo numbers come from it.
 * ChatML, Llama-2 [INST] and Llama-3 headers cover the models' own templates;
 * the Jinja template that ships with a tokenizer is only inspected to pick one
 * of these (we do not run Jinja).
 */
#include "../core/common.h"
#include "../core/buf.h" // gn_buf

#include <stdio.h>  // snprintf
#include <stdlib.h> // free

const char GN_GUANACO_SYSTEM[] =
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.";

gn_chat_format gn_chat_format_for(const gn_tokenizer *t, gn_chat_format requested) {
    if (requested != GN_CHAT_AUTO) return requested;
    const char *tpl = t ? gn_tokenizer_chat_template(t) : NULL;
    if (tpl) {
        if (strstr(tpl, "<|im_start|>")) return GN_CHAT_CHATML;
        if (strstr(tpl, "<|start_header_id|>")) return GN_CHAT_LLAMA3;
        if (strstr(tpl, "[INST]")) return GN_CHAT_LLAMA2;
        if (strstr(tpl, "### Human:")) return GN_CHAT_GUANACO;
    }
    return GN_CHAT_GUANACO;
}

const char *gn_chat_format_name(gn_chat_format f) {
    switch (f) {
    case GN_CHAT_GUANACO: return "guanaco";
    case GN_CHAT_GUANACO_DEMO: return "guanaco-demo";
    case GN_CHAT_CHATML: return "chatml";
    case GN_CHAT_LLAMA2: return "llama2";
    case GN_CHAT_LLAMA3: return "llama3";
    default: return "auto";
    }
}

gn_status gn_chat_format_parse(const char *name, gn_chat_format *f) {
    for (int k = GN_CHAT_AUTO; k <= GN_CHAT_LLAMA3; k++)
        if (name && !strcmp(name, gn_chat_format_name((gn_chat_format)k))) { *f = (gn_chat_format)k; return GN_OK; }
    return gn_err(GN_ERR_ARG, "--template: '%s' (expected auto, guanaco, guanaco-demo, chatml, llama2 or llama3)",
                  name ? name : "");
}

char *gn_chat_default_system(const gn_tokenizer *t, gn_chat_format f) {
    if (f == GN_CHAT_GUANACO || f == GN_CHAT_GUANACO_DEMO) return gn_strdup(GN_GUANACO_SYSTEM);
    const char *tpl = t ? gn_tokenizer_chat_template(t) : NULL;
    if (f == GN_CHAT_CHATML && tpl) {
        // templates such as SmolLM2's insert a fixed system turn when none is given:
        // ... '<|im_start|>system\nYou are ...<|im_end|>\n' ...
        const char *p = strstr(tpl, "<|im_start|>system\\n");
        size_t skip = strlen("<|im_start|>system\\n");
        if (!p) { p = strstr(tpl, "<|im_start|>system\n"); skip = strlen("<|im_start|>system\n"); }
        if (p) {
            p += skip;
            const char *e = strstr(p, "<|im_end|>");
            if (e && e > p && !memchr(p, '{', (size_t)(e - p)) && !memchr(p, '\'', (size_t)(e - p)))
                return gn_strndup(p, (size_t)(e - p));
        }
    }
    return NULL;
}

char *gn_chat_render(gn_chat_format f, const gn_chat_msg *msgs, int n, const char *const **stops, int *n_stops) {
    static const char *const st_guanaco[] = {"### Human:", "### Assistant:"};
    static const char *const st_chatml[] = {"<|im_end|>", "<|im_start|>"};
    static const char *const st_llama2[] = {"</s>", "[INST]"};
    static const char *const st_llama3[] = {"<|eot_id|>", "<|start_header_id|>"};
    gn_buf b = {0};
    int i = 0;
    const char *system = NULL;
    if (n > 0 && !strcmp(msgs[0].role, "system")) { system = msgs[0].content; i = 1; }
    switch (f) {
    case GN_CHAT_CHATML:
        if (system) { gn_buf_puts(&b, "<|im_start|>system\n"); gn_buf_puts(&b, system); gn_buf_puts(&b, "<|im_end|>\n"); }
        for (; i < n; i++) {
            gn_buf_puts(&b, "<|im_start|>"); gn_buf_puts(&b, msgs[i].role); gn_buf_puts(&b, "\n");
            gn_buf_puts(&b, msgs[i].content); gn_buf_puts(&b, "<|im_end|>\n");
        }
        gn_buf_puts(&b, "<|im_start|>assistant\n");
        *stops = st_chatml;
        break;
    case GN_CHAT_LLAMA2: {
        int first = 1;
        for (; i < n; i++) {
            if (!strcmp(msgs[i].role, "user")) {
                if (!first) gn_buf_puts(&b, "<s>");
                gn_buf_puts(&b, "[INST] ");
                if (first && system) { gn_buf_puts(&b, "<<SYS>>\n"); gn_buf_puts(&b, system); gn_buf_puts(&b, "\n<</SYS>>\n\n"); }
                gn_buf_puts(&b, msgs[i].content);
                gn_buf_puts(&b, " [/INST]");
                first = 0;
            } else {
                gn_buf_puts(&b, " "); gn_buf_puts(&b, msgs[i].content); gn_buf_puts(&b, " </s>");
            }
        }
        *stops = st_llama2;
        break;
    }
    case GN_CHAT_LLAMA3:
        if (system) { gn_buf_puts(&b, "<|start_header_id|>system<|end_header_id|>\n\n"); gn_buf_puts(&b, system); gn_buf_puts(&b, "<|eot_id|>"); }
        for (; i < n; i++) {
            gn_buf_puts(&b, "<|start_header_id|>"); gn_buf_puts(&b, msgs[i].role); gn_buf_puts(&b, "<|end_header_id|>\n\n");
            gn_buf_puts(&b, msgs[i].content); gn_buf_puts(&b, "<|eot_id|>");
        }
        gn_buf_puts(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        *stops = st_llama3;
        break;
    default: { // Guanaco, both spellings
        int demo = f == GN_CHAT_GUANACO_DEMO;
        gn_buf_puts(&b, system ? system : GN_GUANACO_SYSTEM);
        for (; i < n; i++) {
            if (!strcmp(msgs[i].role, "user")) {
                gn_buf_puts(&b, " ### Human: ");
                gn_buf_puts(&b, msgs[i].content);
            } else {
                gn_buf_puts(&b, demo ? "### Assistant: " : " ### Assistant: ");
                gn_buf_puts(&b, msgs[i].content);
            }
        }
        gn_buf_puts(&b, demo ? "### Assistant: " : " ### Assistant:");
        *stops = st_guanaco;
        break;
    }
    }
    *n_stops = 2;
    return gn_buf_take(&b);
}
