"""Bug: the second block's ln_2 has epsilon 1e-2 instead of 1e-5."""
from transformers import GPT2Model

from hf_gpt2 import config, inputs  # noqa: F401

model = GPT2Model(config)
model.eval()  # glue
model.h[1].ln_2.eps = 1e-2

EXPECTED = {"reference": "hf_gpt2_ref.py", "culprits": [{"layer": "h.1.ln_2", "pass": "forward"}], "hint": "epsilon"}
