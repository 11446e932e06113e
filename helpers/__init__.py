"""Shared code for the DPO course: the notebooks and the tests import the same functions.

Layers (each imports only from layers below it):
  1. config, losses
  2. logprobs, data, toy, rewards, world
  3. train, pairs, evaluate, checks, rlhf
  4. viz
"""

__version__ = "0.1.0"
