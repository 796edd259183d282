"""LLM reasoning RL: GRPO, the tree-search relabeller, and per-step Monte-Carlo values, at equal budget, on one
harness (`llm_rl.harness`); the arms are `llm_rl.arms`, the manual is docs/llm_rl.md."""
