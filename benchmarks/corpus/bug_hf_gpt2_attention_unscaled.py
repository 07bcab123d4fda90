"""Bug: the second block's attention forgets the 1/sqrt(head_dim) scale of its scores.

The arithmetic is in GPT2Attention's own forward, between its captured children c_attn and c_proj."""
from transformers import GPT2Model

from hf_gpt2 import config, inputs  # noqa: F401

model = GPT2Model(config)
model.eval()  # glue
model.h[1].attn.scaling = 1.0

EXPECTED = {"reference": "hf_gpt2_ref.py", "culprits": [{"layer": "h.1.attn", "pass": "forward"}], "hint": None}
