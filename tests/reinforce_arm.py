"""A toy arm written against the public arm contract only: REINFORCE with a per-step constant baseline.

Each batch samples one completion per prompt, scores it, and uses the batch's mean reward as the baseline (one
constant per optimisation step); the loss is ``-(r - b) * log p(completion)``, averaged over the batch. A recipe
names it as ``arm: reinforce_arm:Reinforce`` (tests/ is on the path); the harness supplies everything else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llm_rl.arms import Arm, ArmContext, Batch


class Reinforce(Arm):
    name = "reinforce"

    def collect(self, examples: Sequence[dict], ctx: ArmContext) -> Batch:
        prompts = [e["prompt"] for e in examples]
        samples = ctx.sampler.sample(
            prompts,
            n=1,
            max_new_tokens=self.cfg.task.max_completion_tokens,
            stop=None,
            generator=ctx.generator,
        )
        completions = [group[0] for group in samples]
        rewards = [ctx.verifier.score(c.text, e) for c, e in zip(completions, examples)]
        baseline = sum(rewards) / len(rewards)
        items = [
            (p, c.token_ids, r - baseline) for p, c, r in zip(prompts, completions, rewards) if c.token_ids
        ]
        return Batch(items, {"reward": baseline})

    def loss(self, batch: Batch, policy) -> tuple[torch.Tensor, dict[str, float]]:
        prompts, token_ids, advantages = zip(*batch.items)
        logp = policy.token_logprobs(list(prompts), [list(t) for t in token_ids]).sums()  # [N]
        loss = -(torch.tensor(advantages, dtype=logp.dtype) * logp).mean()
        return loss, {"rows": len(prompts)}
