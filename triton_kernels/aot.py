"""Ahead-of-time compile check: every Triton kernel, every autotune config, every dtype, for a GPU, without a GPU.

    python -m triton_kernels.aot [--arch 90] [--dtypes float64,float32,float16,bfloat16] [--jobs 2] [--json FILE]

Run from the repository root with TRITON_INTERPRET unset; the exit status is 1 when any compile breaks a rule below.

Which launches: for each layer dtype, each kernel module's ``aot_launches(dtype)`` calls the module's own launchers
on small CPU tensors the way the backend does, with every kernel launch intercepted and recorded instead of run. The
check so sees the argument dtypes, constexprs and alignments the launchers really produce, and a new launcher, kernel
or call site is checked without being listed here; a kernel that no ``aot_launches`` reaches is an error.

Which configs: those the autotuner may pick, i.e. ``kernel.configs`` after the kernel's own ``prune_configs`` (its
``early_config_prune``, see :func:`._common.autotune_configs`). Each is specialised with Triton's own binder: the
signature, constexprs and divisibility-16 attributes ``kernel[grid](...)`` would compile on a GPU (integers equal to
1 become constants, multiples of 16 and 16-byte aligned pointers carry the alignment fact). Per kernel x layer dtype x
config x shape constexpr one representative variant is compiled (:func:`representatives`), with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` in parallel worker processes: Triton's front
end, its LLVM back end and its bundled ptxas need no GPU. A compile breaks a rule when

* it raises (e.g. Triton 3.6 rejects a float64 ``tl.dot`` whose ``out_dtype`` is not the accumulator's),
* the kernel needs more shared memory (``metadata.shared``) than one block may use on that architecture,
* ptxas reports local memory (stack frame or spill stores/loads): the registers did not suffice. Triton's runtime
  reports the same as ``n_spills`` (local bytes / 4), but only once a GPU loads the binary, so the check reads
  ptxas' own report (``knobs.nvidia.dump_ptxas_log``) in a private, empty Triton cache (a cache hit skips ptxas).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib
import io
import json
import multiprocessing
import os
import pkgutil
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime.autotuner import Autotuner
from triton.runtime.jit import JITFunction, KernelInterface, create_function_from_signature

from . import _common

LAYER_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}
# Most shared memory one block may use (opt-in maximum), by compute capability (CUDA programming guide).
SHARED_MEMORY_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}

# Boolean constexprs that switch a kernel between code paths rather than add a feature to one (the backward steps'
# PROJECTED reads dm_t instead of dh + grad_output and adds into dh_{t-1}): every value is compiled, since either path
# may be the one that runs out of registers.
PATH_FLAGS = frozenset({"PROJECTED"})

_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_REGISTERS = re.compile(r"Used (\d+) registers")
# Tensor-core instructions in the PTX: mma.sync (sm_80 style, also DMMA for float64) or sm_90's wgmma.
_TENSOR_CORE_OP = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)\b")


@dataclass
class Specialisation:
    """One kernel binary to compile: what ``triton.compile`` needs, and which layer dtypes launch it."""
    module: str
    kernel: str  # attribute name of the launched kernel object in ``module``
    config: dict  # autotune config kwargs (empty for a kernel without autotune)
    signature: dict
    constexprs: dict
    attrs: dict
    options: dict  # num_warps, num_stages, ...
    dtypes: list = field(default_factory=list)
    represents: int = 0  # variants this one stands for (see representatives())

    def key(self):
        return (self.module, self.kernel, repr(sorted(self.signature.items())), repr(sorted(self.constexprs.items())),
                repr(sorted(self.attrs.items())), repr(sorted(self.options.items())))


def _jit_function(kernel: KernelInterface) -> JITFunction:
    while not isinstance(kernel, JITFunction):
        kernel = kernel.fn
    return kernel


def kernels_of(module) -> dict:
    """The kernels a module defines at top level: its autotuned (or heuristics-wrapped) ``@triton.jit`` functions.

    A bare ``@triton.jit`` function is not counted: it cannot be told apart from a device helper, and every kernel
    here carries autotune configs (:func:`._common.make_configs`), even if only one.
    """
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, KernelInterface) and not isinstance(obj, JITFunction)
            and _jit_function(obj).fn.__module__ == module.__name__}


def record_launches(dtypes) -> tuple[list, dict]:
    """Run every module's ``aot_launches`` for each dtype with kernel launches intercepted.

    Returns ([(module name, kernel name, layer dtype, args, kwargs)], {(module, kernel): kernel object}). Raises
    RuntimeError naming any kernel that no module launches (it would go unchecked).
    """
    package = sys.modules[__package__]
    modules = [importlib.import_module(f"{__package__}.{info.name}") for info in pkgutil.iter_modules(package.__path__)
               if info.name != "aot"]
    kernels = {(m.__name__, name): obj for m in modules for name, obj in kernels_of(m).items()}
    launches = []
    current_dtype = [None]

    def recorder(module_name, kernel_name):
        def run(*args, grid=None, warmup=False, **kwargs):
            launches.append((module_name, kernel_name, current_dtype[0], args, kwargs))
        return run

    for (module_name, kernel_name), obj in kernels.items():
        obj.run = recorder(module_name, kernel_name)  # instance attribute: kernel[grid](...) calls self.run
    try:
        for dtype in dtypes:
            current_dtype[0] = dtype
            for module in modules:
                if hasattr(module, "aot_launches"):
                    module.aot_launches(dtype)
    finally:
        for obj in kernels.values():
            del obj.run
    unlaunched = sorted(set(kernels) - {(m, k) for m, k, *_ in launches})
    if unlaunched:
        raise RuntimeError(f"kernels never launched by any aot_launches(), so they would go unchecked: {unlaunched}")
    return launches, kernels


def specialisations(launches, kernels, target: GPUTarget) -> list[Specialisation]:
    """The distinct binaries the recorded launches compile to, over every config the autotuner may pick."""
    backend = make_backend(target)
    binders = {}
    found = {}
    for module_name, kernel_name, dtype, args, kwargs in launches:
        kernel = kernels[(module_name, kernel_name)]
        fn = _jit_function(kernel)
        if isinstance(kernel, Autotuner):
            kernel.nargs = dict(zip(kernel.arg_names, args))  # what prune_configs reads, as in Autotuner.run
            try:
                configs = kernel.prune_configs(kwargs)
            finally:
                kernel.nargs = None
        else:
            configs = [None]
        if id(fn) not in binders:
            binders[id(fn)] = create_function_from_signature(fn.signature, fn.params, backend)
        binder = binders[id(fn)]
        for config in configs:
            full_kwargs = {**kwargs, **(config.all_kwargs() if config is not None else {})}
            bound_args, specialization, options = binder(*args, **full_kwargs)
            _, signature, constexprs, attrs = fn._pack_args(backend, full_kwargs, bound_args, specialization, options)
            spec = Specialisation(module_name, kernel_name, dict(config.kwargs) if config is not None else {},
                                  signature, constexprs, attrs,
                                  {k: v for k, v in full_kwargs.items() if k not in signature})
            spec = found.setdefault(spec.key(), spec)
            if dtype not in spec.dtypes:
                spec.dtypes.append(dtype)
    return list(found.values())


def representatives(specs: list[Specialisation]) -> list[Specialisation]:
    """One specialisation to compile per kernel x layer dtype x autotune config x shape constexpr (pads, the dtype
    of a product, :data:`PATH_FLAGS`) x memory layout (unit strides): of the variants that differ only in boolean
    feature flags (bias, accumulate, cell gradient, ...), the dtypes of pointers that feed no product directly, or
    alignment facts, the one with the most flags on and then the most 4- and 8-byte pointers, i.e. the most code and
    the widest loads.

    Compiling every variant for every config would take CI tens of minutes; the variants of a group share their tiles
    and products, which is what decides shared memory and registers. ``represents`` counts a group's variants.
    """
    groups = {}
    for spec in specs:
        fn = _jit_function(getattr(importlib.import_module(spec.module), spec.kernel))
        declared = {p.name for p in fn.params if p.is_constexpr}
        names = list(spec.signature)
        # Pads and product dtypes, and integers specialised to 1 (unit strides: the operands' memory layout).
        shape = tuple(sorted((names[path[0]], repr(value)) for path, value in spec.constexprs.items()
                             if names[path[0]] not in spec.config
                             and (not isinstance(value, bool) or names[path[0]] in PATH_FLAGS)
                             and (names[path[0]] in declared or value == 1)))
        for dtype in spec.dtypes:
            key = (spec.module, spec.kernel, str(dtype), repr(sorted(spec.config.items())),
                   repr(sorted(spec.options.items())), shape)
            groups.setdefault(key, []).append(spec)

    def weight(spec):
        flags = sum(value is True for value in spec.constexprs.values())
        wide = sum(t in ("*fp32", "*fp64") for t in spec.signature.values())
        return flags, wide

    chosen = {}
    for members in groups.values():
        best = max(members, key=weight)
        best = chosen.setdefault(id(best), best)
        best.represents += len(members)
    return list(chosen.values())


def _init_worker():
    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas' -v report goes to stdout, which compile_one captures


def compile_one(spec: Specialisation, arch: int) -> dict:
    """Compile one specialisation for sm_<arch>; returns its resources, or the error, as a dict."""
    fn = _jit_function(getattr(importlib.import_module(spec.module), spec.kernel))
    result = dict(error=None, shared=None, registers=None, stack_frame=None, spill_stores=None, spill_loads=None,
                  tensor_core_ops=None)
    log = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(fn, spec.signature, spec.constexprs, spec.attrs),
                                      target=GPUTarget("cuda", arch, 32), options=spec.options)
    except Exception as exc:  # noqa: BLE001 - any compile failure is a finding to report, not a crash of the check
        text = str(exc).strip().splitlines()
        result["error"] = f"{type(exc).__name__}: " + " | ".join(line.strip() for line in text[-6:] if line.strip())
    else:
        result["shared"] = compiled.metadata.shared
        # How many tensor-core instructions the PTX holds: whether its products run on tensor cores or on FMA.
        result["tensor_core_ops"] = len(_TENSOR_CORE_OP.findall(compiled.asm["ptx"]))
        frames, registers = _PTXAS_FRAME.findall(log.getvalue()), _PTXAS_REGISTERS.findall(log.getvalue())
        if len(frames) != 1 or len(registers) != 1:
            result["error"] = f"could not read ptxas' resource report from the compile log:\n{log.getvalue()[-2000:]}"
        else:
            result["stack_frame"], result["spill_stores"], result["spill_loads"] = map(int, frames[0])
            result["registers"] = int(registers[0])
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def problems(result: dict, arch: int) -> list[str]:
    """Why a compiled specialisation would fail or spill on the GPU (empty: it fits)."""
    if result["error"] is not None:
        return [f"compile error: {result['error']}"]
    found = []
    if result["shared"] > SHARED_MEMORY_LIMIT[arch]:
        found.append(f"shared memory {result['shared']} B > {SHARED_MEMORY_LIMIT[arch]} B (sm_{arch} per-block limit)")
    if result["stack_frame"] or result["spill_stores"] or result["spill_loads"]:
        found.append(f"register spills: {result['stack_frame']} B stack frame, {result['spill_stores']} B spill "
                     f"stores, {result['spill_loads']} B spill loads ({result['registers']} registers)")
    return found


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _arg_name(spec: Specialisation, path) -> str:
    return list(spec.signature)[path[0]]


def run_check(arch: int = 90, dtypes=tuple(LAYER_DTYPES.values()), jobs: int = 2) -> list[dict]:
    """Record, specialise and compile everything; returns one row per specialisation (see :func:`compile_one`)."""
    if _common.INTERPRET:
        raise RuntimeError("TRITON_INTERPRET=1 is set: the kernels then carry their single interpreter config, "
                           "not the GPU autotune configs; run the check without it")
    if arch not in SHARED_MEMORY_LIMIT:
        raise ValueError(f"arch must be one of {sorted(SHARED_MEMORY_LIMIT)}, got {arch}")
    launches, kernels = record_launches(dtypes)
    specs = representatives(specialisations(launches, kernels, GPUTarget("cuda", arch, 32)))
    # Largest tiles first, so the slowest compiles do not end up alone at the tail of the pool.
    specs.sort(key=lambda s: -_tile_volume(s))
    with tempfile.TemporaryDirectory(prefix="triton-aot-cache-") as cache_dir:
        os.environ["TRITON_CACHE_DIR"] = cache_dir  # empty cache: ptxas runs (and reports) for every binary
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker,
                                                    mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(compile_one, specs, [arch] * len(specs)))
    rows = []
    for spec, result in zip(specs, results):
        rows.append(dict(kernel=spec.kernel, module=spec.module, dtypes=[_dtype_name(d) for d in spec.dtypes],
                         represents=spec.represents,
                         config=spec.config, num_warps=spec.options.get("num_warps"),
                         num_stages=spec.options.get("num_stages"),
                         signature={k: v for k, v in spec.signature.items() if v != "constexpr"},
                         constexprs={_arg_name(spec, k): str(v) for k, v in spec.constexprs.items()},
                         problems=problems(result, arch), **result))
    return rows


def _tile_volume(spec: Specialisation) -> int:
    volume = 1
    for value in spec.config.values():
        volume *= value if isinstance(value, int) else 1
    return volume


def summary(rows: list[dict]) -> str:
    """One line per kernel x layer dtype x config: worst registers, local memory and shared memory over its
    specialisations (constexpr flags, pads, alignments), and the number of those that fail."""
    table = {}
    for row in rows:
        config = " ".join(f"{k}={v}" for k, v in row["config"].items()) + f" w{row['num_warps']} s{row['num_stages']}"
        for dtype in row["dtypes"]:
            entry = table.setdefault((row["kernel"], dtype, config), dict(n=0, bad=0, regs=0, local=0, shared=0))
            entry["n"] += 1
            entry["bad"] += bool(row["problems"])
            entry["regs"] = max(entry["regs"], row["registers"] or 0)
            entry["local"] = max(entry["local"], (row["stack_frame"] or 0) + (row["spill_stores"] or 0))
            entry["shared"] = max(entry["shared"], row["shared"] or 0)
    lines = [f"{'kernel':30} {'dtype':9} {'config':44} {'specs':>5} {'fail':>4} {'regs':>4} {'local B':>7} "
             f"{'shared B':>8}"]
    for (kernel, dtype, config), e in sorted(table.items()):
        lines.append(f"{kernel:30} {dtype:9} {config:44} {e['n']:5} {e['bad']:4} {e['regs']:4} {e['local']:7} "
                     f"{e['shared']:8}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (default 90: sm_90)")
    parser.add_argument("--dtypes", default=",".join(LAYER_DTYPES), help="layer dtypes, comma separated")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compile processes")
    parser.add_argument("--json", help="write every specialisation's result to this file")
    args = parser.parse_args(argv)
    dtypes = [LAYER_DTYPES[name] for name in args.dtypes.split(",")]
    start = time.perf_counter()
    rows = run_check(args.arch, dtypes, args.jobs)
    elapsed = time.perf_counter() - start
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(triton=triton.__version__, arch=args.arch, seconds=elapsed, rows=rows), f, indent=1)
    print(summary(rows))
    failed = [row for row in rows if row["problems"]]
    for row in failed:
        print(f"FAIL {row['kernel']} {row['dtypes']} config {row['config']} w{row['num_warps']} s{row['num_stages']} "
              f"constexprs {row['constexprs']} signature {row['signature']}: {'; '.join(row['problems'])}")
    print(f"triton {triton.__version__}, sm_{args.arch}: {len(rows)} binaries compiled, {len(failed)} failing, "
          f"{elapsed:.1f} s with {args.jobs} processes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
