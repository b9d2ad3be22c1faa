"""`guanaco serve`, the OpenAI-compatible HTTP server.

Each test talks to `guanaco serve` started as a subprocess on a free loopback port
(`--port 0`; the server prints the port it got) and stopped at the end (SIGTERM: it must
exit 0, with no sanitizer report on stderr). Traffic goes to 127.0.0.1 only.

  - the official `openai` client (PyPI): chat and completions, streaming and not, stop
    strings, sampling options, usage counts, an adapter chosen by name, errors;
  - the chat page and the rating page driven in headless Chromium (Debian's chromium and
    chromedriver, selenium from PyPI);
  - a load test: 16 concurrent clients x 200 short requests, all complete, none failed;
  - bad requests: malformed JSON, wrong types, huge bodies, negative max_tokens, invalid
    UTF-8, a client sending one byte per second, disconnects mid-stream, a full queue,
    timeouts, API keys; the server keeps serving the others throughout.

What is expected comes from the protocol (OpenAI's API shapes), from the release's
judgments format (data/qlora-eval/ratings-gpt4) and from consistency with the
same library run without the server (`guanaco generate`, one request at a time).
Model: SmolLM2-135M-Instruct Q4_1 GGUF (ChatML, <|im_end|> ends a turn); the adapter is a
random PEFT LoRA made here with peft for SmolLM2's shapes.
"""
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import DATA, GUANACO, read_text, run_binary, sanitizer_builds, sanitizer_report

LOOPBACK = "127.0.0.1"
SERVER_ENV = {"OMP_WAIT_POLICY": "passive"}  # idle kernel threads sleep: the tests share the CPUs


# ---------------------------------------------------------------------------
# a server as a subprocess


class Server:
    """`guanaco serve` on a free loopback port; .url, .port, .stop()."""

    def __init__(self, model, *args, binary=GUANACO, env=None, start_timeout=120):
        e = dict(os.environ)
        e.update(SERVER_ENV)
        e.pop("GUANACO_API_KEY", None)
        if env:
            e.update(env)
        self.cmd = [str(binary), "serve", "-m", str(model), "--host", LOOPBACK, "--port", "0"] + [str(a) for a in args]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self._err = []
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.time() + start_timeout
        line = b""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line or b"listening on" in line:
                break
        m = re.search(rb"http://127\.0\.0\.1:(\d+)", line)
        if not m:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not start: {line!r}\n{self.stderr()}")
        self.port = int(m.group(1))
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.stopped = False

    def _drain(self):
        for line in self.proc.stderr:
            self._err.append(line.decode("utf-8", "replace"))

    def stderr(self):
        return "".join(self._err)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, check=True):
        """SIGTERM, wait; with check: exit 0 and no sanitizer report."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("server did not stop within 30 s of SIGTERM")
        time.sleep(0.2)  # the stderr reader catches up
        if check:
            rep = sanitizer_report(self.stderr())
            assert rep is None, f"sanitizer report: {rep}\n{self.stderr()[-4000:]}"
            assert self.proc.returncode == 0, f"exit {self.proc.returncode}\n{self.stderr()[-4000:]}"


def request(srv, method, path, body=None, headers=None, timeout=120):
    """One HTTP request on a fresh connection: (status, headers, body bytes)."""
    c = http.client.HTTPConnection(LOOPBACK, srv.port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    c.request(method, path, data, h)
    r = c.getresponse()
    out = (r.status, dict(r.getheaders()), r.read())
    c.close()
    return out


def post_json(srv, path, body, **kw):
    st, _, data = request(srv, "POST", path, body, **kw)
    return st, json.loads(data)


def assert_error(status, body, want_status, param=None):
    """An OpenAI-style error object with the given status (and param)."""
    assert status == want_status, (status, body)
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if param is not None:
        assert err["param"] == param, err


def model_name(path):
    return pathlib.Path(path).name[: -len(".gguf")]


# ---------------------------------------------------------------------------
# fixtures: an adapter, two generations files, the shared server


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A random PEFT LoRA (r 8, alpha 16, q/v of all 30 layers) for SmolLM2-135M's shapes.

    The base is built on the meta device (its weights are never needed), the LoRA
    matrices are filled from a fixed seed (B non-zero, so the adapter changes the output)
    and save_pretrained writes adapter_model.safetensors + adapter_config.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("adapter") / "rnd-lora"
    cfg = LlamaConfig(vocab_size=64, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048)
    with torch.device("meta"):
        base = LlamaForCausalLM(cfg)
    pm = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                         lora_dropout=0.0, init_lora_weights=False))
    g = torch.Generator().manual_seed(7)
    n = 0
    for _, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            for lin in (mod.lora_A["default"], mod.lora_B["default"]):
                lin.weight = torch.nn.Parameter(torch.randn(lin.weight.shape, generator=g) * 0.1)
            n += 1
    assert n == 60
    pm.save_pretrained(str(d))
    from safetensors import safe_open
    with safe_open(str(d / "adapter_model.safetensors"), "pt") as f:
        assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in f.keys()
    return d


@pytest.fixture(scope="module")
def rate_files(tmp_path_factory):
    """The first 8 rows of two of the release's Vicuna generations files (7B and 13B Guanaco)."""
    src = DATA / "qlora-eval" / "generations" / "vicuna"
    d = tmp_path_factory.mktemp("rate")
    out = []
    for name in ("7b-guanaco-vicuna-generations-topp0.9-temp0.7.jsonl",
                 "13b-guanaco-vicuna-generations-topp0.9-temp0.7.jsonl"):
        lines = read_text(src / f"{name}.gz").splitlines()[:8]
        (d / name).write_text("\n".join(lines) + "\n")
        out.append(d / name)
    return out[0], out[1], d / "judgments.jsonl"


