"""The reference for hf_bert.py and its bug variants: the same Hugging Face BERT, unchanged."""
from hf_bert import config, inputs, model  # noqa: F401
