"""Recurrent weights as a hand-written file keeps them, presented as PyTorch packs them.

A model file declares ``gates = {"lstm": "i f g o"}``: the layer (or part) ``lstm`` has an LSTM's gates, named
by PyTorch's letters (``c`` is taken for ``g``, the cell candidate; a GRU's are ``r z n``), in the order the file
keeps them. Then
- parameters kept per gate (``Wi, Wf, Wc, Wo``; ``U_i``…; ``bi``…) are presented as one array per stem, the gates
  stacked along the output axis in PyTorch's order (``lstm.W{i,f,c,o}``, (4H, in) or (in, 4H)), and split back when
  the other side's weights are loaded;
- a parameter that packs the gates itself in another order (TensorFlow's ``i g f o``) is presented with its
  blocks in PyTorch's order, and reordered back when loaded.
So PyTorch's ``weight_ih_l0`` pairs with it like any weight, both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from layerdiff.adapter import Spec
from layerdiff.errors import ModelFileError
from layerdiff.layout import axes_of, is_guess
from layerdiff.records import ParamRecord

CANONICAL = {4: ("i", "f", "g", "o"), 3: ("r", "z", "n")}
ALIASES = {"c": "g"}


@dataclass
class Group:
    name: str  # the presented parameter
    members: list[str]  # the file's parameters it is made of, in PyTorch's gate order (one, when reordered)
    axis: int  # the axis the gates are stacked along
    order: list[int]  # for one packed parameter: PyTorch's block k is the file's block order[k]
    layout: str
    gates: str
    declared: str = ""  # the file's own order of the blocks, as declared


def _canonical(prefix: str, declared: str, source: str) -> tuple[tuple[str, ...], dict[str, str]]:
    letters = declared.split()
    canon = CANONICAL[len(letters)]
    named = [ALIASES.get(x, x) for x in letters]
    if sorted(named) != sorted(canon):
        raise ModelFileError(
            f"gates = {{'{prefix}': '{declared}'}} in {source}: name the gates as PyTorch does, in the order the file keeps "
            f"them: {' '.join(CANONICAL[4])} for an LSTM (c for g), {' '.join(CANONICAL[3])} for a GRU."
        )
    return canon, dict(zip(letters, named))


def plan(spec: Spec, records: list[ParamRecord]) -> list[Group]:
    """The packed parameters the declared gates make of ``records``."""
    groups = []
    for prefix, declared in spec.gates.items():
        canon, to_canon = _canonical(prefix, declared, spec.source)
        under = [r for r in records if r.name.startswith(prefix + ".")]
        if not under:
            raise ModelFileError(
                f"gates = {{'{prefix}': '{declared}'}} in {spec.source}, but no parameter is under '{prefix}': its "
                f"parameters are {', '.join(r.name for r in records[:8])}{', …' if len(records) > 8 else ''}."
            )
        stems: dict[str, dict[str, ParamRecord]] = {}
        loose = []
        for r in under:
            leaf = r.name[len(prefix) + 1:]
            found = re.fullmatch(r"(.+?)_?([" + "".join(to_canon) + r"])", leaf)
            if found and "." not in leaf:
                stems.setdefault(found.group(1), {})[to_canon[found.group(2)]] = r
            else:
                loose.append(r)
        hidden = next((r.value.shape[0] for r in under if r.value.ndim == 1 and r.name[len(prefix) + 1:][:1] == "b"), None)
        for stem, members in stems.items():
            if set(members) == set(canon):
                groups.append(_stacked(prefix, stem, [members[g] for g in canon], hidden, " ".join(canon), declared))
        order = [[to_canon[x] for x in declared.split()].index(g) for g in canon]
        if order != list(range(len(canon))):
            groups += [_reordered(r, order, " ".join(canon), declared) for r in loose if _block_axis(r, len(canon)) is not None]
    return groups


def _stacked(prefix: str, stem: str, members: list[ParamRecord], hidden: int | None, gates: str, declared: str) -> Group:
    first = members[0]
    if first.value.ndim == 1:
        axis, layout = 0, "out"
    elif first.layout and not is_guess(first.layout) and "out" in axes_of(first.layout):
        axis, layout = axes_of(first.layout).index("out"), first.layout
    else:
        fits = [i for i, d in enumerate(first.value.shape) if d == hidden]
        axis = fits[0] if len(fits) == 1 else 1  # x @ W, (in, out), where the shapes cannot tell
        layout = ("out in" if axis == 0 else "in out") + ("?" if len(fits) != 1 else "")
    name = f"{prefix}.{stem}{{{','.join(declared.split())}}}"  # lstm.W{i,f,c,o}: Wi, Wf, Wc and Wo
    return Group(name, [m.name for m in members], axis, [], layout, gates, declared)


def _block_axis(r: ParamRecord, n: int) -> int | None:
    if r.layout and not is_guess(r.layout) and "out" in axes_of(r.layout):
        axis = axes_of(r.layout).index("out")
        return axis if r.value.shape[axis] % n == 0 else None
    return next((i for i, d in enumerate(r.value.shape) if d % n == 0), None)


def _reordered(r: ParamRecord, order: list[int], gates: str, declared: str) -> Group:
    return Group(r.name, [r.name], _block_axis(r, len(order)) or 0, order, r.layout, gates, "".join(declared.split()))


def packed(spec: Spec, records: list[ParamRecord]) -> list[ParamRecord]:
    """``records`` with each declared gate group presented as one parameter (values and gradients packed)."""
    if not spec.gates:
        return records
    by_name = {r.name: r for r in records}
    first = {}
    taken = set()
    for group in plan(spec, records):
        members = [by_name[m] for m in group.members]
        value = _pack(group, [m.value for m in members])
        grads = [m.grad for m in members]
        grad = None if any(g is None for g in grads) else _pack(group, [g for g in grads if g is not None])
        said = (f"gate blocks {group.gates.replace(' ', '')} from the file's {group.declared}" if group.order
                else f"{len(members)} gates stacked as {group.gates.replace(' ', '')}")
        first[group.members[0]] = replace(members[0], name=group.name, layout=group.layout, value=value, grad=grad, gates=group.gates, note=said)
        taken.update(group.members)
    # Each group stands where its first member stood, so that pairing by order still sees the file's order.
    return [first[r.name] if r.name in first else r for r in records if r.name in first or r.name not in taken]


def _pack(group: Group, values: list[np.ndarray]) -> np.ndarray:
    if group.order:
        blocks = np.split(values[0], len(group.order), axis=group.axis)
        return np.concatenate([blocks[k] for k in group.order], axis=group.axis)
    return np.concatenate(values, axis=group.axis)


def unpacked(spec: Spec, values: dict[str, np.ndarray], records: list[ParamRecord]) -> dict[str, np.ndarray]:
    """The values for the file's own parameters, those given for a presented group split (or reordered) back."""
    if not spec.gates:
        return values
    out = dict(values)
    for group in plan(spec, records):
        if group.name not in out:
            continue
        value = out.pop(group.name)
        blocks = np.split(value, len(group.order) or len(group.members), axis=group.axis)
        if group.order:
            back = [blocks[group.order.index(k)] for k in range(len(blocks))]
            out[group.name] = np.concatenate(back, axis=group.axis)
        else:
            out.update(zip(group.members, blocks))
    return out
