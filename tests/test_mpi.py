"""Data-parallel finetune under MPI: `mpirun -np N guanaco finetune`.

Oracle: the single-process build (GN_BUILD) on the same global batch. N ranks split every
global batch and sum their LoRA gradients, so they must give the same adapter as one process
up to float32 summation order. Runs on loopback TCP with Open MPI.

Needs the MPI build of the CLI: $GN_MPI_BUILD/guanaco (scripts/test.sh builds it with
`make MPI=1 BUILD=build-mpi cli`), else build-mpi/guanaco. A missing build or a missing
mpirun fails these tests: CI must not pass without running them.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import ROOT, run_guanaco
from test_finetune import finetune_args, tiny  # noqa: F401  (tiny: module fixture, the tiny LLaMA + oasst rows)

MPI_BUILD = pathlib.Path(os.environ.get("GN_MPI_BUILD", ROOT / "build-mpi"))
MPI_GUANACO = MPI_BUILD / "guanaco"
# Root in containers, more ranks than cores, loopback only.
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMP_NUM_THREADS": "1"}
MPI_FLAGS = ["--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo",
             "--mca", "oob_tcp_if_include", "lo"]


@pytest.fixture(scope="module")
def mpi():
    assert shutil.which("mpirun"), "mpirun not found: apt-get install openmpi-bin libopenmpi-dev (scripts/test.sh does)"
    assert MPI_GUANACO.exists(), f"{MPI_GUANACO} not built: make MPI=1 BUILD={MPI_BUILD} cli (or set GN_MPI_BUILD)"
    return MPI_GUANACO


def mpirun_cmd(n, args, extra_env=()):
    xs = []
    for k in ("OMP_NUM_THREADS", *extra_env):
        xs += ["-x", k]
    return ["mpirun", "-np", str(n), *MPI_FLAGS, *xs, str(MPI_GUANACO), *map(str, args)]


def mpirun(n, args, check=True, timeout=300, env=None):
    e = dict(os.environ, **MPI_ENV, **(env or {}))
    p = subprocess.run(mpirun_cmd(n, args, tuple(env or ())), capture_output=True, text=True, timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"mpirun -np {n} exited {p.returncode}\nstdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}")
    return p


def args_for(tiny, run, steps, batch, accum, extra=()):  # noqa: F811
    return finetune_args(tiny, run, steps, ("--per-device-batch-size", str(batch), "--gradient-accumulation-steps",
                                            str(accum), "--compute-dtype", "f32", *extra))


def losses(run):
    return [json.loads(l)["loss"] for l in (run / "log.jsonl").read_text().splitlines() if '"loss"' in l]


def adapter_rel_diff(a, b):
    """Largest |a - b| over a tensor, relative to the tensor's largest |a|, over all tensors."""
    ta, tb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert ta.keys() == tb.keys()
    return max(float(np.abs(ta[k] - tb[k]).max() / np.abs(ta[k]).max()) for k in ta)


# float32 sums of the same gradients in another order, then 6-9 AdamW steps: ~1e-6 measured
TOL = 1e-4


def test_two_ranks_equal_one_process_on_the_same_global_batch(tmp_path, tiny, mpi):  # noqa: F811
    """Global batch 2 x 3 sequences: each rank runs 3, so every micro-batch is split across the
    ranks and the per-token normaliser must be the micro-batch's, not the rank's. Dropout 0.1
    (same masks wherever a sequence runs), clipping on, checkpoints every 2 steps."""
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    run_guanaco(*args_for(tiny, one, 6, 2, 3))
    p = mpirun(2, args_for(tiny, two, 6, 2, 3))
    assert "data parallel over 2 ranks" in p.stderr, p.stderr
    # rank 0 alone reports and writes: one progress line per step, one log line per step
    assert sum(l.startswith("step ") for l in p.stderr.splitlines()) == 6, p.stderr
    assert len(losses(two)) == 6
    np.testing.assert_allclose(losses(two), losses(one), rtol=1e-6)
    d = adapter_rel_diff(one, two)
    assert d <= TOL, f"2 ranks vs 1 process: adapters differ by {d:.3g} of max |w|"
    assert adapter_rel_diff(one / "checkpoint-4", two / "checkpoint-4") <= TOL
    assert not list(two.glob("optimizer-*")), "only rank 0 writes into RUN_DIR"
    # the tolerance is meaningful: another global batch (2 x 2) lands far outside it
    run_guanaco(*args_for(tiny, other, 6, 2, 2))
    assert adapter_rel_diff(one, other) > 100 * TOL


