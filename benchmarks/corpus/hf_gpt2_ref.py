"""The reference for hf_gpt2.py and its bug variants: the same Hugging Face GPT-2, unchanged."""
from hf_gpt2 import config, inputs, model  # noqa: F401
