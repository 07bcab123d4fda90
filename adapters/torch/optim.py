"""Training a ``torch.nn.Module`` with what its file declares: ``torch.optim``'s step on the gradients given, its
state by parameter name, a learning-rate scheduler stepped after each step; and the module's registered buffers
(a batch norm's running statistics)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from layerdiff.adapter import Spec
from layerdiff.errors import ModelFileError, raised_in
from layerdiff.optimizer import Buffer, State, Training


def _array(t: Any) -> np.ndarray:
    if not isinstance(t, torch.Tensor):
        return np.array(t)
    # NumPy has no bfloat16: its values are read in float32, which holds every one of them exactly.
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t.clone()).numpy()


def _tensor(value: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    # On the model's device: a gradient assigned to a parameter must live where the parameter does.
    return torch.from_numpy(np.require(value, requirements=["C", "W"])).to(like).reshape(like.shape)


class TorchStepper:
    """``torch.optim`` (or the file's ``update(model, lr)``) over one module."""

    def __init__(self, model: torch.nn.Module, spec: Spec, training: Training) -> None:
        self.model, self.source, self.lr = model, spec.source, training.lr
        self.update = spec.glue.get("update") if training.optimizer is None else None
        self.optimizer = training.optimizer
        self.scheduler = training.scheduler
        if self.update is not None:
            self.name = "the file's update()"
            return
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise ModelFileError(
                f"`optimizer` in {spec.source} is a {type(self.optimizer).__name__}, not a torch.optim.Optimizer. "
                "Declare one over the model's parameters, e.g. `optimizer = torch.optim.Adam(model.parameters())`."
            )
        own = {id(p) for p in model.parameters()}
        held = [p for group in self.optimizer.param_groups for p in group["params"]]
        foreign = sum(id(p) not in own for p in held)
        if foreign:
            raise ModelFileError(
                f"The optimizer in {spec.source} is not over the model's parameters: {foreign} of its {len(held)} "
                "tensors are not parameters of `model` (built over another module, or before the model was rebuilt). "
                "Build it as `torch.optim.Adam(model.parameters(), ...)` after the model."
            )
        if self.scheduler is not None and getattr(self.scheduler, "optimizer", None) is not self.optimizer:
            raise ModelFileError(
                f"The scheduler in {spec.source} schedules another optimizer than the file's `optimizer`. Build it "
                "over that one, e.g. `scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)`."
            )
        self.name = f"torch.optim.{type(self.optimizer).__name__}"

    def settings(self) -> dict[str, Any]:
        if self.optimizer is None:
            return {"lr": self.lr}
        group = self.optimizer.param_groups[0]
        return {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in group.items() if k != "params"}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.grad = _tensor(grads[name], p) if name in grads else None
        try:
            if self.update is not None:
                self.update(self.model, self.lr)
                return
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
        except Exception as exc:
            raise raised_in(self.source, exc, "in its optimizer's step") from None

    def state(self) -> State:
        if self.optimizer is None:
            return {}
        found: State = {}
        for name, p in self.model.named_parameters():
            entries = self.optimizer.state.get(p)
            if entries:
                found[name] = {k: _array(v) for k, v in entries.items() if isinstance(v, (torch.Tensor, int, float))}
        return found

    def load_state(self, state: State) -> None:
        if self.optimizer is None:
            return
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                entries, given = self.optimizer.state.get(p), state.get(name, {})
                for key in [k for k in entries or {} if k in given]:
                    held = entries[key]  # type: ignore[index]
                    if isinstance(held, torch.Tensor):
                        held.copy_(_tensor(given[key], held))
                    else:
                        entries[key] = type(held)(given[key].item())  # type: ignore[index]


class Stepping:
    """The optional training part of the adapter protocol (``layerdiff.optimizer``)."""

    def stepper(self, model: Any, spec: Spec, training: Training) -> TorchStepper:
        return TorchStepper(model, spec, training)

    def buffers(self, model: Any, spec: Spec) -> list[Buffer]:
        net: torch.nn.Module = model
        return [Buffer(name, name.rpartition(".")[0] or "model", _array(b)) for name, b in net.named_buffers()]

    def load_buffers(self, model: Any, spec: Spec, values: dict[str, np.ndarray | None]) -> None:
        net: torch.nn.Module = model
        with torch.no_grad():
            for name, b in net.named_buffers():
                value = values.get(name)
                if value is not None:
                    b.copy_(_tensor(value, b))
