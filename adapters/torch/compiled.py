"""``torch.compile``: a compiled model is captured layer by layer through the eager module tree it wraps (hooks inside
compiled code would be traced by dynamo, and fused away), and the compiled code is checked against that tree.

The check compiles the same module again with the user's own backend wrapped, so that each compiled region (a graph
dynamo hands the backend; a graph break starts another) is seen with the tensors it runs on. Each region's compiled
outputs are compared with its graph run eagerly on the same inputs; where they differ, the first operation that
differs is found by compiling ever shorter prefixes of the graph (a bisection, a few compiles). The whole model's
output and gradients, compiled against eager, cover the backward pass, which the compiler also rewrites.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np
import torch

from layerdiff.metrics import diff, noise_floor
from layerdiff.records import RegionRecord

Backend = Callable[[torch.fx.GraphModule, list[Any]], Callable[..., Any]]


def is_compiled(obj: Any) -> bool:
    """Whether ``obj`` is what ``torch.compile(module)`` returns."""
    return isinstance(obj, torch.nn.Module) and hasattr(obj, "_orig_mod") and hasattr(obj, "dynamo_ctx")


def eager(obj: Any) -> torch.nn.Module:
    """The module a compiled one wraps: what the hooks capture, with the same parameters."""
    module: torch.nn.Module = obj._orig_mod
    return module


def backend_of(obj: Any) -> Backend:
    """The backend the user compiled with (``"inductor"`` by default), under dynamo's wrappers."""
    found = obj.dynamo_ctx.callback
    while hasattr(found, "_torchdynamo_orig_backend"):
        found = found._torchdynamo_orig_backend
    backend: Backend = found
    return backend


class Regions:
    """The compiled regions of one run: each graph as the backend got it, and each call with its tensors."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.graphs: list[torch.fx.GraphModule] = []
        self.calls: list[tuple[int, list[Any], list[Any]]] = []

    def compiler(self, gm: torch.fx.GraphModule, example: list[Any]) -> Callable[..., Any]:
        compiled = self.backend(gm, example)
        index = len(self.graphs)
        self.graphs.append(gm)

        def run(*args: Any) -> Any:
            out = compiled(*args)
            self.calls.append((index, [_plain(a) for a in args], [_plain(o) for o in _flat(out)]))
            return out

        return run


def check(obj: Any, step: Callable[[torch.nn.Module], tuple[list[torch.Tensor], dict[str, torch.Tensor]]]) -> list[RegionRecord]:
    """The compiled model against its eager module tree, region by region and as a whole.

    ``step(module)`` runs one forward and backward of ``module`` as the capture did, and returns its outputs and
    its parameter gradients.
    """
    module = eager(obj)
    regions = Regions(backend_of(obj))
    torch._dynamo.reset()  # the module's code was compiled before, with the user's backend unwrapped
    compiled_out, compiled_grads = step(torch.compile(module, backend=regions.compiler))
    eager_out, eager_grads = step(module)
    found = [_region(regions, index, args, outs) for index, args, outs in regions.calls]
    whole = RegionRecord("compiled model", "the whole model", {}, "")
    for i, (c, e) in enumerate(zip(compiled_out, eager_out)):
        whole.tensors[f"output.{i}" if i else "output"] = (_array(c), _array(e))
    for name, g in compiled_grads.items():
        if name in eager_grads:
            whole.tensors[f"grad of {name}"] = (_array(g), _array(eager_grads[name]))
    return [*found, whole]


def _region(regions: Regions, index: int, args: list[Any], outs: list[Any]) -> RegionRecord:
    gm = regions.graphs[index]
    with torch.no_grad():
        eager_outs = [_plain(o) for o in _flat(gm(*args))]
    record = RegionRecord(f"compiled region {index}", _modules(gm), {}, "")
    for i, (c, e) in enumerate(zip(outs, eager_outs)):
        if isinstance(c, torch.Tensor) and isinstance(e, torch.Tensor):
            record.tensors[f"output.{i}" if i else "output"] = (_array(c), _array(e))
    if any(not _same(c, e) for c, e in record.tensors.values()):
        record.first_op = _first_op(regions.backend, gm, args)
    return record


def _first_op(backend: Backend, gm: torch.fx.GraphModule, args: list[Any]) -> str:
    """The first operation of ``gm`` whose compiled value differs from its eager one, by bisection over prefixes."""
    ops = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module")]
    low, high = 0, len(ops) - 1  # the answer lies in ops[low..high]: ops[high] is known to differ
    while low < high:
        mid = (low + high) // 2
        if _prefix_differs(backend, gm, ops[mid], args):
            high = mid
        else:
            low = mid + 1
    if not ops or not _prefix_differs(backend, gm, ops[high], args):
        return ""
    node = ops[high]
    where = _path(node)
    target = getattr(node.target, "__name__", str(node.target))
    return f"op {high}, {target}" + (f" in module '{where}'" if where else "")


def _prefix_differs(backend: Backend, gm: torch.fx.GraphModule, last: torch.fx.Node, args: list[Any]) -> bool:
    """Whether the graph cut after ``last`` (returning its value) computes it differently compiled than eagerly."""
    graph = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            break
        env[node] = graph.node_copy(node, lambda n: env[n])
        if node is last:
            break
    graph.output((env[last],))  # a tuple: what compilers take back from a graph
    prefix = torch.fx.GraphModule(gm, graph)
    with torch.no_grad():
        compiled = backend(prefix, list(args))(*args)
        eager_value = prefix(*args)
    got, want = _flat(compiled), _flat(eager_value)
    return any(isinstance(c, torch.Tensor) and not _same(_array(c), _array(e)) for c, e in zip(got, want))


def _same(compiled: np.ndarray, eager_value: np.ndarray) -> bool:
    dtype = str(eager_value.dtype)
    return diff("output", compiled, eager_value, noise_floor(dtype, max(eager_value.size, 1))).ok


def _modules(gm: torch.fx.GraphModule) -> str:
    """The modules a region's operations come from, first and last: ``0 … 2``."""
    paths = [p for p in (_path(n) for n in gm.graph.nodes) if p]
    if not paths:
        return ""
    return paths[0] if paths[0] == paths[-1] else f"{paths[0]} … {paths[-1]}"


def _path(node: torch.fx.Node) -> str:
    """The module path an operation comes from, as the capture names modules: ``L['fn'].encoder.layer[0]`` is
    ``encoder.layer.0``."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = str(list(stack.values())[-1][0])
    path = re.sub(r"^L\['[^']*'\]\.?", "", path)
    path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path)
    return path.strip(".")


def _flat(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _plain(t: Any) -> Any:
    return t.detach() if isinstance(t, torch.Tensor) else t


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().clone().numpy()
