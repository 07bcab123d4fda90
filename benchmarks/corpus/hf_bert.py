"""Hugging Face BERT from a config, randomly initialised (nothing downloaded): two layers of width 64."""
import numpy as np
import torch
from transformers import BertConfig, BertModel

torch.manual_seed(0)
config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                    vocab_size=96, max_position_embeddings=32)
model = BertModel(config)
model.eval()  # glue: dropout off (a model built from a config is in training mode)
inputs = np.random.default_rng(0).integers(0, 96, size=(2, 12))
