"""Native reference code (llama.cpp through llama-cpp-python) run in a child process.

llama-cpp-python is compiled on the test machine with that CPU's instruction set; a build that
does not fit the CPU (or an instruction the kernel has not enabled for the process, such as AMX
tiles) dies with SIGILL, and in-process that kills pytest with no summary. Here each call runs
in a fresh spawned process: a crash fails the one test that asked, with the exit reason.

    ids, logits = isolated(llama_logits, "model.gguf", text="Hello", n_tokens=8, n_ctx=64)
"""
import concurrent.futures
import multiprocessing

import numpy as np


def isolated(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a spawned child process; its result, or AssertionError if it died."""
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent holds torch/OpenMP threads
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        fut = ex.submit(fn, *args, **kwargs)
        try:
            return fut.result()
        except concurrent.futures.process.BrokenProcessPool as e:
            raise AssertionError(f"the reference {fn.__name__} died in its child process (a crash in native code, "
                                 f"e.g. an illegal instruction in a CPU-specific build): {e}") from None


def _llama(model, **kw):
    import llama_cpp
    return llama_cpp.Llama(model_path=str(model), verbose=False, **kw)


def llama_tokenize(model, texts, add_bos=False, special=True):
    """llama.cpp's token ids of each text (vocabulary only)."""
    llm = _llama(model, vocab_only=True)
    return [list(llm.tokenize(t.encode("utf-8"), add_bos=add_bos, special=special)) for t in texts]


def llama_logits(model, ids=None, text=None, n_tokens=None, n_ctx=256, n_threads=2):
    """(ids, float32 logits [len(ids), vocab]) of one llama.cpp evaluation; the ids are given,
    or the first n_tokens of text's tokens (no BOS, no special tokens)."""
    llm = _llama(model, logits_all=True, n_ctx=n_ctx, n_threads=n_threads)
    if ids is None:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        assert len(ids) >= n_tokens, len(ids)
        ids = ids[:n_tokens]
    ids = [int(i) for i in ids]
    llm.reset()
    llm.eval(ids)
    logits = np.array(llm.scores[:len(ids)], dtype=np.float32)
    assert logits.shape == (len(ids), llm.n_vocab())
    return ids, logits


def llama_strided_nll(model, texts, ctx, stride, n_threads=2):
    """HF's strided sliding-window perplexity pieces over documents, from llama.cpp's logits:
    (total NLL, tokens scored, tokens, windows). No BOS is added (as the model's GGUF says)."""
    llm = _llama(model, n_ctx=ctx, n_batch=ctx, logits_all=True, n_threads=n_threads)
    nll, scored, tokens, windows = 0.0, 0, 0, 0
    for text in texts:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        tokens += len(ids)
        prev_end = 0
        for begin in range(0, len(ids), stride):
            end = min(begin + ctx, len(ids))
            trg = end - prev_end
            w = ids[begin:end]
            llm.reset()
            llm.eval(w)
            lg = np.array(llm.scores[:len(w)], dtype=np.float64)
            lg = lg - lg.max(1, keepdims=True)
            lp = lg - np.log(np.exp(lg).sum(1, keepdims=True))
            for j in range(max(1, len(w) - trg), len(w)):
                nll -= lp[j - 1, w[j]]
                scored += 1
            windows += 1
            prev_end = end
            if end == len(ids):
                break
    return nll, scored, tokens, windows