@pytest.fixture(scope="module")
def srv(smollm2_gguf, adapter_dir, rate_files):
    a, b, judgments = rate_files
    s = Server(smollm2_gguf, "-a", f"rnd={adapter_dir}", "--parallel", 16, "--ctx", 512, "--rate-a", a,
               "--rate-b", b, "--ratings-file", judgments)
    yield s
    s.stop()


@pytest.fixture
def client(srv):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)


def cli_generate(model, prompt, n, adapter=None):
    """What the library says without the server: `guanaco generate` greedy, n tokens."""
    args = ["generate", "-m", model, "-p", prompt, "-n", n, "--temp", 0]
    if adapter:
        args += ["-a", adapter]
    p = run_binary(GUANACO, *args, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout[:-1] if p.stdout.endswith("\n") else p.stdout  # generate adds one newline


# ---------------------------------------------------------------------------
# 1. the official openai client


def test_models_health_metrics(srv, client, smollm2_gguf):
    ids = [m.id for m in client.models.list().data]
    assert ids == [model_name(smollm2_gguf), "rnd"]
    st, body = post_json(srv, "/v1/models", {})  # wrong method
    assert_error(st, body, 405)
    st, _, data = request(srv, "GET", "/health")
    h = json.loads(data)
    assert st == 200 and h["status"] == "ok" and h["slots"] == 16
    st, hdr, data = request(srv, "GET", "/metrics")
    text = data.decode()
    assert st == 200 and hdr["Content-Type"].startswith("text/plain")
    for name, kind in [("guanaco_requests_total", "counter"), ("guanaco_generated_tokens_total", "counter"),
                       ("guanaco_prompt_tokens_total", "counter"), ("guanaco_queue_depth", "gauge"),
                       ("guanaco_request_duration_seconds", "histogram"), ("guanaco_http_responses_total", "counter")]:
        assert f"# TYPE {name} {kind}" in text, name
    assert 'guanaco_request_duration_seconds_bucket{le="+Inf"}' in text


def test_chat_and_completions(client, smollm2_gguf):
    base = model_name(smollm2_gguf)
    r = client.chat.completions.create(model=base, messages=[{"role": "user", "content": "What is the capital of France?"}],
                                       temperature=0, max_tokens=24)
    msg = r.choices[0].message
    assert r.object == "chat.completion" and msg.role == "assistant"
    assert "Paris" in msg.content
    assert "<|im_end|>" not in msg.content and "<|im_start|>" not in msg.content  # stopped at the turn marker
    assert r.choices[0].finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 10 and 0 < u.completion_tokens <= 24 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    # completions: the same text as the library gives without the server
    prompt = "The capital of France is"
    r = client.completions.create(model=base, prompt=prompt, temperature=0, max_tokens=8)
    assert r.object == "text_completion"
    assert r.choices[0].text == cli_generate(smollm2_gguf, prompt, 8)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8


def test_streaming_equals_plain(client, smollm2_gguf):
    base = model_name(smollm2_gguf)
    msgs = [{"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name three colours."}]
    plain = client.chat.completions.create(model=base, messages=msgs, temperature=0, max_tokens=40)
    chunks = list(client.chat.completions.create(model=base, messages=msgs, temperature=0, max_tokens=40, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1
    # completions, streamed; the raw stream ends with data: [DONE]
    prompt = "Once upon a time"
    plain = client.completions.create(model=base, prompt=prompt, temperature=0, max_tokens=20)
    streamed = list(client.completions.create(model=base, prompt=prompt, temperature=0, max_tokens=20, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    assert streamed[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_raw_sse_ends_with_done(srv):
    c = http.client.HTTPConnection(LOOPBACK, srv.port, timeout=60)
    c.request("POST", "/v1/completions", json.dumps({"prompt": "Hello", "max_tokens": 5, "stream": True}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    events = [e for e in r.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-1])
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_stop_strings(client, smollm2_gguf):
    base = model_name(smollm2_gguf)
    prompt = "The capital of France is"
    full = client.completions.create(model=base, prompt=prompt, temperature=0, max_tokens=12).choices[0].text
    assert "\n" in full, full  # " Paris.\n\n..." from SmolLM2
    for stop in ("\n", ["\n"], ["zzz", "."]):
        r = client.completions.create(model=base, prompt=prompt, temperature=0, max_tokens=12, stop=stop)
        first = min(i for i in (full.find(s) for s in ([stop] if isinstance(stop, str) else stop)) if i >= 0)
        assert r.choices[0].text == full[:first], (stop, r.choices[0].text, full)
        assert r.choices[0].finish_reason == "stop"
        # streamed: the stop string is never sent, not even in part
        st = list(client.completions.create(model=base, prompt=prompt, temperature=0, max_tokens=12, stop=stop, stream=True))
        assert "".join(c.choices[0].text for c in st) == full[:first]
    # a stop string of several tokens
    cut = full.find("The ans")
    if cut > 0:
        r = client.completions.create(model=base, prompt=prompt, temperature=0, max_tokens=12, stop="The ans")
        assert r.choices[0].text == full[:cut]


def test_sampling_options(client, smollm2_gguf):
    base = model_name(smollm2_gguf)
    kw = dict(model=base, prompt="My favourite food is", max_tokens=12, temperature=1.0, top_p=0.95)
    a = client.completions.create(seed=1234, **kw).choices[0].text
    b = client.completions.create(seed=1234, **kw).choices[0].text
    assert a == b  # same seed, same draw
    texts = {client.completions.create(seed=s, **kw).choices[0].text for s in range(6)}
    assert len(texts) > 1  # different seeds differ somewhere
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=base, prompt="x", max_tokens=4, n=2)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=base, prompt="x", max_tokens=4, temperature=3)


def test_adapter_by_name(client, smollm2_gguf, adapter_dir):
    openai = pytest.importorskip("openai")
    base = model_name(smollm2_gguf)
    m = client.models.retrieve("rnd")
    assert m.id == "rnd"
    prompt = "The capital of France is"
    with_adapter = client.completions.create(model="rnd", prompt=prompt, temperature=0, max_tokens=8).choices[0].text
    without = client.completions.create(model=base, prompt=prompt, temperature=0, max_tokens=8).choices[0].text
    assert with_adapter != without
    assert with_adapter == cli_generate(smollm2_gguf, prompt, 8, adapter=adapter_dir)
    # both at once, interleaved: each request keeps its own adapter inside the shared batch
    res = {}

    def go(i):
        res[i] = client.completions.create(model="rnd" if i % 2 else base, prompt=prompt, temperature=0,
                                           max_tokens=8).choices[0].text

    ts = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert [res[i] for i in range(8)] == [without, with_adapter] * 4
    # chat through the adapter, streamed
    s = client.chat.completions.create(model="rnd", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                       temperature=0, stream=True)
    assert list(s)[-1].choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-adapter", prompt=prompt, max_tokens=2)


# ---------------------------------------------------------------------------
# 2. the web pages in headless Chromium


@pytest.fixture(scope="module")
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not look for drivers online
    os.environ.setdefault("SE_AVOID_STATS", "true")
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
              "--disable-extensions", "--window-size=1200,900"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver_bin), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def wait_for(fn, timeout, what):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_chat_page(srv, browser):
    from selenium.webdriver.common.by import By
    browser.get(srv.url + "/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#model option"), 30, "the model list")
    # more tokens so the streaming can be watched; greedy for a stable answer
    browser.find_element(By.ID, "toggle-settings").click()
    for fid, v in (("max_tokens", "48"), ("temperature", "0")):
        e = browser.find_element(By.ID, fid)
        e.clear()
        e.send_keys(v)
    # record every length the answer goes through while it streams in
    browser.execute_script("""
        window.__lens = [];
        new MutationObserver(() => {
          const a = document.querySelectorAll('.msg.assistant .content');
          if (a.length) window.__lens.push(a[a.length - 1].textContent.length);
        }).observe(document.getElementById('messages'), {childList: true, subtree: true, characterData: true});""")
    for turn, question in enumerate(["What is the capital of France?", "And of Italy?"]):
        browser.execute_script("window.__lens = [];")
        browser.find_element(By.ID, "input").send_keys(question)
        browser.find_element(By.ID, "send").click()

        def done():
            els = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
            return els[turn] if len(els) > turn and els[turn].get_attribute("data-done") else None

        el = wait_for(done, 120, "the streamed answer")
        assert el.get_attribute("data-done") == "1", el.text
        final = el.find_element(By.CLASS_NAME, "content").text
        assert final and "[error" not in final
        lens = browser.execute_script("return window.__lens;")
        partial = sorted({n for n in lens if 0 < n < len(final)})
        assert partial, f"the answer did not stream in pieces: lengths {lens}"
        if turn == 0:
            assert "Paris" in final
    users = browser.find_elements(By.CSS_SELECTOR, ".msg.user")
    assert [u.find_element(By.CLASS_NAME, "content").text for u in users] == [
        "What is the capital of France?", "And of Italy?"]


def norm(text):
    return " ".join(text.split())


def test_rate_page(srv, browser, rate_files):
    from selenium.webdriver.common.by import By
    a_path, b_path, judgments = rate_files
    before = judgments.read_text().splitlines() if judgments.exists() else []
    rows_a = {json.loads(x)["question_id"]: json.loads(x) for x in a_path.read_text().splitlines()}
    rows_b = {json.loads(x)["question_id"]: json.loads(x) for x in b_path.read_text().splitlines()}
    browser.get(srv.url + "/rate")
    expected = []
    for k, button in enumerate(["pick1", "pick2", "tie"]):
        wait_for(lambda: browser.find_element(By.ID, "answer1").text and not browser.find_element(By.ID, button)
                 .get_attribute("disabled"), 30, "a pair to rate")
        shown = [norm(browser.find_element(By.ID, i).text) for i in ("answer1", "answer2")]
        prompt = norm(browser.find_element(By.ID, "prompt").text)
        qid = next(q for q, r in rows_a.items() if norm(r["text"]) == prompt)
        answer = lambda r: r.get("generation_truncated", r["generation"])  # noqa: E731
        ga, gb = norm(answer(rows_a[qid])), norm(answer(rows_b[qid]))
        assert sorted(shown) == sorted([ga, gb])  # both answers, names hidden
        if button == "tie":
            score = 3
        else:
            picked = shown[0] if button == "pick1" else shown[1]
            score = 1 if picked == ga else 2  # system A (--rate-a) is "Assistant 1" in the file
        expected.append((qid, score))
        browser.find_element(By.ID, "comment").send_keys(f"verdict {k}")
        browser.find_element(By.ID, button).click()
        wait_for(lambda: browser.find_element(By.TAG_NAME, "body").get_attribute("data-rated") == str(len(before) + k + 1),
                 30, "the verdict to be saved")
    lines = judgments.read_text().splitlines()[len(before):]
    assert len(lines) == 3
    release = sorted((DATA / "qlora-eval" / "ratings-gpt4" / "vicuna" / "pairwise").glob("*.jsonl.gz"))[0]
    rel = json.loads(read_text(release).splitlines()[0])
    for line, (qid, score) in zip(lines, expected):
        row = json.loads(line)
        assert set(rel) <= set(row), set(rel) - set(row)  # every field of the release's rows
        for k in rel:
            assert type(row[k]) is type(rel[k]), k
        assert row["question_id"] == qid and row["score"] == score
        assert row["text"].splitlines()[-1] == str(score)  # the verdict on the last line, as GPT-4's reviews
        assert row["model1"] == a_path.stem and row["model2"] == b_path.stem
        assert row["answer1_id"] != row["answer2_id"]
    # `guanaco eval elo` reads the file (when this build has the eval command)
    p = run_binary(GUANACO, "eval", "elo", judgments, "--rounds", 50, timeout=120)
    if "not part of this build" in p.stderr:
        return
    assert p.returncode == 0, p.stderr
    assert "7b-guanaco" in p.stdout and "13b-guanaco" in p.stdout, p.stdout


# ---------------------------------------------------------------------------
# 3. load: 16 clients x 200 short requests


def test_load_16_clients(srv, smollm2_gguf):
    n_clients, n_req, deadline = 16, 200, 420.0
    prompts = ["Count: one, two,", "The sky is", "Water boils at", "A cat is"]
    errors, done, texts = [], [0], {}
    lock = threading.Lock()
    t0 = time.time()

    def worker(k):
        c = http.client.HTTPConnection(LOOPBACK, srv.port, timeout=120)  # keep-alive
        for i in range(n_req):
            if time.time() - t0 > deadline:
                errors.append("out of time")
                return
            chat = (i % 10) == 9  # a tenth through the chat endpoint
            body = {"model": model_name(smollm2_gguf), "max_tokens": 4, "temperature": 0}
            if chat:
                body["messages"] = [{"role": "user", "content": prompts[k % 4]}]
            else:
                body["prompt"] = prompts[k % 4]
            try:
                c.request("POST", "/v1/chat/completions" if chat else "/v1/completions", json.dumps(body),
                          {"Content-Type": "application/json"})
                r = c.getresponse()
                j = json.loads(r.read())
                ch = j["choices"][0]
                ok = (r.status == 200 and ch["finish_reason"] in ("stop", "length")
                      and 0 < j["usage"]["completion_tokens"] <= body["max_tokens"]
                      and (ch["finish_reason"] == "stop" or j["usage"]["completion_tokens"] == body["max_tokens"]))
                if not ok:
                    errors.append((r.status, j))
                elif not chat:
                    with lock:
                        texts.setdefault((body["prompt"], body["max_tokens"]), set()).add(ch["text"])
            except Exception as e:  # noqa: BLE001 - any failure is an error of the test
                errors.append(repr(e))
                c.close()
                c = http.client.HTTPConnection(LOOPBACK, srv.port, timeout=120)
            with lock:
                done[0] += 1
        c.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(n_clients)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    wall = time.time() - t0
    assert not errors, f"{len(errors)} errors, first: {errors[:3]}"
    assert done[0] == n_clients * n_req
    # greedy answers do not depend on what else shares the batch
    assert all(len(v) == 1 for v in texts.values()), {k: v for k, v in texts.items() if len(v) > 1}
    st, _, data = request(srv, "GET", "/metrics")
    m = dict(re.findall(r"^(guanaco_decode_(?:steps|rows)_total) (\d+)", data.decode(), re.M))
    steps, rows = int(m["guanaco_decode_steps_total"]), int(m["guanaco_decode_rows_total"])
    print(f"\n{n_clients * n_req} requests in {wall:.1f} s, mean decode batch {rows / steps:.1f}")
    assert rows / steps > 4, "requests were not decoded together"


# ---------------------------------------------------------------------------
# 4. bad requests


def small_server(model, binary, name):
    """A server with tight limits: 2 slots, 2 waiting, 64 KiB bodies, 2 s to send a request."""
    if not pathlib.Path(binary).exists():
        pytest.skip(f"{binary} not built")
    probe = run_binary(binary, "serve", "-m", "/nonexistent/model.gguf", timeout=60)
    if "not part of this build" in probe.stderr:
        pytest.skip(f"{name}: no server in this build")
    return Server(model, "--parallel", 2, "--queue", 2, "--ctx", 256, "--max-body", 65536, "--read-timeout", 2,
                  "--max-tokens", 200, binary=binary)


@pytest.fixture(params=["release"] + [name for name, _ in sanitizer_builds()])
def bad_srv(request, smollm2_gguf):
    """The release build, then each sanitizer build (no report allowed when it stops)."""
    binary = GUANACO if request.param == "release" else dict(sanitizer_builds())[request.param]
    s = small_server(smollm2_gguf, binary, request.param)
    yield s
    s.stop()


@pytest.fixture
def small_srv(smollm2_gguf):
    s = small_server(smollm2_gguf, GUANACO, "release")
    yield s
    s.stop()


def test_bad_requests(bad_srv):
    s = bad_srv
    good = {"prompt": "Hello", "max_tokens": 3}
    # malformed JSON, wrong types, bad values: 400 with an OpenAI error object naming the field
    st, b = post_json(s, "/v1/completions", b'{"prompt": "x", ')
    assert_error(st, b, 400)
    st, b = post_json(s, "/v1/chat/completions", b"[1, 2]")
    assert_error(st, b, 400)
    for path, body, param in [
        ("/v1/chat/completions", {"messages": "hi"}, "messages"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature"),
        ("/v1/completions", {"prompt": "x", "max_tokens": "10"}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": -5}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 2.5}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 10 ** 9}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "top_p": 7}, "top_p"),
        ("/v1/completions", {"prompt": "x", "stop": 5}, "stop"),
        ("/v1/completions", {"prompt": "x", "stop": ["a", None]}, "stop"),
        ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": "x", "seed": "s"}, "seed"),
        ("/v1/completions", {"prompt": {"a": 1}}, "prompt"),
        ("/v1/completions", {"prompt": [10 ** 7]}, "prompt"),
        ("/v1/completions", {}, "prompt"),
        ("/v1/completions", {"prompt": "x", "model": 3}, "model"),
    ]:
        st, b = post_json(s, path, body)
        assert_error(st, b, 400, param)
    st, b = post_json(s, "/v1/completions", {"prompt": "x", "model": "gpt-4"})
    assert_error(st, b, 404, "model")
    # invalid UTF-8 (raw bytes, and an escaped lone surrogate)
    st, b = post_json(s, "/v1/completions", b'{"prompt": "\xff\xfe bad", "max_tokens": 2}')
    assert_error(st, b, 400)
    st, b = post_json(s, "/v1/completions", b'{"prompt": "\\ud800", "max_tokens": 2}')
    assert_error(st, b, 400)
    # deep nesting, NUL bytes, a prompt longer than the context
    st, b = post_json(s, "/v1/completions", b'{"prompt": ' + b"[" * 20000 + b"]" * 20000 + b"}")
    assert_error(st, b, 400)
    st, b = post_json(s, "/v1/completions", b'{"prompt": "a\\u0000b", "max_tokens": 2}')
    assert st == 200, b
    st, b = post_json(s, "/v1/completions", {"prompt": "word " * 400, "max_tokens": 2})
    assert_error(st, b, 400)
    assert b["error"]["code"] == "context_length_exceeded"
    # huge bodies: declared (413 before reading) and chunked (413 after reading, or dropped)
    st, b = post_json(s, "/v1/completions", b'{"prompt": "' + b"a" * 200000 + b'"}')
    assert_error(st, b, 413)
    c = http.client.HTTPConnection(LOOPBACK, s.port, timeout=30)
    try:
        c.request("POST", "/v1/completions", (b"a" * 8192 for _ in range(20)), {"Transfer-Encoding": "chunked"},
                  encode_chunked=True)
        r = c.getresponse()
        assert r.status == 413
        assert json.loads(r.read())["error"]["code"] == "request_too_large"
    except (ConnectionError, http.client.HTTPException):
        pass  # dropped is fine too
    c.close()
    # unknown paths and methods; garbage that is not HTTP
    st, _, data = request(s, "GET", "/nope")
    assert_error(st, json.loads(data), 404)
    st, _, data = request(s, "DELETE", "/v1/completions")
    assert_error(st, json.loads(data), 405)
    with socket.create_connection((LOOPBACK, s.port), timeout=10) as k:
        k.sendall(b"\x00\x01\x02garbage\r\n\r\n")
        try:
            k.recv(1000)
        except OSError:
            pass
    # fuzz: random byte edits of a valid body are answered (200 or 4xx), never crash the server
    import random
    rnd = random.Random(1234)
    seed_body = json.dumps({"prompt": "hi", "max_tokens": 1, "stop": ["x"], "temperature": 0, "seed": 5}).encode()
    for _ in range(60):
        b = bytearray(seed_body)
        for _ in range(rnd.randint(1, 4)):
            op, i = rnd.randrange(3), rnd.randrange(len(b))
            if op == 0:
                b[i] = rnd.randrange(256)
            elif op == 1:
                b.insert(i, rnd.choice(b'{}[]",:0123456789\\ux\xff\x00'))
            elif len(b) > 1:
                del b[i]
        st, _, data = request(s, "POST", rnd.choice(["/v1/completions", "/v1/chat/completions"]), bytes(b))
        assert st in (200, 400, 404), (st, bytes(b), data)
        if st != 200:
            assert "error" in json.loads(data)
    # the server is still fine
    st, b = post_json(s, "/v1/completions", good)
    assert st == 200 and b["choices"][0]["text"] is not None


def test_slow_client_is_dropped(small_srv):
    """One byte a second: dropped once --read-timeout (2 s) passes; others are served meanwhile."""
    s = small_srv
    body = json.dumps({"prompt": "Hello", "max_tokens": 2}).encode()
    req = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body), body)
    k = socket.create_connection((LOOPBACK, s.port), timeout=10)
    t0 = time.time()
    dropped = None
    served = []
    for i, byte in enumerate(req):
        if i == 1:  # a normal client meanwhile
            threading.Thread(target=lambda: served.append(post_json(s, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})[0])).start()
        try:
            k.sendall(bytes([byte]))
            k.settimeout(1.0)
            if k.recv(4096) == b"":
                dropped = time.time() - t0
                break
        except socket.timeout:
            continue
        except OSError:
            dropped = time.time() - t0
            break
        if time.time() - t0 > 15:
            break
    k.close()
    assert dropped is not None and dropped < 8, f"slow client not dropped (after {time.time() - t0:.1f} s)"
    wait_for(lambda: served, 30, "the other client's answer")
    assert served == [200]


def test_disconnect_mid_stream(bad_srv):
    s = bad_srv
    for stream in (True, False):
        c = http.client.HTTPConnection(LOOPBACK, s.port, timeout=30)
        c.request("POST", "/v1/completions", json.dumps({"prompt": "Once upon a time", "max_tokens": 200, "stream": stream,
                                                         "temperature": 0.8, "seed": 1}),
                  {"Content-Type": "application/json"})
        if stream:
            r = c.getresponse()
            assert r.status == 200
            r.fp.readline()  # the first event has started
        else:
            time.sleep(0.3)
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    # both generations stop early (not 200 tokens each): the slots free up quickly
    def cancelled():
        st, _, data = request(s, "GET", "/metrics")
        m = re.search(r'guanaco_requests_total\{endpoint="completions",finish_reason="cancelled"\} (\d+)', data.decode())
        return int(m.group(1)) >= 2
    wait_for(cancelled, 30, "both requests to be cancelled")
    st, b = post_json(s, "/v1/completions", {"prompt": "Hello", "max_tokens": 3})
    assert st == 200 and (b["usage"]["completion_tokens"] == 3 or b["choices"][0]["finish_reason"] == "stop"), b


def test_queue_full(small_srv):
    """2 slots + 2 waiting: 8 long requests at once get some 503s (OpenAI error, Retry-After); the rest complete."""
    s = small_srv
    results = []

    def go():
        st, hdr, data = request(s, "POST", "/v1/completions", {"prompt": "Tell me a story.", "max_tokens": 60,
                                                                "temperature": 0.7})
        results.append((st, hdr, json.loads(data)))

    ts = [threading.Thread(target=go) for _ in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    codes = sorted(st for st, _, _ in results)
    assert 503 in codes and 200 in codes, codes
    for st, hdr, body in results:
        if st == 503:
            assert_error(st, body, 503)
            assert hdr.get("Retry-After") == "1"
        else:
            assert st == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")


def test_request_timeout(smollm2_gguf):
    s = Server(smollm2_gguf, "--parallel", 1, "--ctx", 2048, "--timeout", 1.5)
    try:
        t0 = time.time()
        # greedy counting goes on and on: only the deadline ends it
        st, b = post_json(s, "/v1/completions", {"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 2000,
                                                 "temperature": 0})
        took = time.time() - t0
        assert st == 200 and took < 8, (st, took)
        assert b["choices"][0]["finish_reason"] == "length"
        assert 0 < b["usage"]["completion_tokens"] < 1500, b["usage"]
    finally:
        s.stop()


def test_api_key(smollm2_gguf):
    openai = pytest.importorskip("openai")
    for how in ("flag", "env"):
        args, env = (["--api-key", "s3cret"], None) if how == "flag" else ([], {"GUANACO_API_KEY": "s3cret"})
        s = Server(smollm2_gguf, "--parallel", 1, "--ctx", 256, *args, env=env)
        try:
            bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
            st, _, data = request(s, "POST", "/v1/completions", {"prompt": "x"})
            assert_error(st, json.loads(data), 401)
            ok = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0)
            assert ok.completions.create(model=model_name(smollm2_gguf), prompt="Hi", max_tokens=2).usage.completion_tokens > 0
            assert request(s, "GET", "/health")[0] == 200  # health and the pages stay open
            assert request(s, "GET", "/")[0] == 200
        finally:
            s.stop()


def test_4bit_base(smollm2_gguf):
    """--4bit: the linear layers quantized to NF4 on load (QLoRA's base), served the same way."""
    s = Server(smollm2_gguf, "--4bit", "--parallel", 2, "--ctx", 256)
    try:
        st, b = post_json(s, "/v1/chat/completions", {"messages": [{"role": "user", "content": "What is the capital of France?"}],
                                                      "max_tokens": 16, "temperature": 0})
        assert st == 200 and "Paris" in b["choices"][0]["message"]["content"], b
    finally:
        s.stop()


def test_binds_loopback_by_default(smollm2_gguf):
    p = subprocess.run([str(GUANACO), "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "default 127.0.0.1" in p.stdout
    e = dict(os.environ)
    e.update(SERVER_ENV)
    proc = subprocess.Popen([str(GUANACO), "serve", "-m", str(smollm2_gguf), "--port", "0", "--parallel", "1",
                             "--ctx", "128"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        line = proc.stdout.readline().decode()
        assert "listening on http://127.0.0.1:" in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
