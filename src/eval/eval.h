/*
 * eval.h — the evaluation suite behind `guanaco eval` (library side; the CLI
 * glue is src/cli/cmd_eval.c). Everything the Guanaco paper measured:
 *
 *   csv.c    RFC 4180 CSV reader (quoted fields with commas, "" and CR LF inside)
 *   elo.c    pairwise judgments in the QLoRA release format -> Elo tournaments
 *            (paper §5.2: start 1000, K = 32, mean over 10,000 random orderings),
 *            95% intervals, ranks, win-rate matrix, median rank over benchmarks
 *   lm.c     scoring helpers on a model: next-token logits with KV-prefix reuse,
 *            summed log-likelihood of a token sequence
 *   mmlu.c   MMLU prompts exactly as the hendrycks/qlora data were built, and the
 *            A/B/C/D argmax after "Answer:"
 *   crows.c  CrowS-Pairs loading (sent_more / sent_less / bias_type)
 *   ppl.c    perplexity with HF's strided sliding window
 *   judge.c  the three-class GPT-4 judge prompt, verdict parsing, generations
 *            files, and an OpenAI-compatible chat client (libcurl)
 *
 * Facts: docs/FACTS.md §6.7 (MMLU) and §8 (Elo, released data).
 * The library never prints to stdout: skipped input lines are reported through
 * gn_log (stderr by default) and counted in the result structs.
 */
#ifndef GN_EVAL_H
#define GN_EVAL_H

#include <stdint.h> // int8_t, uint64_t

#include "guanaco.h" // gn_status, gn_model, gn_session, gn_adapter

// ===========================================================================
// CSV (csv.c)

typedef struct {
    char **field;  // n NUL-terminated fields (quotes removed, "" -> ")
    int n;
    int line;      // 1-based line where the record starts (for messages)
} gn_csv_row;

typedef struct {
    gn_csv_row *row;  // row[0] is the header when the file has one
    int n;
} gn_csv;

// Parses len bytes of CSV text (RFC 4180: fields may be quoted; inside quotes
// commas, CR, LF and doubled quotes are data). Records end at LF or CR LF.
// Errors (unterminated quote, text after a closing quote) name path:line.
gn_status gn_csv_parse(gn_csv *out, const char *text, size_t len, const char *path);
gn_status gn_csv_read(gn_csv *out, const char *path);
void gn_csv_free(gn_csv *c);
// Index of the header field equal to name (row 0), -1 when absent.
int gn_csv_column(const gn_csv *c, const char *name);

// ===========================================================================
// Judgments and Elo (elo.c)

// One pairwise judgment: system a was "Assistant 1", b "Assistant 2".
typedef struct {
    int a, b;
    int8_t score; // 1: a wins, 2: b wins, 3: tie
} gn_match;

typedef struct {
    char **names;        // n_systems system names (normalized unless raw_names)
    int n_systems;
    gn_match *match;
    int n_match, cap;
    int n_files;
    int n_lines;         // non-empty lines read
    int n_unparsed;      // score -1: the judge's verdict could not be parsed (dropped)
    int n_bad;           // malformed JSON, unknown score values, missing fields (skipped)
} gn_judgments;

typedef struct {
    int raw_names;                 // keep the names exactly as the files spell them
    const char *const *alias;      // "FROM=TO" renames applied after normalization
    int n_alias;
} gn_judgments_opts;

void gn_judgments_init(gn_judgments *j);
void gn_judgments_free(gn_judgments *j);
// Adds the judgments of one .jsonl file, or of every *.jsonl file in a folder
// (sorted by name, not recursive). Lines are JSON objects with "score" 1/2/3/-1
// (number or string, the release's three-class format) and the systems either
// in the line ("model1"/"model2") or in the file name
// "<A>-vs-<B>[-<judge>-reviewer[-threeclass]].jsonl". FastChat arena rows
// ("model_a", "model_b", "winner": model_a|model_b|tie*) are read too.
// Bad lines are skipped with a count (the first few logged with file:line).
// Returns an error for a missing path or a file whose systems cannot be named.
gn_status gn_judgments_add(gn_judgments *j, const char *path, const gn_judgments_opts *o);
// Index of a system, added when new.
int gn_judgments_system(gn_judgments *j, const char *name);
// Adds one match (score 1/2/3).
void gn_judgments_push(gn_judgments *j, int a, int b, int score);

// The system names in a release file name "<A>-vs-<B>-gpt-4-reviewer-threeclass.jsonl"
// (folder and .jsonl ignored). Returns 0 and malloc'd *a, *b; -1 if there is no "-vs-".
int gn_judgment_file_systems(const char *path, char **a, char **b);
// Release names -> short names shared by both benchmarks: drops "answer-"/"answer_",
// the "-{vicuna,oa}-generations..." tail, and spells gpt35/gpt4 as gpt-3.5/gpt-4
// ("13b-guanaco-vicuna-generations-topp0.9-temp0.7" -> "13b-guanaco"). malloc'd.
char *gn_system_name_normalize(const char *raw);

