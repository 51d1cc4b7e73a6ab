"""Per-step launch loops replayed from CUDA graphs: no host work per time step once a layer's buffers repeat.

Shape legend: T time steps (the loops below launch a few kernels per step, T steps per call).

The per-step Triton paths (a G-LSTM or F-LSTM too large for the sequence-fused forward, every backward) launch one
to three kernels per time step. Eager, each launch costs 10-20 us of Python and driver work, which at small batch is
more than the step's kernels take on the GPU. :func:`run_steps` takes the whole loop as one callable and:

1. the first time it sees a key, runs the loop eagerly: Triton compiles and autotunes on a first launch (the
   autotuner benchmarks and synchronises), neither of which can be captured;
2. the second time, captures the loop into a CUDA graph (on a side stream, ordered after the current stream's
   work) and replays it;
3. from then on replays the graph: one host call for all T steps.

The key is the loop's name, its scalars, and every tensor it touches *by address* (data pointer, shape, strides,
dtype, device). A graph replays the addresses it captured; keying on them makes a replay exactly the loop it stands
for. A graph cannot own the loop's buffers instead: the outputs (output, cell, dgates) escape to the caller and are
saved for the backward. In a steady training loop PyTorch's caching allocator usually hands the same blocks to the
same buffers every iteration, so keys repeat (not yet observed on a GPU); where they do not, the loop runs eagerly,
as before, and correct.

The loop must launch its kernels on the current stream, allocate nothing and never synchronise (the launchers'
loops index views of preallocated buffers), and every tensor it reads or writes must be among ``tensors``.
Eager always: on CPU tensors (the Triton interpreter), while the current stream is being captured by the caller
(their graph records the launches), and with ``LSTMKERN_STEP_GRAPHS=0`` in the environment.

The graphs kept are the last :data:`MAX_GRAPHS` keys (least recently used first out). Since the loops allocate
nothing, a graph's private memory pool stays empty; it holds only the graph itself. A loop whose capture fails (a
RuntimeWarning says why) runs eagerly for that key from then on.

Example::
    >>> def loop():
    ...     for t in range(T):
    ...         _step_kernel[grid](pre[t], out[t], ...)
    >>> run_steps("glstm_forward", loop, tensors=(pre, out, w_hh), scalars=(T, B))
"""
from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from typing import Callable, Hashable, Iterable, Optional

import torch

__all__ = ["run_steps", "stats", "reset", "MAX_GRAPHS"]

# Graphs kept: a stacked model's training step runs two loops per layer and direction (forward, backward), and a
# graph holds no memory pool (the loops allocate nothing), so the cache is sized to hold a deep model's every loop.
MAX_GRAPHS = 64
_MAX_SEEN = 256         # keys seen once (eager) and remembered so that a second sighting captures
_ENV_SWITCH = "LSTMKERN_STEP_GRAPHS"


class _CudaStepGraph:
    """One captured loop: capture on a side stream ordered after the current stream, replay on the current one."""

    _capture_streams: dict[int, "torch.cuda.Stream"] = {}

    def __init__(self, device: torch.device):
        self.device = device
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, loop: Callable[[], None]) -> None:
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        side = _CudaStepGraph._capture_streams.get(index)
        if side is None:
            side = _CudaStepGraph._capture_streams[index] = torch.cuda.Stream(device=index)
        current = torch.cuda.current_stream(index)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            # thread_local: other threads' CUDA calls (a data loader) do not invalidate this capture.
            self.graph.capture_begin(capture_error_mode="thread_local")
            try:
                loop()
            finally:
                self.graph.capture_end()
        current.wait_stream(side)

    def replay(self) -> None:
        self.graph.replay()


