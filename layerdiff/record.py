"""Recording one iteration of the user's own training loop as a dump, for when a training script cannot become a
model file.

    with layerdiff.record(model, "step100.h5"):
        loss = criterion(model(x), y)
        loss.backward()
    optimizer.step()

The dump holds the weights the iteration ran with (as they were when the recording started), the model's inputs,
every layer's values and gradients, and the gradient that arrived at the model's output, which stands for the loss:
``layerdiff compare step100.h5 model.py`` runs a model file on exactly that, and names culprits by replay. Under
``torchrun`` each rank writes its own dump (``step100.rank0.h5``…) with how each tensor is spread over the ranks;
``layerdiff compare`` puts the shards back together (``ranks``).

The framework's part is an adapter's optional ``attach(model, spec, placements)``, whose result's ``detach()``
returns the trace.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from layerdiff import __version__, files, store
from layerdiff.adapter import Spec, adapter_for
from layerdiff.errors import DumpError, ModelFileError
from layerdiff.records import RunInfo, Trace
from layerdiff.runner import RECORDED, compute_dtype, weights_hash
from layerdiff.stats import digest



class Attachment(Protocol):
    rank: int
    world_size: int

    def detach(self) -> Trace: ...


class LoopRecording:
    """One iteration of a training loop being recorded; a context manager, or ``start()`` then ``stop()``."""

    def __init__(self, model: Any, path: str | os.PathLike[str], *, force: bool, placements: dict[str, str] | None) -> None:
        self.model = model
        self.path = Path(path)
        self.force = force
        self.placements = placements
        self.attached: Attachment | None = None
        self.written: Path | None = None

    def start(self) -> LoopRecording:
        """Attach the recording to the model: the iteration that follows is recorded until ``stop``."""
        if self.attached is not None:
            raise ModelFileError(f"The recording to {self.path} is already started; stop it before starting it again.")
        adapter = adapter_for(self.model)
        attach = getattr(adapter, "attach", None)
        if adapter is None or not callable(attach):
            kind = f"{type(self.model).__module__}.{type(self.model).__qualname__}"
            raise ModelFileError(
                f"layerdiff.record cannot record a {kind}: give a torch.nn.Module, a NumPy layer list or a Flax module."
            )
        self.adapter = adapter
        self.attached = attach(self.model, Spec(Path(sys.argv[0]).name or "<loop>"), self.placements)
        self.target = _rank_path(self.path, self.attached.rank, self.attached.world_size)
        files.check(self.target, self.force, DumpError, "choose another path, or pass force=True")
        return self

    def gradients(self, grads: Any) -> None:
        """Hand over the parameter gradients your step computed, where the framework does not keep them on the model
        (JAX: what ``jax.grad`` or ``nnx.grad`` returned)."""
        take = getattr(self.attached, "gradients", None)
        if self.attached is None or not callable(take):
            raise ModelFileError(
                "gradients() is for a JAX model inside a started recording: PyTorch and NumPy layers keep their "
                "gradients, which the recording reads itself."
            )
        take(grads)

    def stop(self) -> Path:
        """Detach from the model and write the dump; returns its path."""
        if self.attached is None:
            raise ModelFileError(f"The recording to {self.path} was never started: call start() first, or use it as `with`.")
        attached, self.attached = self.attached, None
        trace = attached.detach()
        if not trace.layers:
            raise ModelFileError(
                f"Nothing was recorded for {self.path}: the model was not called between start() and stop(). "
                "Put one forward and backward pass of your loop inside the recording."
            )
        trace.info = _info(trace, self.adapter.name, self.adapter.version(), attached)
        self.written = store.write(trace, self.target, overwrite=self.force)
        return self.written

    def __enter__(self) -> LoopRecording:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.stop()
        elif self.attached is not None:
            self.attached.detach()  # the iteration failed: the hooks go, and no dump is written
            self.attached = None


def record(model: Any, path: str | os.PathLike[str], *, force: bool = False, placements: dict[str, str] | None = None) -> LoopRecording:
    """Record one iteration of your own training loop (a forward and backward pass of ``model``) as a dump.

    Args:
        model: a ``torch.nn.Module`` (also wrapped in ``DistributedDataParallel``) or a NumPy layer list.
        path: the dump to write; under ``torch.distributed`` each rank writes ``NAME.rankN.h5`` beside it.
        force: replace an existing dump.
        placements: how a hand-sharded parameter is spread over the ranks, by name: ``{"fc1.weight": "shard(0)"}``
            (``DTensor`` parameters say so themselves).

    Returns:
        A ``LoopRecording``: use it as a context manager around the iteration, or call ``start()`` and ``stop()``.

    >>> import numpy as np, tempfile, pathlib
    >>> class Scale:
    ...     def forward(self, x): return 2 * x
    ...     def backward(self, d): return 2 * d
    >>> net = [Scale()]
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "step.h5"
    >>> with record(net, path):
    ...     out = net[0].forward(np.ones((2, 3)))
    ...     _ = net[0].backward(np.ones((2, 3)))
    >>> path.exists()
    True
    """
    return LoopRecording(model, path, force=force, placements=placements)


def _rank_path(path: Path, rank: int, world_size: int) -> Path:
    return path if world_size <= 1 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def _info(trace: Trace, framework: str, version: str, attached: Attachment) -> RunInfo:
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    script_hash = hashlib.sha256(script.read_bytes()).hexdigest() if script is not None and script.is_file() else ""
    return replace(
        trace.info,
        framework=framework,
        framework_version=version,
        layerdiff_version=__version__,
        python=platform.python_version(),
        dtype="native",
        compute_dtype=compute_dtype(trace),
        script=str(script or "<loop>"),
        script_sha256=script_hash,
        weights_sha256=weights_hash(trace.params),
        inputs_sha256=digest(trace.inputs),
        upstream_sha256=RECORDED + digest(trace.upstream),
        rank=attached.rank,
        world_size=attached.world_size,
    )