def test_resume_with_another_number_of_ranks(tmp_path, tiny, mpi):  # noqa: F811
    """Global batch 1 x 5 (uneven shares): 2 ranks for steps 1-3, one process for 4-6, 3 ranks for
    7-9 equals one process for 1-9."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    run_guanaco(*args_for(tiny, ref, 9, 1, 5, ("--save-steps", "3")))
    mpirun(2, args_for(tiny, run, 3, 1, 5, ("--save-steps", "3")))
    run_guanaco(*args_for(tiny, run, 6, 1, 5, ("--save-steps", "3", "--resume")))
    p = mpirun(3, args_for(tiny, run, 9, 1, 5, ("--save-steps", "3", "--resume")))
    assert "resuming from" in p.stderr and "checkpoint-6" in p.stderr, p.stderr
    np.testing.assert_allclose(losses(run), losses(ref), rtol=1e-6)
    for ck in ("checkpoint-3", "checkpoint-6", "checkpoint-9", "."):
        d = adapter_rel_diff(ref / ck, run / ck)
        assert d <= TOL, f"{ck}: resumed across 2 -> 1 -> 3 ranks differs from one process by {d:.3g}"
    # step, RNG, epoch, data position and tokens seen carry across the rank counts
    st = [json.loads((r / "checkpoint-9" / "trainer_state.json").read_text()) for r in (run, ref)]
    assert st[0] == st[1], st


def rank_pids(tag):
    """{rank: pid} of the processes started with GN_TEST_TAG=tag (read from /proc)."""
    out = {}
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (p / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in kv)
        except OSError:
            continue
        if env.get("GN_TEST_TAG") == tag and "OMPI_COMM_WORLD_RANK" in env:
            out[int(env["OMPI_COMM_WORLD_RANK"])] = int(p.name)
    return out


@pytest.mark.parametrize("victim", [1, 0])
def test_killing_a_rank_stops_the_job_and_keeps_the_last_checkpoint(tmp_path, tiny, mpi, victim):  # noqa: F811
    """SIGKILL one rank mid-run (rank 1, or rank 0 that writes the checkpoints): the job ends
    with a nonzero status and a message naming the dead rank, nothing is left running, and the
    newest checkpoint is whole: one process resumes from it and ends where an uninterrupted
    run ends."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    tag = f"{os.getpid()}-{victim}-{time.time()}"
    a = args_for(tiny, run, 100000, 2, 3, ("--save-steps", "1"))
    env = dict(os.environ, **MPI_ENV, GN_TEST_TAG=tag)
    proc = subprocess.Popen(mpirun_cmd(2, a, ("GN_TEST_TAG",)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoint-3").is_dir():
            assert proc.poll() is None and time.time() < deadline, "the 2-rank run did not reach checkpoint-3"
            time.sleep(0.05)
        pids = rank_pids(tag)
        assert sorted(pids) == [0, 1], pids
        os.kill(pids[victim], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0, err
    assert f"rank {victim}" in err and ("signal 9" in err or "Killed" in err), err
    time.sleep(0.5)
    assert not rank_pids(tag), "a rank outlived the job"
    cks = sorted(int(c.name.split("-")[1]) for c in run.glob("checkpoint-*"))
    newest = run / f"checkpoint-{cks[-1]}"
    for f in ("adapter_model.safetensors", "adapter_config.json", "optimizer.bin", "trainer_state.json"):
        assert (newest / f).is_file(), f"{newest}/{f} missing"
    assert json.loads((newest / "trainer_state.json").read_text())["global_step"] == cks[-1]
    k = cks[-1] + 2
    run_guanaco(*args_for(tiny, run, k, 2, 3, ("--save-steps", "1", "--resume")))
    run_guanaco(*args_for(tiny, ref, k, 2, 3, ("--save-steps", "0")))
    d = adapter_rel_diff(ref, run)
    assert d <= TOL, f"resumed from {newest.name} after the kill: differs from an uninterrupted run by {d:.3g}"


def test_a_rank_that_fails_stops_the_others(tmp_path, tiny, mpi):  # noqa: F811
    """--resume without a checkpoint: rank 0 fails while rank 1 waits for its broadcast; the job
    must end promptly with rank 0's message instead of hanging."""
    t0 = time.time()
    p = mpirun(2, args_for(tiny, tmp_path / "none", 4, 1, 2, ("--resume",)), check=False, timeout=120)
    assert p.returncode != 0
    assert "rank 0 of 2" in p.stderr and "no checkpoint-N folder" in p.stderr, p.stderr
    assert time.time() - t0 < 60


def test_mpi_build_runs_without_mpirun(tmp_path, tiny, mpi):  # noqa: F811
    """Started plainly, the MPI build is one process and gives the single build's result."""
    a, b = tmp_path / "a", tmp_path / "b"
    run_guanaco(*args_for(tiny, a, 3, 1, 2))
    p = subprocess.run([str(MPI_GUANACO), *map(str, args_for(tiny, b, 3, 1, 2))], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "data parallel" not in p.stderr
    assert (a / "adapter_model.safetensors").read_bytes() == (b / "adapter_model.safetensors").read_bytes()
