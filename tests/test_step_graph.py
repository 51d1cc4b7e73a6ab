"""The step-loop graph cache (triton_kernels/step_graph.py): when a loop runs eagerly, is captured, or is replayed.

CUDA graphs need a GPU; here a fake graph stands in for torch.cuda.CUDAGraph (it records the loop at capture and runs
it again at replay, which is what a replay of the captured launches does), so the cache's decisions are tested on
CPU: capture only on a key's second sighting, replay from then on, any change of address, shape, stride, dtype or
scalar is a new key, eager while a capture is in progress or when switched off, least recently used graphs dropped.
The real capture and replay of the Triton step loops runs in tests/test_gpu_cuda.py on a GPU.
"""
import threading
import time
import warnings

import pytest
import torch

from lstmkern.triton_kernels import step_graph


class FakeGraph:
    def __init__(self, device):
        self.loop = None
        self.replays = 0

    def capture(self, loop):
        self.loop = loop  # a capture records launches and runs nothing

    def replay(self):
        self.replays += 1
        self.loop()


@pytest.fixture
def graphs(monkeypatch):
    cache = step_graph._StepGraphs(graph_factory=FakeGraph)
    monkeypatch.setattr(cache, "can_capture", lambda device: True)
    monkeypatch.setattr(step_graph, "_GRAPHS", cache)
    return cache


def _loop(src, dst, runs):
    def loop():
        runs.append(1)
        dst.copy_(src * 2)
    return loop


def test_second_sighting_captures_and_later_calls_replay(graphs):
    src, dst = torch.randn(5), torch.empty(5)
    runs = []
    outcomes = []
    for _ in range(4):
        src.copy_(torch.randn(5))
        dst.fill_(float("nan"))
        outcomes.append(step_graph.run_steps("loop", _loop(src, dst, runs), (src, dst), (5,)))
        torch.testing.assert_close(dst, src * 2, rtol=0, atol=0)
    assert outcomes == ["eager", "replayed", "replayed", "replayed"]
    assert len(runs) == 4  # one eager run, then three replays (the capture itself ran nothing)
    assert step_graph.stats() == {"eager": 1, "captured": 1, "replayed": 3, "cached": 1}


@pytest.mark.parametrize("change", ["address", "shape", "stride", "dtype", "scalar", "name", "none"])
def test_any_change_of_the_key_runs_eagerly(graphs, change):
    src, dst = torch.randn(6), torch.empty(6)
    for _ in range(2):
        step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), (6,))
    name, scalars = "loop", (6,)
    if change == "address":
        src = torch.randn(6)
    elif change == "shape":
        src, dst = torch.randn(2, 3), torch.empty(2, 3)
    elif change == "stride":
        src = torch.randn(12)[::2]
    elif change == "dtype":
        src, dst = torch.randn(6, dtype=torch.float64), torch.empty(6, dtype=torch.float64)
    elif change == "scalar":
        scalars = (7,)
    elif change == "name":
        name = "other loop"
    expected = "replayed" if change == "none" else "eager"
    assert step_graph.run_steps(name, _loop(src, dst, []), (src, dst), scalars) == expected
    torch.testing.assert_close(dst, src * 2, rtol=0, atol=0)


def test_optional_tensors_are_part_of_the_key(graphs):
    src, dst, extra = torch.randn(3), torch.empty(3), torch.randn(3)
    for _ in range(2):
        step_graph.run_steps("loop", _loop(src, dst, []), (src, dst, None), ())
    assert step_graph.run_steps("loop", _loop(src, dst, []), (src, dst, extra), ()) == "eager"
    assert step_graph.run_steps("loop", _loop(src, dst, []), (src, dst, None), ()) == "replayed"


def test_least_recently_used_graphs_are_dropped(graphs):
    tensors = [(torch.randn(2), torch.empty(2)) for _ in range(step_graph.MAX_GRAPHS + 1)]
    for src, dst in tensors:
        for _ in range(2):
            step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ())
    assert step_graph.stats()["cached"] == step_graph.MAX_GRAPHS
    src, dst = tensors[0]  # the oldest: dropped, so it is new again
    assert step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ()) == "eager"
    src, dst = tensors[-1]
    assert step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ()) == "replayed"


