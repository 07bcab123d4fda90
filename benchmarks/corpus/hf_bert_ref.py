"""The reference for hf_bert.py and its bug variants: the same Hugging Face BERT, unchanged, built anew here."""
from transformers import BertModel

from hf_bert import config, inputs  # noqa: F401

model = BertModel(config)
model.eval()  # glue: dropout off (a model built from a config is in training mode)
