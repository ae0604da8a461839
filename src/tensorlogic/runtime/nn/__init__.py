"""NeuralNetwork models (``neuralNetwork``, ``neuralNetworkClassifier``, ``neuralNetworkRegressor``) on torch.

``build(model_spec, device, policy)`` plans the network once and returns a ``Runner``; layers are
registered per family module (``activation``, ``conv``, ...) under the spec's layer field names.
"""

from .runner import NN_TYPES, NeuralNetworkRunner, Runner, build

__all__ = ["NN_TYPES", "NeuralNetworkRunner", "Runner", "build"]
