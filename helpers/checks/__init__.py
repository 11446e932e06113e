"""Exercise checkers: each ``check_xxx(fn)`` runs the reader's function on a few inputs and says, in
plain words, what is wrong (or that it is right).

A checker returns a ``Verdict``: truthy when the answer is right, shown in a notebook as one line
("✓ ..." or "✗ ..."). It never raises: a stub that raises ``NotImplementedError`` gets a friendly
"not implemented yet", any other exception is reported with its message.

How a checker diagnoses: it compares the reader's output with the right answer; on a mismatch it
compares it with the outputs of the typical *wrong* answers (wrong sign, missing beta, arguments
swapped, mean instead of sum, log(sigmoid) overflow, ...) and names the first that matches.

One module per notebook (``nb00`` ... ``nb09``), the shared machinery in ``_core``; every checker is
imported here, so notebooks call ``checks.check_xxx(fn)``. A new checker goes into its notebook's module.
"""


from helpers.checks._core import Verdict
from helpers.checks.nb00 import check_kl_divergence, check_kl_monte_carlo, check_log_softmax
from helpers.checks.nb01 import check_bayes_accuracy, check_bradley_terry_prob, check_bt_loss, check_win_gap
from helpers.checks.nb02 import check_beta_limits, check_optimal_policy, check_rlhf_objective
from helpers.checks.nb03 import check_dpo_gradient, check_dpo_loss, check_reward_from_policy
from helpers.checks.nb04 import check_response_labels, check_sequence_logprobs
from helpers.checks.nb05 import check_count_pairs, check_make_pairs, check_sft_loss
from helpers.checks.nb06 import check_dpo_batch_loss, check_kl_estimate
from helpers.checks.nb07 import check_bon_kl_bound, check_implicit_reward, check_token_implicit_rewards
from helpers.checks.nb08 import check_gae, check_rloo_advantages
from helpers.checks.nb09 import check_optimal_margin, check_snis_optimum

__all__ = [
    "Verdict",
    "check_bayes_accuracy",
    "check_beta_limits",
    "check_bon_kl_bound",
    "check_bradley_terry_prob",
    "check_bt_loss",
    "check_count_pairs",
    "check_dpo_batch_loss",
    "check_dpo_gradient",
    "check_dpo_loss",
    "check_gae",
    "check_implicit_reward",
    "check_kl_divergence",
    "check_kl_estimate",
    "check_kl_monte_carlo",
    "check_log_softmax",
    "check_make_pairs",
    "check_optimal_margin",
    "check_optimal_policy",
    "check_response_labels",
    "check_reward_from_policy",
    "check_rlhf_objective",
    "check_rloo_advantages",
    "check_sequence_logprobs",
    "check_sft_loss",
    "check_snis_optimum",
    "check_token_implicit_rewards",
    "check_win_gap",
]
