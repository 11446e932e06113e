"""Shared code for the DPO course: the notebooks and the tests import the same functions.

Layers (each imports only from layers below it):
  1. config, losses
  2. logprobs, data, toy, rewards, world
  3. train, sft, pairs, evaluate, reward_model, checks
  4. implicit (DPO runs, sweeps, implicit-reward analysis), rlhf (PPO, RLOO), viz
"""

__version__ = "0.1.0"
