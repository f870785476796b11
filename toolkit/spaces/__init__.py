"""Ready search spaces. Plain Python: importing them never imports TensorFlow.

Each space function returns an architecture description whose ``"type"`` key
names the Keras builder that turns it into a model on a worker
(:mod:`toolkit.evaluators.builders`).
"""

from toolkit.spaces.mlp import mlp
from toolkit.spaces.mnist import conv_net

__all__ = ["conv_net", "mlp"]
