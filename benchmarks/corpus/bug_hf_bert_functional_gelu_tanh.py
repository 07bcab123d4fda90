"""Bug: the first layer's BertIntermediate applies the tanh-approximate GELU, called as a function.

Its activation is then no module (nothing for hooks to capture), between the captured dense and output.dense."""
import functools

import torch.nn.functional as F
from transformers import BertModel

from hf_bert import config, inputs  # noqa: F401

model = BertModel(config)
model.eval()  # glue
del model.encoder.layer[0].intermediate.intermediate_act_fn  # a child module: only a module can take its place
model.encoder.layer[0].intermediate.intermediate_act_fn = functools.partial(F.gelu, approximate="tanh")

EXPECTED = {"reference": "hf_bert_ref.py", "culprits": [{"layer": "encoder.layer.0.intermediate", "pass": "forward"}], "hint": None}
