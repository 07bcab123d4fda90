"""Bug: the second layer's value projection gets no bias gradient: param_grad only."""
from transformers import BertModel

from hf_bert import config, inputs  # noqa: F401

model = BertModel(config)
model.eval()  # glue
model.encoder.layer[1].attention.self.value.bias.register_hook(lambda g: 0 * g)

EXPECTED = {"reference": "hf_bert_ref.py", "culprits": [{"layer": "encoder.layer.1.attention.self.value", "pass": "param_grad"}], "hint": "all zeros"}
