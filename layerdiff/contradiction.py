"""Layouts the values contradict: a square weight copied in the layout a file declared (or layerdiff guessed) that
makes its layer a culprit, where the transposed copy would make it agree.

A square weight's layout cannot be read from its shape, so a wrong declaration (``layouts = {"cell.Waa": "in out"}``
for a weight used as ``W @ h``) copies it untransposed into the other side and shows as a forward culprit at its
layer, with no hint of why. For each forward culprit whose layer holds a square weight, the replay runs once more
with that weight transposed; when the layer then agrees, the culprit's hint says so.
"""

from __future__ import annotations

import numpy as np

from layerdiff.adapter import Feed
from layerdiff.align import Alignment, align, fuse
from layerdiff.compare import tolerance_for
from layerdiff.isolate import forcing_from, replay
from layerdiff.metrics import diff
from layerdiff.records import InMemory, Recording
from layerdiff.results import Comparison, Culprit
from layerdiff.runner import Side
from layerdiff.sync import WeightLink


def check(
    result: Comparison, a: Recording, b: Recording, live: Side, feed: Feed, links: list[WeightLink], layer_map: dict[str, str] | None,
    rtol: float | None = None,
) -> None:
    """Add to the hint of each forward culprit that a transposed copy of one of its square weights would fix."""
    suspects = [c for c in result.culprits or [] if c.pass_ == "forward" and c.tensor.startswith("output")]
    if not suspects or not links:
        return
    # Forced as the comparison's replay was: fused runs of layers read as one.
    alignment = fuse(a, b, align(a, b, layer_map), tolerance_for(a, b, rtol))
    owned = {layer.name: set(layer.params) for layer in b.layers}
    for culprit in suspects:
        square = [w for w in links if w.dst in owned.get(culprit.layer_b, set()) and len(w.dst_shape) == 2 and w.dst_shape[0] == w.dst_shape[1]]
        for link in square:
            if _agrees_transposed(culprit, link, a, b, live, feed, alignment):
                said = _sentence(culprit, link, a.source, b.source)
                culprit.hint = f"{culprit.hint} {said}" if culprit.hint else said
                break


def _agrees_transposed(
    culprit: Culprit, link: WeightLink, a: Recording, b: Recording, live: Side, feed: Feed, alignment: Alignment
) -> bool:
    current = next(p.value for p in live.parameters() if p.name == link.dst)
    live.load({link.dst: np.ascontiguousarray(current.T)})
    try:
        trace = replay(live, feed, forcing_from(a, b, alignment))
    finally:
        live.load({link.dst: current})
    local = InMemory(trace, live.source)
    j = next((layer.index for layer in local.layers if layer.name == culprit.layer_b), None)
    i = next((layer.index for layer in a.layers if layer.name == culprit.layer_a), None)
    if i is None or j is None or culprit.tensor not in local.layers[j].tensors:
        return False
    return diff(culprit.tensor, a.tensor(i, culprit.tensor), local.tensor(j, culprit.tensor), culprit.tol).ok


def _sentence(culprit: Culprit, link: WeightLink, source_a: str, source_b: str) -> str:
    how = "as guessed" if "guessed" in link.note else "as declared or known"
    return (
        f"{culprit.layer_b} agrees when {link.src} is copied into {link.dst} with its two axes swapped (transposed): "
        f"the layout it was copied by ({how}) is not the one its values follow. Check the layouts = {{...}} of {link.src} in {source_a} "
        f"(or of {link.dst} in {source_b}), or whether the forward uses the weight the other way round."
    )
