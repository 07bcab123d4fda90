"""Hugging Face GPT-2 as its users make one without downloading anything: from a config, randomly initialised.
The base GPT2Model: GPT2LMHeadModel cannot return tuples in transformers 5.24.0 (config.return_dict = False makes
its inner GPT2Model return a tuple and the head then reads `.last_hidden_state` from it, AttributeError).

Two blocks of width 64. Every leaf module is captured by layerdiff's hooks; the attention arithmetic, the
residual additions and the activation call sit in GPT2Attention, GPT2Block and GPT2MLP's own forward.
"""
import numpy as np
import torch
from transformers import GPT2Config, GPT2Model

torch.manual_seed(0)
config = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=32, vocab_size=96, bos_token_id=0, eos_token_id=0)
model = GPT2Model(config)
model.eval()  # glue: dropout off (a model built from a config is in training mode)
inputs = np.random.default_rng(0).integers(0, 96, size=(2, 12))
