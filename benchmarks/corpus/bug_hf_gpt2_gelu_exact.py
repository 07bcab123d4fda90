"""Bug: the first block's MLP uses the exact (erf) GELU where GPT-2 has the tanh approximation."""
from torch import nn
from transformers import GPT2Model

from hf_gpt2 import config, inputs  # noqa: F401

model = GPT2Model(config)
model.eval()  # glue
model.h[0].mlp.act = nn.GELU()

EXPECTED = {"reference": "hf_gpt2_ref.py", "culprits": [{"layer": "h.0.mlp.act", "pass": "forward"}], "hint": None}
