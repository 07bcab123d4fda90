"""Bug: the first layer's key projection sends no gradient back to its input (query, key and value all read the
same hidden states: the input gradient is the sum of three consumers')."""
import torch
from transformers import BertModel

from hf_bert import config, inputs  # noqa: F401

model = BertModel(config)
model.eval()  # glue
model.encoder.layer[0].attention.self.key.register_full_backward_hook(lambda m, gin, gout: (torch.zeros_like(gin[0]),))

EXPECTED = {"reference": "hf_bert_ref.py", "culprits": [{"layer": "encoder.layer.0.attention.self.key", "pass": "backward"}], "hint": "all zeros"}
