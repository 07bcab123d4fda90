"""The reference for hf_gpt2.py and its bug variants: the same Hugging Face GPT-2, unchanged, built anew here."""
from transformers import GPT2Model

from hf_gpt2 import config, inputs  # noqa: F401

model = GPT2Model(config)
model.eval()  # glue: dropout off (a model built from a config is in training mode)
