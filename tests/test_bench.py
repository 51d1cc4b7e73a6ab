"""The kernel benchmark (bench/bench_kernels.py) on CPU: the smoke set end to end, its json and table, and the pieces
whose mistakes would silently distort every number it prints (the baseline loops, FLOP and parameter counts, the
same-parameter hidden size)."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import bench.bench_kernels as bench_kernels  # noqa: E402
from bench.bench_kernels import (  # noqa: E402
    CPU_CONFIGS, REL_TOL, UNSTABLE_SPREAD, Prepared, RunContext, flstm_naive, glstm_naive, markdown_table,
    measure_group, model_flops, param_count, same_params_hidden, sweep_configs,
)
from bench.phases import PHASES, attribute, profile_split  # noqa: E402
from lstmkern.backends import get_backend  # noqa: E402
from lstmkern.reference import flstm_reference, glstm_reference  # noqa: E402

CASE_KEYS = {"config", "impl", "mode", "dtype", "B", "T", "I", "H", "G", "R", "ms", "ms_p20", "ms_p80", "tflops",
             "floor_ms", "peak_mb", "max_rel_err", "correct", "spread", "unstable", "remeasured"}
SMOKE = ("--configs", "cpu-glstm,cpu-flstm,cpu-lstmp", "--cpu-reps", "3")
TOP_KEYS = {"device", "torch", "triton", "commit", "timestamp", "cases"}


def _run_bench(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TRITON_INTERPRET="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "bench.bench_kernels", "--device", "cpu", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    proc = _run_bench(*SMOKE, "--out", str(out))
    return proc, out


def test_smoke_run_exits_cleanly_and_writes_json(smoke_run):
    proc, out = smoke_run
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    result = json.loads(out.read_text())
    assert TOP_KEYS <= set(result), f"missing top-level keys {TOP_KEYS - set(result)}"
    assert result["device"] == "cpu"
    assert result["torch"] == torch.__version__
    assert result["commit"] == "unknown" or len(result["commit"]) == 40
    assert result["timestamp"][:4].isdigit() and "T" in result["timestamp"]
    assert result["complete"] is True
    assert result["cases"], "no case ran"
    assert result["cpu"]["torch_threads"] >= 1 and result["cpu"]["cpu_model"]
    assert result["ceilings"] is None  # not measured on CPU
    for case in result["cases"]:
        assert CASE_KEYS <= set(case), f"case lacks {CASE_KEYS - set(case)}: {case}"


def test_smoke_run_timings_are_sane(smoke_run):
    proc, out = smoke_run
    for case in json.loads(out.read_text())["cases"]:
        assert case["ms"] > 0 and case["ms_p20"] > 0, case
        assert case["ms_p20"] <= case["ms"] <= case["ms_p80"], case
        assert case["spread"] == pytest.approx((case["ms_p80"] - case["ms_p20"]) / case["ms"]), case
        assert case["unstable"] == (case["spread"] > UNSTABLE_SPREAD), case
        # No TFLOP/s or floor on a CPU (shared, unmeasured ceilings: the numbers would mean nothing).
        assert case["tflops"] is None and case["floor_ms"] is None and case["frac_of_floor"] is None, case
        assert case["peak_mb"] is None  # no allocator statistics on CPU


def test_smoke_run_lstmkern_impls_are_correct(smoke_run):
    proc, out = smoke_run
    result = json.loads(out.read_text())
    lstmkern_cases = [c for c in result["cases"] if c["impl"].startswith("lstmkern-")]
    for case in lstmkern_cases:
        assert case["correct"] is True, case
        assert 0 <= case["max_rel_err"] <= REL_TOL[case["dtype"]], case
    for case in result["cases"]:
        if not case["impl"].startswith("lstmkern-"):
            assert case["correct"] is None and case["max_rel_err"] is None, case
    # Every implementation that can run on CPU did, for every smoke config and mode.
    expected = {"lstmkern-cpu", "lstmkern-reference", "nn-lstm", "nn-lstm-sameparams", "torch-naive"}
    if importlib.util.find_spec("lstmkern.backends.triton") is not None:
        expected.add("lstmkern-triton")  # interpreted
    ran = {(c["config"], c["mode"], c["impl"]) for c in result["cases"]}
    for cfg in (CPU_CONFIGS["cpu-glstm"], CPU_CONFIGS["cpu-flstm"]):  # the smoke set SMOKE runs
        for mode in cfg.modes:
            missing = {i for i in expected if (cfg.name, mode, i) not in ran}
            assert not missing, f"{cfg.name} {mode}: {missing} did not run; skipped: {result.get('skipped')}"
    # Projected configs: every backend that declares projections, and nn.LSTM(proj_size) as the baseline.
    expected_p = {"lstmkern-reference", "nn-lstm"} | {
        f"lstmkern-{name}" for name in ("cpu", "triton")
        if f"lstmkern-{name}" in expected and getattr(get_backend(name), "SUPPORTS_PROJECTION", False)}
    for cfg in (CPU_CONFIGS["cpu-lstmp-g2"], CPU_CONFIGS["cpu-lstmp-r8"]):
        for mode in cfg.modes:
            missing = {i for i in expected_p if (cfg.name, mode, i) not in ran}
            assert not missing, f"{cfg.name} {mode}: {missing} did not run; skipped: {result.get('skipped')}"
            for case in result["cases"]:
                if case["config"] == cfg.name:
                    assert case["P"] == cfg.P, case


def test_smoke_run_splits_every_training_case(smoke_run):
    proc, out = smoke_run
    cases = json.loads(out.read_text())["cases"]
    assert any(c["mode"] == "fwdbwd" for c in cases)
    for case in cases:
        if case["mode"] == "fwd":
            assert case["split"] is None, case
            continue
        split = case["split"]
        assert split is not None and split["calls"] >= 1, case
        assert split["fwd_ms"] > 0 and split["bwd_recurrent_ms"] + split["bwd_gemm_ms"] > 0, case
        assert split["unattributed_ms"] is None, case  # only kernels on a GPU can be unclaimed
    # The reference backward's weight gradients are ATen matrix products: the split must see them.
    ref = [c for c in cases if c["impl"] == "lstmkern-reference" and c["mode"] == "fwdbwd"]
    assert ref and all(c["split"]["bwd_gemm_ms"] > 0 for c in ref)
    assert "| config | impl | fwd ms | bwd recurrent ms | bwd GEMMs ms |" in proc.stdout


def test_smoke_run_prints_table_and_gpu_skips(smoke_run):
    proc, out = smoke_run
    assert "| config | mode | impl |" in proc.stdout
    assert "| cpu-glstm | fwd | lstmkern-reference |" in proc.stdout
    assert "× nn-lstm |" in proc.stdout and "× nn-lstm-sameparams" in proc.stdout and "× torch-naive" in proc.stdout
    assert "TFLOP/s" not in proc.stdout and "% of floor" not in proc.stdout
    assert "GPU configs skipped" in proc.stdout and "glstm-train" in proc.stdout
    assert str(out) in proc.stdout


def test_bad_command_line_names_the_option():
    proc = _run_bench("--configs", "no-such-config", timeout=60)
    assert proc.returncode != 0
    assert "--configs" in proc.stderr and "no-such-config" in proc.stderr


def test_naive_glstm_loop_matches_float64_reference():
    torch.manual_seed(0)
    for T, B, I, H, G in ((1, 1, 3, 3, 1), (5, 2, 9, 6, 3), (4, 3, 8, 12, 4)):
        x = torch.randn(T, B, I, dtype=torch.float64)
        h0, c0 = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
        w_ih = torch.randn(G, 4 * H // G, I // G, dtype=torch.float64)
        w_hh = torch.randn(G, 4 * H // G, H // G, dtype=torch.float64)
        bias = torch.randn(G, 4 * H // G, dtype=torch.float64)
        out, (h_n, c_n) = glstm_naive(x, h0, c0, w_ih, w_hh, bias)
        ref_out, ref_cell = glstm_reference(x, h0, c0, w_ih, w_hh, bias)
        torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_n, ref_out[-1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c_n, ref_cell[-1], rtol=1e-12, atol=1e-12)


def test_naive_flstm_loop_matches_float64_reference():
    torch.manual_seed(1)
    for T, B, I, H, R in ((1, 1, 2, 3, 1), (6, 2, 7, 5, 3)):
        x = torch.randn(T, B, I, dtype=torch.float64)
        h0, c0 = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
        w1, w2 = torch.randn(R, I + H, dtype=torch.float64), torch.randn(4 * H, R, dtype=torch.float64)
        bias = torch.randn(4 * H, dtype=torch.float64)
        out, (h_n, c_n) = flstm_naive(x, h0, c0, w1, w2, bias)
        ref_out, ref_cell = flstm_reference(x, h0, c0, w1, w2, bias)
        torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(c_n, ref_cell[-1], rtol=1e-12, atol=1e-12)


def test_param_counts_match_the_modules_they_describe():
    I, H = 12, 20
    assert param_count("dense", I, H) == sum(p.numel() for p in torch.nn.LSTM(I, H).parameters())
    assert param_count("dense", I, H, P=6) == sum(p.numel() for p in torch.nn.LSTM(I, H, proj_size=6).parameters())
    import lstmkern
    for P in (0, 6):
        glstm = lstmkern.GLSTM(I, H, proj_size=P, groups=2)
        assert param_count("glstm", I, H, G=2, P=P) == sum(p.numel() for p in glstm.parameters())
        flstm = lstmkern.FLSTM(I, H, proj_size=P, rank=5)
        assert param_count("flstm", I, H, R=5, P=P) == sum(p.numel() for p in flstm.parameters())
    # G-LSTM keeps one bias; with G = 1 it is nn.LSTM minus the duplicated bias.
    assert param_count("glstm", I, H, G=1) == param_count("dense", I, H) - 4 * H
    assert param_count("glstm", I, H, G=4) == 4 * (4 * 5 * 3 + 4 * 5 * 5 + 4 * 5)
    assert param_count("flstm", I, H, R=7) == 7 * (I + H) + 4 * H * 7 + 4 * H


def test_same_params_hidden_solves_the_quadratic():
    for I, h in ((1024, 1), (1024, 517), (2048, 1300), (33, 7)):
        assert same_params_hidden(I, param_count("dense", I, h)) == h
    for I, H, G in ((1024, 1024, 4), (2048, 2048, 8), (768, 768, 12)):
        target = param_count("glstm", I, H, G=G)
        h = same_params_hidden(I, target)
        best = min(range(1, 4 * H), key=lambda k: abs(param_count("dense", I, k) - target))
        assert abs(param_count("dense", I, h) - target) == abs(param_count("dense", I, best) - target)


def test_same_params_hidden_with_a_projection():
    for I, h, P in ((1024, 4096, 1024), (32, 40, 16), (33, 17, 16)):
        assert same_params_hidden(I, param_count("dense", I, h, P=P), P) == h


def test_flop_counts_with_a_projection():
    T, B, I, H, P = 3, 2, 8, 12, 6
    proj = 2 * T * B * H * P
    assert model_flops("dense", "fwd", T, B, I, H, P=P) == 2 * T * B * 4 * H * (I + P) + proj
    assert model_flops("glstm", "fwd", T, B, I, H, G=2, P=P) == 2 * T * B * 4 * H * (I + P) / 2 + proj
    assert model_flops("flstm", "fwd", T, B, I, H, R=5, P=P) == 2 * T * B * 5 * (I + P) + 2 * T * B * 4 * H * 5 + proj


class _Event:
    """A stand-in for a profiler FunctionEvent with what bench.phases reads."""

    def __init__(self, name, parent=None, kernels=(), device=False, device_us=0.0, self_cpu_us=0.0):
        from types import SimpleNamespace
        self.name, self.cpu_parent, self.cpu_children = name, parent, []
        self.kernels = [SimpleNamespace(name=k, duration=d) for k, d in kernels]
        self.device_type = torch.autograd.DeviceType.CUDA if device else torch.autograd.DeviceType.CPU
        self.device_time_total, self.self_cpu_time_total = device_us, self_cpu_us
        if parent is not None:
            parent.cpu_children.append(self)


def test_gpu_attribution_by_launching_op_and_kernel_name():
    fwd_op = _Event("lstmkern::glstm_fwd", kernels=[("_grouped_gemm_kernel", 5.0), ("glstm_cluster_fwd", 40.0)])
    node = _Event("autograd::engine::evaluate_function: GeneratedBackwardFor_lstmkern_glstm_fwd_defaultBackward")
    bwd_op = _Event("lstmkern::glstm_bwd", parent=node, kernels=[("glstm_cluster_bwd", 70.0)])
    launch = _Event("cudaLaunchKernel", parent=bwd_op, kernels=[("sm90_xmma_gemm_bf16bf16_bf16f32", 20.0),
                                                                ("_flstm_projection_kernel", 3.0)])
    grad_acc = _Event("autograd::engine::evaluate_function: torch::autograd::AccumulateGrad",
                      kernels=[("vectorized_elementwise_kernel", 2.0)])
    # Device-side records of the same kernels, plus one nobody launched through a recorded operation.
    device = [_Event(k, device=True, device_us=d) for k, d in
              (("a", 5.0), ("b", 40.0), ("c", 70.0), ("d", 20.0), ("e", 3.0), ("f", 2.0), ("orphan", 11.0))]
    totals = attribute([fwd_op, node, bwd_op, launch, grad_acc, *device], on_gpu=True)
    assert totals == {"fwd": 45.0, "bwd_recurrent": 72.0, "bwd_gemm": 23.0, "unattributed": 11.0}


def test_cpu_attribution_by_self_time():
    fwd_op = _Event("lstmkern::flstm_fwd", self_cpu_us=10.0)
    mm_fwd = _Event("aten::mm", parent=fwd_op, self_cpu_us=4.0)
    node = _Event("autograd::engine::evaluate_function: X", self_cpu_us=1.0)
    bwd_mm = _Event("aten::mm", parent=node, self_cpu_us=6.0)
    bwd_other = _Event("aten::tanh", parent=node, self_cpu_us=2.0)
    totals = attribute([fwd_op, mm_fwd, node, bwd_mm, bwd_other], on_gpu=False)
    assert totals == {"fwd": 14.0, "bwd_recurrent": 3.0, "bwd_gemm": 6.0}
    assert set(totals) == set(PHASES)


def test_profile_split_of_a_real_training_call():
    import lstmkern
    torch.manual_seed(3)
    x = torch.randn(5, 2, 6, requires_grad=True)
    w = [torch.randn(3, 8, 2, requires_grad=True), torch.randn(3, 8, 2, requires_grad=True),
         torch.randn(3, 8, requires_grad=True)]
    h0, c0, grad = torch.zeros(2, 6), torch.zeros(2, 6), torch.randn(5, 2, 6)

    def call():
        out, _ = lstmkern.glstm_forward(x, (h0, c0), *w, backend="reference")
        out.backward(grad)
    split = profile_split(call, [x, *w], torch.device("cpu"), calls=2)
    assert split["calls"] == 2 and split["fwd_ms"] > 0 and split["bwd_recurrent_ms"] > 0 and split["bwd_gemm_ms"] > 0


def test_flop_counts():
    T, B, I, H = 3, 2, 8, 12
    dense = 2 * T * B * 4 * H * (I + H)
    assert model_flops("dense", "fwd", T, B, I, H) == dense
    assert model_flops("glstm", "fwd", T, B, I, H, G=1) == dense
    assert model_flops("glstm", "fwd", T, B, I, H, G=4) == dense / 4
    assert model_flops("glstm", "fwdbwd", T, B, I, H, G=4) == 3 * dense / 4
    assert model_flops("flstm", "fwd", T, B, I, H, R=5) == 2 * T * B * 5 * (I + H) + 2 * T * B * 4 * H * 5


def test_sweeps_keep_shapes_valid():
    base = CPU_CONFIGS["cpu-glstm"]
    h_sweep = sweep_configs(base, "H", [8, 16])
    assert [(c.I, c.H, c.sweep_value) for c in h_sweep] == [(8, 8, 8), (16, 16, 16)]
    with pytest.raises(ValueError, match="not divisible"):
        sweep_configs(base, "G", [3])
    with pytest.raises(ValueError, match="flstm"):
        sweep_configs(base, "R", [4])


# --- Timing: interleaving, spread, the unstable flag and the one re-measurement -------------------------------------

class _FakeClock:
    """Stands in for the time module inside bench_kernels: perf_counter advances only when a fake call runs."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def monotonic(self):
        return self.now


