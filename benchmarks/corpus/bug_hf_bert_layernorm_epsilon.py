"""Bug: the second layer's output LayerNorm has epsilon 1e-2 instead of 1e-12."""
from transformers import BertModel

from hf_bert import config, inputs  # noqa: F401

model = BertModel(config)
model.eval()  # glue
model.encoder.layer[1].output.LayerNorm.eps = 1e-2

EXPECTED = {"reference": "hf_bert_ref.py", "culprits": [{"layer": "encoder.layer.1.output.LayerNorm", "pass": "forward"}], "hint": "epsilon"}
