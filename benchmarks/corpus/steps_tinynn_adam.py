"""tinynn_mlp.py trained with tinynn's own Adam (``tinynn.core.optimizer.Adam``), as tinynn's ``Model`` steps it:
``optimizer.step(gradients, model.params)``, each a ``StructuredParam`` over the layers' ``grads`` and ``params``.

tinynn keeps Adam's state as it computes it: ``_m`` and ``_v`` object arrays in the order of the parameters, ``_t``
one count; layerdiff finds them on the optimizer by name and shape, with no glue of their own.
"""
from tinynn.core.optimizer import Adam
from tinynn.utils.structured_param import StructuredParam

from tinynn_mlp import input_shape, loss, model, targets  # noqa: F401


class TinynnStep:  # glue: tinynn's optimizer takes the gradients and parameters as arguments
    def __init__(self, adam): self.adam = adam  # glue
    def step(self): self.adam.step(StructuredParam([layer.grads for layer in model.layers]), model.params)  # glue


optimizer = TinynnStep(Adam(lr=1e-3))  # glue
