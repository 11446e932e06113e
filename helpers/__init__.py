"""Shared code for the DPO course: the notebooks and the tests import the same functions.

Layers: a module imports only from its own layer or below, and there are no import cycles
(tests/test_layers.py checks both).
  1. config, profiles, cache, validate, losses
  2. logprobs, data, toy, corpus, rewards, sft, optimum
  3. world, train, evaluate, pairs, reward_model, targets, checks
  4. implicit (implicit rewards), runs (DPO runs, sweeps), rlhf (PPO, RLOO), viz
  5. build (python -m helpers.build)
"""

__version__ = "0.1.0"
