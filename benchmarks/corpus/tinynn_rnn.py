"""tinynn's RNN layer (returns the last hidden state) and a Dense head; inputs (batch, time, features)."""
import numpy as np
from tinynn.core.layer import RNN, Dense
from tinynn.core.net import Net

np.random.seed(0)
model = Net([RNN(num_hidden=16), Dense(10)])
input_shape = (4, 5, 8)

model.forward(np.zeros(input_shape))  # glue: tinynn makes its weights on the first forward