class _StepGraphs:
    """The cache behind :func:`run_steps`. ``graph_factory`` and ``can_capture`` are what tests replace."""

    def __init__(self, graph_factory: Callable[[torch.device], object] = _CudaStepGraph):
        self.graph_factory = graph_factory
        self.graphs: OrderedDict[Hashable, object] = OrderedDict()
        self.seen: OrderedDict[Hashable, None] = OrderedDict()
        self.uncapturable: OrderedDict[Hashable, None] = OrderedDict()  # keys whose capture failed: eager only
        self.counts = {"eager": 0, "captured": 0, "replayed": 0}
        self.lock = threading.Lock()
        # Captures take turns: a real one runs on the device's one side stream, and a second thread's capture begun
        # on that stream while it is capturing fails (cudaStreamBeginCapture on a capturing stream).
        self.capture_lock = threading.Lock()

    @staticmethod
    def can_capture(device: torch.device) -> bool:
        if device.type != "cuda" or os.environ.get(_ENV_SWITCH, "1") == "0":
            return False
        return not torch.cuda.is_current_stream_capturing()

    def run(self, name: str, loop: Callable[[], None], tensors: Iterable[Optional[torch.Tensor]],
            scalars: tuple) -> str:
        tensors = tuple(tensors)
        device = next(t.device for t in tensors if t is not None)
        if not self.can_capture(device):
            return self._eager(loop)
        key = (name, scalars) + tuple(_tensor_key(t) for t in tensors)
        with self.lock:
            graph = self.graphs.get(key)
            if graph is not None:
                self.graphs.move_to_end(key)
            elif key in self.uncapturable:
                graph = "eager"
            elif key not in self.seen:
                _remember(self.seen, key)
                graph = "eager"
        if graph == "eager":
            return self._eager(loop)
        if graph is None:
            graph = self.graph_factory(device)
            try:
                with self.capture_lock:
                    graph.capture(loop)
            except Exception as err:  # a launch that cannot be captured: this key runs eagerly from now on
                with self.lock:
                    self.seen.pop(key, None)
                    _remember(self.uncapturable, key)
                warnings.warn(f"lstmkern step_graph: capturing the {name} loop failed ({type(err).__name__}: {err}); "
                              f"it runs eagerly from now on", RuntimeWarning, stacklevel=3)
                return self._eager(loop)
            with self.lock:
                self.seen.pop(key, None)
                self.graphs[key] = graph
                while len(self.graphs) > MAX_GRAPHS:
                    self.graphs.popitem(last=False)
                self.counts["captured"] += 1
        graph.replay()
        with self.lock:
            self.counts["replayed"] += 1
        return "replayed"

    def _eager(self, loop: Callable[[], None]) -> str:
        loop()
        with self.lock:
            self.counts["eager"] += 1
        return "eager"


def _remember(keys: OrderedDict, key: Hashable) -> None:
    """Add ``key`` to a bounded set of keys (oldest out first)."""
    keys[key] = None
    while len(keys) > _MAX_SEEN:
        keys.popitem(last=False)


def _tensor_key(tensor: Optional[torch.Tensor]) -> Hashable:
    if tensor is None:
        return None
    return (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype, tensor.device)


_GRAPHS = _StepGraphs()


def run_steps(name: str, loop: Callable[[], None], tensors: Iterable[Optional[torch.Tensor]],
              scalars: tuple = ()) -> str:
    """Run ``loop()`` eagerly or from a cached CUDA graph (see the module docstring for when each happens).

    name: which loop (the launcher's name); loop: launches every step's kernels on the current stream, allocates
    nothing, never synchronises; tensors: every tensor the loop reads or writes (None entries allowed); scalars:
    every other value the loop's launches depend on (sizes, flags), hashable.
    Returns "eager" or "replayed" (what happened; the counts are in :func:`stats`).
    """
    return _GRAPHS.run(name, loop, tensors, scalars)


def stats() -> dict[str, int]:
    """How many loops ran eagerly, were captured, and were replayed since the process started (or :func:`reset`);
    the benchmarks record it so a run shows whether its timed calls replayed graphs."""
    with _GRAPHS.lock:
        return dict(_GRAPHS.counts, cached=len(_GRAPHS.graphs))


def reset() -> None:
    """Drop every cached graph and the counts (e.g. before a benchmark, or to free the graphs)."""
    with _GRAPHS.lock:
        _GRAPHS.graphs.clear()
        _GRAPHS.seen.clear()
        _GRAPHS.uncapturable.clear()
        _GRAPHS.counts.update(eager=0, captured=0, replayed=0)