def test_cpu_tensors_capture_in_progress_and_the_switch_run_eagerly(monkeypatch):
    cache = step_graph._StepGraphs(graph_factory=FakeGraph)
    assert not cache.can_capture(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not cache.can_capture(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert cache.can_capture(torch.device("cuda", 0))
    monkeypatch.setenv("LSTMKERN_STEP_GRAPHS", "0")
    assert not cache.can_capture(torch.device("cuda", 0))
    src, dst = torch.randn(4), torch.empty(4)
    for _ in range(3):
        assert cache.run("loop", _loop(src, dst, []), (src, dst), ()) == "eager"
    assert cache.counts == {"eager": 3, "captured": 0, "replayed": 0}


class SlowCaptureGraph(FakeGraph):
    """A fake graph whose capture takes a while and counts how many captures are under way at once."""
    active, most_active = 0, 0
    counter_lock = threading.Lock()

    def capture(self, loop):
        with SlowCaptureGraph.counter_lock:
            SlowCaptureGraph.active += 1
            SlowCaptureGraph.most_active = max(SlowCaptureGraph.most_active, SlowCaptureGraph.active)
        time.sleep(0.2)
        with SlowCaptureGraph.counter_lock:
            SlowCaptureGraph.active -= 1
        super().capture(loop)


def test_captures_from_several_threads_do_not_overlap(monkeypatch):
    """Threads capturing different loops on one device take turns: a real capture runs on the device's one side
    stream, and a second capture begun on a stream that is already capturing fails."""
    monkeypatch.setattr(SlowCaptureGraph, "most_active", 0)
    cache = step_graph._StepGraphs(graph_factory=SlowCaptureGraph)
    monkeypatch.setattr(cache, "can_capture", lambda device: True)
    monkeypatch.setattr(step_graph, "_GRAPHS", cache)
    start = threading.Barrier(3)
    outcomes = []

    def layer():
        src, dst = torch.randn(3), torch.empty(3)  # a key of its own per thread
        step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ())
        start.wait()
        outcomes.append((step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ()), torch.equal(dst, src * 2)))

    threads = [threading.Thread(target=layer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [("replayed", True)] * 3
    assert SlowCaptureGraph.most_active == 1


def test_reset_forgets_graphs_and_counts(graphs):
    src, dst = torch.randn(2), torch.empty(2)
    for _ in range(3):
        step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ())
    step_graph.reset()
    assert step_graph.stats() == {"eager": 0, "captured": 0, "replayed": 0, "cached": 0}
    assert step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ()) == "eager"


# ----------------------------------------------------------------------------------------------------------------------
# On a GPU: the real Triton step loops, eager vs replayed from the cache
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("op", ["glstm", "flstm", "glstm-projected"])
def test_replayed_triton_loops_match_eager_ones(op, monkeypatch):
    """Forward + backward of a per-step layer, called repeatedly with the results dropped in between (as a training
    loop does, so the caching allocator hands the same blocks back): from the second call on the loops are replayed
    from CUDA graphs, and every result is bitwise the eager one."""
    from kernel_checks import flstm_inputs, glstm_inputs, projected_inputs
    from lstmkern.triton_kernels import flstm_backward, flstm_forward, glstm_backward, glstm_forward
    device = torch.device("cuda")
    if op == "glstm":  # Hg = 256: beyond the sequence-fused forward, so the forward is per step too
        inputs, forward, backward = glstm_inputs(6, 8, 2, 256, 32, torch.bfloat16, device) + [None], glstm_forward, \
            glstm_backward
    elif op == "flstm":
        inputs, forward, backward = flstm_inputs(6, 8, 64, 256, 64, torch.bfloat16, device) + [None], flstm_forward, \
            flstm_backward
    else:
        inputs, forward, backward = projected_inputs(6, 8, 64, 512, 256, 2, torch.bfloat16, device), glstm_forward, \
            glstm_backward
    x, h0, c0, w_a, w_b, bias, w_hr = inputs
    grad_output = torch.randn(x.shape[0], x.shape[1], h0.shape[1], dtype=x.dtype, device=device)

    def call():
        output, cell = forward(x, h0, c0, w_a, w_b, bias, w_hr)
        grads = backward(grad_output, None, x, h0, c0, w_a, w_b, bias, output, cell, w_hr)
        return [t.clone() for t in (output, cell) + tuple(grads)]

    monkeypatch.setenv("LSTMKERN_STEP_GRAPHS", "0")
    expected = call()  # eager, also runs the autotuners
    monkeypatch.setenv("LSTMKERN_STEP_GRAPHS", "1")
    step_graph.reset()
    results = [call() for _ in range(4)]
    torch.cuda.synchronize()
    assert step_graph.stats()["replayed"] >= 2, step_graph.stats()  # forward and backward of one call at least
    for result in results:
        for got, want in zip(result, expected):
            assert torch.equal(got, want)


def test_a_failed_capture_warns_once_and_runs_eagerly_after(graphs):
    class BrokenGraph(FakeGraph):
        def capture(self, loop):
            raise RuntimeError("operation not permitted when stream is capturing")

    graphs.graph_factory = BrokenGraph
    src, dst = torch.randn(3), torch.empty(3)
    assert step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ()) == "eager"
    dst.fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match="capturing the loop loop failed"):
        assert step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ()) == "eager"
    torch.testing.assert_close(dst, src * 2, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second attempt, no second warning
        assert step_graph.run_steps("loop", _loop(src, dst, []), (src, dst), ()) == "eager"
    assert step_graph.stats() == {"eager": 3, "captured": 0, "replayed": 0, "cached": 0}
