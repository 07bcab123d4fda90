"""The first divergence of each pass in a comparison's rows: where a difference first shows, counted from the input
forward and from the output backward. A gradient that arrives wrong at a value without an input gradient of its own
is shown where it was made (``blame.made_by``); a backward that raised is the backward divergence there.
"""

from __future__ import annotations

from layerdiff import blame, flow
from layerdiff.records import Failure
from layerdiff.results import Divergence, Gap, LayerDiff, TensorDiff


def _failing(layer: LayerDiff, prefixes: tuple[str, ...]) -> Divergence | None:
    for t in layer.tensors:
        if t.key.split(".")[0] in prefixes and not t.ok:
            return Divergence(layer.layer_a, layer.layer_b, t.key, t.max_abs, t.max_rel, t.tol, note(t), t.problem)
    return None


def note(t: TensorDiff) -> str:
    """What a failing tensor's figures do not say by themselves."""
    if t.note:
        return t.note
    if t.problem == "shape":
        return f"shape {t.shape_a} against {t.shape_b}"
    if t.problem == "nonfinite":
        return f"{t.nonfinite_mismatch} NaN/Inf entries on one side only"
    if t.problem == "stats":
        return "from statistics alone (a stats-only dump): the figures are lower bounds"
    if t.key.startswith("input") or t.key == "grad_output":
        return "already different where this layer receives it: the cause is in code between captured layers"
    return ""


def first_forward(layers: list[LayerDiff]) -> Divergence | None:
    """The first layer, from the input, whose input or output differs."""
    for layer in layers:
        found = _failing(layer, ("input",)) or _failing(layer, ("output",))
        if found:
            return found
    return None


def raised(failures: tuple[Failure | None, Failure | None], *sources: str) -> dict[str, str]:
    """The layer whose backward raised, on either side, by name: the exception as a sentence."""
    return {f.layer: f"raised in {source}: {f.message}" for f, source in zip(failures, sources) if f is not None}


def first_backward(layers: list[LayerDiff], raised: dict[str, str] | None = None, values: flow.Flow | None = None) -> Divergence | None:
    for n in range(len(layers) - 1, -1, -1):
        layer = layers[n]
        said = next((v for k, v in (raised or {}).items() if k in (layer.layer_a, layer.layer_b, *layer.layer_a.split("+"), *layer.layer_b.split("+"))), None)
        if said is not None:
            return Divergence(layer.layer_a, layer.layer_b, "backward", 0.0, 0.0, 0.0, said, "raised")
        found = _failing(layer, ("grad_output",))
        aligned = len(layers) if values is None else values.rows
        maker = None if n >= aligned else blame.gradient_maker(n, aligned) if values is None else blame.made_by(n, aligned, values)
        if found and maker is not None and not any(t.key.startswith("grad_input") for t in layer.tensors):
            if isinstance(maker, Gap):
                names, why = blame.gap_name(maker), f"code no layer records hands '{layer.layer_a}' a wrong gradient"
            elif isinstance(maker, list):
                names = (f"consumers of {layer.layer_a}", f"consumers of {layer.layer_b}")
                why = f"{', '.join(layers[k].layer_a for k in maker)} all read it: which one hands it a wrong gradient, its sum does not say"
            else:
                names, why = (layers[maker].layer_a, layers[maker].layer_b), f"its backward hands '{layer.layer_a}' a wrong gradient"
            return Divergence(*names, f"grad_output of {layer.layer_a}", found.max_abs, found.max_rel, found.tol, why)
        found = found or _failing(layer, ("grad_input",))
        if found:
            return found
        bad = next((p for p in layer.param_grads if not p.ok), None)
        if bad:
            return Divergence(layer.layer_a, layer.layer_b, f"grad of {bad.key}", bad.max_abs, bad.max_rel, bad.tol, note(bad), bad.problem)
    return None
