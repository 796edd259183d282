"""A reference AlphaZero for Go on OpenSpiel's rules, sharing `tree_search` with the LLM relabeller.

One concept a file: ``board`` (rules wrapper, ASCII, vertices, scoring), ``features``, ``symmetry``, ``network``,
``selfplay`` (the batched ``tree_search.SearchEnv``), ``replay``, ``train``, ``pg`` (the outcome-only arm),
``arena`` / ``gnugo`` / ``gtp`` / ``sgf`` (play and interop), ``loop`` (the resumable driver), ``compare`` and
``variance`` (the AZ-vs-PG report), ``config`` (recipes), ``cli`` (``go-baseline``). Submodules are imported
on use, so ``import go_baseline`` stays cheap.
"""