typedef struct {
    int rounds;        // random orderings (default 10000)
    uint64_t seed;     // default 42
    double k;          // 32
    double init;       // 1000
    double tie;        // score of a tie for each side: 0.5
} gn_elo_opts;
void gn_elo_defaults(gn_elo_opts *o);

typedef struct {
    int n;              // systems
    int rounds;
    double *mean;       // (n) mean final rating over the orderings
    double *sd;         // (n) standard deviation over orderings
    double *ci_lo, *ci_hi; // (n) 95% interval of the mean: mean -/+ 1.96 sd / sqrt(rounds)
    double *p_lo, *p_hi;   // (n) 2.5th / 97.5th percentile of the final rating over orderings
    int *rank;          // (n) 1 = highest mean (ties share the better rank)
    int *wins, *losses, *ties, *games; // (n) raw counts over all matches
} gn_elo_result;

// Expected score of a against b: 1 / (1 + 10^((rb - ra) / 400)).
double gn_elo_expected(double ra, double rb);
// One sequential update for outcome s_a (1 win, 0 loss, tie value for a tie).
void gn_elo_update(double *ra, double *rb, double s_a, double k);
// One tournament over the matches in the given order (order NULL: as stored);
// writes n_systems final ratings into r.
void gn_elo_play(const gn_match *m, const int *order, int n_match, int n_systems, const gn_elo_opts *o, double *r);
// The paper's procedure: `rounds` tournaments, each over a fresh random
// permutation of all matches (round i's permutation depends only on seed and i,
// so results do not depend on the thread count). Error when there are no matches.
gn_status gn_elo_run(const gn_match *m, int n_match, int n_systems, const gn_elo_opts *o, gn_elo_result *out);
void gn_elo_result_free(gn_elo_result *r);
// Win rate of i over j, (wins + tie * ties) / games, both presentation orders
// pooled; NaN where the two never met. w is (n, n) row-major.
void gn_elo_winrate(const gn_match *m, int n_match, int n_systems, double tie, double *w);
// Median of v (sorted in place); NaN for n = 0.
double gn_median(double *v, int n);

// ===========================================================================
// Scoring on a model (lm.c)

typedef struct {
    const gn_model *m;
    gn_session *s;
    int V;
    int max_seq;         // tokens the session holds
    int32_t *cached;     // the ids whose keys/values are in the session's cache
    int ncached, capc;
} gn_lm;

// A scorer with its own session of max_seq tokens (0: the model's, capped at 4096);
// adapter may be NULL.
void gn_lm_init(gn_lm *lm, const gn_model *m, const gn_adapter *a, int max_seq);
void gn_lm_free(gn_lm *lm);
int gn_lm_max_seq(const gn_lm *lm);
// Encodes text: BOS first when bos is set and the tokenizer has one. Error when
// the model has no tokenizer.
gn_status gn_lm_encode(const gn_lm *lm, const char *text, int bos, int32_t **ids, int *n);
// Logits (V floats) after the last of ids[0..n). Reuses the cached keys/values of
// the longest prefix shared with the previous call (few-shot prompts share theirs),
// so only the new suffix is computed. NULL with a message on overflow.
const float *gn_lm_next_logits(gn_lm *lm, const int32_t *ids, int n);
// Sum over i in [from, n) of ln p(ids[i] | ids[0..i)), accumulated in double.
// from >= 1. Also returns the count of scored tokens in *count (may be NULL).
gn_status gn_lm_loglik(gn_lm *lm, const int32_t *ids, int n, int from, double *ll, int *count);
// ln softmax(logits)[id] in double precision.
double gn_log_softmax_at(const float *logits, int V, int id);

// ===========================================================================
// MMLU (mmlu.c)

typedef struct {
    char *subject;    // "abstract_algebra"
    char *question;   // CSV rows: the question (NULL for qlora-format rows)
    char *choice[4];  // CSV rows: the four options
    char *prompt0;    // qlora-format rows: the full zero-shot prompt as given
    int answer;       // 0..3
} gn_mmlu_item;

typedef struct {
    gn_mmlu_item *item;
    int n, cap;
    int n_skipped;    // malformed rows (logged with file:line)
} gn_mmlu_set;

void gn_mmlu_set_free(gn_mmlu_set *s);
// Appends the rows of an MMLU CSV (header question,choice0..3,answer with answer
// 0-3 or A-D; a file without that header is read as the original headerless
// 6-column layout). subject NULL: from the file name "<subject>_{dev,test,val}.csv".
gn_status gn_mmlu_load_csv(gn_mmlu_set *s, const char *path, const char *subject);
// Appends the rows of qlora's data/mmlu/{zero,five}_shot_mmlu_{val,test}.json (JSON lines: subject,
// input, output letter).
gn_status gn_mmlu_load_qlora(gn_mmlu_set *s, const char *path);
// "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
// (hendrycks' format_subject puts a space before every word: hence two spaces).
char *gn_mmlu_header(const char *subject);
// The k-shot prompt for q: header, k exemplars "Q\nA. ..\nB. ..\nC. ..\nD. ..\nAnswer: X\n\n",
// then q in the same form ending in "Answer:". For a qlora-format q (prompt0),
// the exemplars go between its header and its question. malloc'd.
char *gn_mmlu_prompt(const gn_mmlu_item *shots, int k, const gn_mmlu_item *q);

