"""Tensor Logic: relations as Boolean tensors, rules as einsums, queries forward (tensor fixpoint) or
backward (tabled top-down resolution), and soft (sigmoid) evaluation for training.

Constants are Python str/int/float/bool values; variables are ``Var`` objects (``Var("_")`` is anonymous).
"""

from .kb import ENTITY, KnowledgeBase
from .terms import Atom, Compare, LogicError, Rule, Var

__all__ = ["ENTITY", "Atom", "Compare", "KnowledgeBase", "LogicError", "Rule", "Var"]
