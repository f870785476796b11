"""Evaluators: what a worker runs for one trial. Importing this never imports TensorFlow."""

from toolkit.evaluators.base import Evaluator
from toolkit.evaluators.keras import KerasClassifierEvaluator as KerasClassifierEvaluator
from toolkit.evaluators.synthetic import SyntheticEvaluator

__all__ = ["Evaluator", "KerasClassifierEvaluator", "SyntheticEvaluator"]
