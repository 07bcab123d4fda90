"""The axes of the parameters of common PyTorch modules, where shapes alone cannot say: a table to extend.

Each entry is (the module's class, a glob of the parameter's name) -> its axes, in ``layerdiff.layout``'s names.
A module matches an entry of its own class or of any base class (a subclass of ``nn.Linear`` is a Linear), by the
class's full name, so that the table never imports the library it describes (Hugging Face's ``Conv1D`` is
``x @ W + b`` with W (in, out), where ``nn.Linear`` keeps (out, in)). A model file's ``layouts`` overrides it.

``GATES`` names the blocks that recurrent layers pack along their first axis, in PyTorch's order.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch

LAYOUTS: dict[tuple[str, str], str] = {
    ("torch.nn.modules.linear.Linear", "weight"): "out in",
    ("torch.nn.modules.conv.Conv1d", "weight"): "O I W",
    ("torch.nn.modules.conv.Conv2d", "weight"): "O I H W",
    ("torch.nn.modules.conv.Conv3d", "weight"): "O I D H W",
    ("torch.nn.modules.conv.ConvTranspose1d", "weight"): "I O W",
    ("torch.nn.modules.conv.ConvTranspose2d", "weight"): "I O H W",
    ("torch.nn.modules.conv.ConvTranspose3d", "weight"): "I O D H W",
    ("torch.nn.modules.rnn.RNNBase", "weight_*"): "out in",
    ("torch.nn.modules.rnn.RNNCellBase", "weight_*"): "out in",
    ("torch.nn.modules.activation.MultiheadAttention", "*proj_weight"): "out in",
    ("transformers.pytorch_utils.Conv1D", "weight"): "in out",
}

GATES: dict[tuple[str, str], str] = {
    ("torch.nn.modules.rnn.LSTM", "*_l*"): "i f g o",
    ("torch.nn.modules.rnn.LSTMCell", "*"): "i f g o",
    ("torch.nn.modules.rnn.GRU", "*_l*"): "r z n",
    ("torch.nn.modules.rnn.GRUCell", "*"): "r z n",
}


def _lookup(table: dict[tuple[str, str], str], module: torch.nn.Module, pname: str) -> str:
    for cls in type(module).__mro__:
        qualified = f"{cls.__module__}.{cls.__qualname__}"
        for (owner, pattern), value in table.items():
            if owner == qualified and fnmatchcase(pname, pattern):
                return value
    return ""


def layout_of(module: torch.nn.Module, pname: str, ndim: int) -> str:
    """The axes of parameter ``pname`` of ``module``; "" when the table does not know it."""
    if ndim == 1 and (pname == "bias" or pname.startswith("bias_") or pname.endswith("_bias")):
        return "out"
    found = _lookup(LAYOUTS, module, pname)
    return found if len(found.split()) == ndim else ""


def gates_of(module: torch.nn.Module, pname: str) -> str:
    """The gate blocks packed along the first axis of ``pname`` ("i f g o" for an LSTM's weights); "" for none."""
    return _lookup(GATES, module, pname)
