/*
 * eval.h — the evaluation suite behind `guanaco eval` (library side; the CLI
 * glue is src/cli/cmd_eval*.c). Its API is declared in guanaco.h ("Evaluation"). Everything the Guanaco paper measured:
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

#include "guanaco.h" // the evaluation API (gn_csv_*, gn_judgments_*, gn_elo_*, gn_lm_*, gn_mmlu_*, ...) is public

#endif