typedef struct {
    int pred;          // argmax over the four letter logits (0..3)
    float logit[4];    // logits of the A/B/C/D tokens after "Answer:"
    int n_tokens;      // prompt length
    int shots;         // exemplars actually used (fewer when the prompt did not fit)
    int truncated;     // even the 0-shot prompt did not fit: left-truncated
} gn_mmlu_pred;

// Ids of tokenizer("A"/"B"/"C"/"D", add_special_tokens=False)[0] (qlora's rule).
gn_status gn_mmlu_letter_ids(const gn_tokenizer *t, int32_t ids[4]);
// Scores one item: prompt with up to k exemplars (dropping exemplars from the
// end while the prompt does not fit the session, as hendrycks' evaluate.py does).
gn_status gn_mmlu_score(gn_lm *lm, const int32_t letters[4], const gn_mmlu_item *shots, int k,
                        const gn_mmlu_item *q, int bos, gn_mmlu_pred *out);

// ===========================================================================
// CrowS-Pairs (crows.c)

typedef struct {
    char *more, *less;  // sent_more (more stereotypical), sent_less
    char *bias;         // bias_type
    int stereo;         // stereo_antistereo == "stereo"
    int line;           // CSV line of the record
} gn_crows_pair;

// Reads crows_pairs_anonymized.csv (columns found by header name). Rows with a
// wrong field count or empty sentences are skipped, counted in *skipped and logged.
gn_status gn_crows_load(const char *path, gn_crows_pair **out, int *n, int *skipped);
void gn_crows_free(gn_crows_pair *p, int n);

// ===========================================================================
// Perplexity (ppl.c)

typedef struct {
    int ctx;     // window length in tokens
    int stride;  // how far the window moves (<= ctx)
} gn_ppl_opts;

typedef struct {
    double nll;          // sum of -ln p over scored tokens
    long long n_scored;  // tokens scored
    long long n_tokens;  // tokens seen (incl. the unscored first token of each document)
    int n_windows, n_docs;
} gn_ppl_acc;

// HF's strided method ("Perplexity of fixed-length models"): windows
// [begin, begin+ctx) for begin = 0, stride, 2*stride, ...; each window runs from an
// empty cache and scores only the tokens no earlier window scored, so every token
// but the document's first is scored exactly once, with up to ctx-stride tokens of
// context. Adds one document's totals to acc.
gn_status gn_ppl_doc(gn_lm *lm, const int32_t *ids, int n, const gn_ppl_opts *o, gn_ppl_acc *acc);

// ===========================================================================
// Pairwise judging (judge.c)

typedef struct {
    char *system;     // system_prompt
    char *tmpl;       // prompt_template with {question} {answer_1} {answer_2} {prompt}
    char *prompt;     // defaults.prompt
    char *category;   // "general", "coding", "math"
} gn_judge_template;

// Reads a *_prompt_threeclass.jsonl file (one template per line).
gn_status gn_judge_templates_load(const char *path, gn_judge_template **t, int *n);
void gn_judge_templates_free(gn_judge_template *t, int n);
// The template for a question category: the one whose category matches, else
// "general", else the first.
const gn_judge_template *gn_judge_template_for(const gn_judge_template *t, int n, const char *category);
// Fills the template in one pass (text inside the answers is never re-expanded). malloc'd.
char *gn_judge_render(const gn_judge_template *t, const char *question, const char *answer1, const char *answer2);
// The release's three-class parse (eval_gpt_review.py): the last non-empty line
// must be the integer 1, 2 or 3; we also accept it wrapped in markdown/punctuation
// ("**2**", "3."). Anything else gives -1.
int gn_judge_parse_verdict(const char *review);

// One answer of a generations file.
typedef struct {
    char *qid;        // question_id as text (number or string in the file)
    int qid_is_num;
    char *question;   // the question text when the file has it (NULL otherwise)
    char *answer;
    char *category;   // NULL when absent
} gn_gen_row;

// Reads a generations file: the release's format (question_id, text = question,
// generation) or FastChat answers (question_id, text = answer). Rows without an
// id or answer are skipped (counted, logged).
gn_status gn_gen_load(const char *path, gn_gen_row **rows, int *n, int *skipped);
void gn_gen_free(gn_gen_row *rows, int n);

// Is the HTTP client compiled in (libcurl found at build time)?
int gn_http_available(void);
// POSTs an OpenAI chat completion to url (".../v1" or ".../chat/completions")
// with a system and a user message; *reply gets choices[0].message.content
// (malloc'd). key may be NULL (no Authorization header). Retries network errors,
// 429 and 5xx `retries` times with backoff.
gn_status gn_http_chat(const char *url, const char *key, const char *model, const char *system, const char *user,
                       double temperature, int max_tokens, int timeout_s, int retries, char **reply);

#endif
