/*
 * chat_encode.c — a conversation to token ids in one call: render the messages in
 * a chat format (chat.c) and encode the text (tokenizer). Chat, batch generation
 * (generate --prompts) and the local judge all start their answer this way, then
 * generate with gn_generate and the format's stop strings.
 */
#include <stdlib.h> // free
#include <string.h> // strlen

#include "guanaco.h" // gn_chat_render, gn_tokenizer_encode

gn_status gn_chat_encode(const gn_tokenizer *t, gn_chat_format f, const gn_chat_msg *msgs, int n, int flags,
                         int32_t **ids, int *n_ids, char **text, const char *const **stops, int *n_stops) {
    char *s = gn_chat_render(f, msgs, n, stops, n_stops);
    gn_status st = gn_tokenizer_encode(t, s, strlen(s), flags, ids, n_ids);
    if (text && !st) *text = s;
    else free(s);
    return st;
}
