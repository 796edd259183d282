"""A reference AlphaZero for Go on OpenSpiel's rules, sharing `tree_search` with the LLM relabeller."""
