"""Bug: the first block's c_fc weight gradient is halved on its way out (a gradient hook): param_grad only."""
from transformers import GPT2Model

from hf_gpt2 import config, inputs  # noqa: F401

model = GPT2Model(config)
model.eval()  # glue
model.h[0].mlp.c_fc.weight.register_hook(lambda g: 0.5 * g)

EXPECTED = {"reference": "hf_gpt2_ref.py", "culprits": [{"layer": "h.0.mlp.c_fc", "pass": "param_grad"}], "hint": "0.5"}