def _fake_prepared(clock, durations_ms, log=None, name=None):
    """A Prepared whose k-th call takes durations_ms[k % len] on the fake clock."""
    count = [0]

    def call():
        clock.now += durations_ms[count[0] % len(durations_ms)] / 1e3
        count[0] += 1
        if log is not None:
            log.append(name)
    return Prepared(call=call, grad_to_none=[], model="dense", H=1, G=None, R=None, params=1, io_bytes=0)


def _ctx(reps):
    return RunContext(device=torch.device("cpu"), dtype=torch.float32, n_sets=1, seed=0, check_t=1, no_check=True,
                      warmup_ms=0, rep_ms=0, cpu_reps=reps)


def test_steady_rows_are_stable_and_measured_once(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(bench_kernels, "time", clock)
    group = {"a": _fake_prepared(clock, [2.0]), "b": _fake_prepared(clock, [3.0, 3.1])}
    timing = measure_group(group, _ctx(7))
    assert timing["a"]["ms"] == pytest.approx(2.0) and timing["a"]["spread"] == pytest.approx(0.0)
    assert timing["b"]["ms_p20"] >= 3.0 and timing["b"]["ms_p80"] <= 3.1
    for t in timing.values():
        assert t["unstable"] is False and t["remeasured"] is False and t["reps"] == 7


def test_noisy_row_is_remeasured_with_its_group_and_flagged(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(bench_kernels, "time", clock)
    group = {"steady": _fake_prepared(clock, [1.0]), "noisy": _fake_prepared(clock, [1.0, 5.0, 1.0, 9.0])}
    timing = measure_group(group, _ctx(8))
    assert timing["noisy"]["unstable"] is True and timing["noisy"]["spread"] > UNSTABLE_SPREAD
    assert timing["steady"]["unstable"] is False
    # The whole group is measured again (interleaving is kept), not only the noisy row.
    assert timing["noisy"]["remeasured"] is True and timing["steady"]["remeasured"] is True


def test_a_burst_that_passes_is_not_flagged_after_the_remeasurement(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(bench_kernels, "time", clock)
    # 2 warm-up calls, then 5 noisy timed calls, then steady: the second measurement is kept.
    durations = [1.0, 1.0, 1.0, 20.0, 1.0, 20.0, 1.0] + [1.0] * 100
    group = {"x": _fake_prepared(clock, durations)}
    timing = measure_group(group, _ctx(5))
    assert timing["x"]["remeasured"] is True
    assert timing["x"]["unstable"] is False and timing["x"]["ms"] == pytest.approx(1.0)


def test_repetitions_interleave_in_rotating_order(monkeypatch):
    clock = _FakeClock()
    monkeypatch.setattr(bench_kernels, "time", clock)
    order = []
    group = {n: _fake_prepared(clock, [1.0], order, n) for n in ("a", "b", "c")}
    measure_group(group, _ctx(3))
    timed = order[6:]  # after two warm-up calls each
    assert timed == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def _case(impl, ms, unstable=False, correct=None):
    return {"config": "k", "mode": "fwd", "impl": impl, "H": 8, "ms": ms, "ms_p20": ms, "ms_p80": ms,
            "spread": 0.5 if unstable else 0.0, "unstable": unstable, "tflops": 1.0, "frac_of_floor": 0.5,
            "peak_mb": None, "max_rel_err": None if correct is None else 1e-7, "correct": correct}


def test_table_marks_unstable_rows_and_shows_rates_only_on_gpu():
    cases = [_case("lstmkern-cpu", 1.0, correct=True), _case("nn-lstm", 2.0, unstable=True),
             _case("nn-lstm-sameparams", 4.0)]
    cpu_table = markdown_table(cases, torch.device("cpu"))
    assert "TFLOP/s" not in cpu_table and "% of floor" not in cpu_table
    row = next(line for line in cpu_table.splitlines() if "| lstmkern-cpu |" in line)
    cells = row.replace(" ", "")
    assert "|2×?|" in cells and "|4×|" in cells  # nn-lstm was unstable: its ratio is marked
    assert "**unstable**" in next(line for line in cpu_table.splitlines() if "| nn-lstm |" in line)
    gpu_cases = [dict(c, impl=c["impl"].replace("nn-lstm", "cudnn")) for c in cases]
    gpu_table = markdown_table(gpu_cases, torch.device("cuda"))
    assert "TFLOP/s" in gpu_table and "% of floor" in gpu_table and "× cudnn-sameparams" in gpu_table
