"""AlphaZero/MuZero-style search, domain-independent: PUCT and Gumbel roots, batched, sampled actions."""
