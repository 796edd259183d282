"""LLM reasoning RL: GRPO, the tree-search relabeller, and per-step Monte-Carlo values, at equal budget."""
