"""Generation with exact token accounting: K continuations of each prefix from ONE prefill.

Why a hand-written decode loop instead of ``model.generate(num_return_sequences=K)``? Three things the arms need
that ``generate`` does not give together:

* **shared prefill.** The tree search expands a node by sampling K candidate next steps from the same prefix.
  ``generate`` repeats the *input* K times and prefills every copy; here each distinct prefix is prefilled once
  (left padding across prefixes), and its KV cache (HF ``DynamicCache``) is repeated K times in memory.
* **exact counts.** The backend charges its budget exactly the tokens it sampled and the prefix tokens it
  prefilled (`llm_rl.generation.base`). ``generate`` pads finished rows and reports neither.
* **step stops on a token id.** A step ends at the delimiter (``"\\n"``). When some vocabulary tokens contain the
  delimiter (one token for the char tokenizer and for ``"\\n"`` in BPE vocabularies), rows stop on those ids with
  no per-token text decoding; only a delimiter no single token contains falls back to decoded-text checks.

The loop runs under ``torch.inference_mode()``, drops finished rows from the batch (and the cache) once half of
them are done, and stops as soon as every row has finished.

Log-probs recorded in a `Continuation` are the policy's own (temperature 1), whatever sampling temperature was
used, so they are comparable with `Policy.sequence_logprobs` on the same token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llm_rl.generation.base import Continuation, GenerationBackend, Meter, check_sample_args

__all__ = ["HFBackend"]


class HFBackend(GenerationBackend):
    """`GenerationBackend` on a `Policy` (a transformers causal LM, with or without PEFT).

    Args:
      policy: the policy to sample from (its current weights; no copy is made).
      budget: counters to charge (None: count nothing, e.g. for evaluation).
      compact_below: drop finished rows from the batch once the active fraction falls to this or below.
    """

    def __init__(self, policy: Any, budget: Meter | None = None, *, compact_below: float = 0.5) -> None:
        super().__init__(policy, budget)
        self.compact_below = compact_below
        self._stop_cache: dict[str, torch.Tensor | None] = {}

    # --- stop tokens --------------------------------------------------------------------------------------
    def stop_token_ids(self, stop: str) -> torch.Tensor | None:
        """Ids of the vocabulary tokens whose text contains ``stop`` (None: no single token does)."""
        if stop not in self._stop_cache:
            tok = self.policy.tokenizer
            special = set(tok.all_special_ids)
            pieces = tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=False)
            ids = [i for i, piece in enumerate(pieces) if stop in piece and i not in special]
            self._stop_cache[stop] = torch.tensor(ids, dtype=torch.long) if ids else None
        return self._stop_cache[stop]

    # --- sampling -----------------------------------------------------------------------------------------
    def sample(
        self,
        prefixes: Sequence[str],
        *,
        n: int = 1,
        max_new_tokens: int,
        temperature: float = 1.0,
        stop: str | None = "\n",
        generator: torch.Generator | None = None,
    ) -> list[list[Continuation]]:
        """``n`` continuations of every prefix; ``temperature=0`` is greedy. See the module docstring."""
        check_sample_args(n=n, max_new_tokens=max_new_tokens, temperature=temperature, stop=stop)
        if not prefixes:
            return []
        policy, model = self.policy, self.policy.model
        device = policy.device
        eos = policy.eos_token_id
        distinct = list(dict.fromkeys(prefixes))
        slot = {p: i for i, p in enumerate(distinct)}
        encoded = policy.encode(distinct)
        longest = max(len(e) for e in encoded)
        steps = self._room(longest, max_new_tokens)
        stop_ids = self.stop_token_ids(stop) if stop is not None else None
        text_stop = stop is not None and stop_ids is None
        if stop_ids is not None:
            stop_ids = stop_ids.to(device)

        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                tokens, logps, lengths, finished, stopped = self._decode(
                    encoded,
                    [slot[p] for p in prefixes],
                    n,
                    steps,
                    temperature,
                    eos,
                    stop_ids,
                    stop if text_stop else None,
                    generator,
                )
        finally:
            model.train(was_training)

        self._charge(prefill=sum(len(e) for e in encoded), generated=int(lengths.sum()))
        return self._package(prefixes, n, tokens, logps, lengths, finished, stopped, eos, stop)

    def _decode(self, encoded, row_slots, n, steps, temperature, eos, stop_ids, text_stop, generator):
        """The decode loop. Returns per-row ``tokens [B, steps]``, ``logps``, ``lengths``, ``finished``,
        ``stopped`` (B = len(row_slots) * n, rows grouped by prefix)."""
        policy, model = self.policy, self.policy.model
        device = policy.device
        ids, mask = policy.pad_left(encoded)
        padded = bool((mask == 0).any())
        out = model(
            input_ids=ids,
            attention_mask=mask if padded else None,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            use_cache=True,
        )
        cache = out.past_key_values
        rows = torch.tensor([s for s in row_slots for _ in range(n)], dtype=torch.long, device=device)
        batch = len(rows)
        if batch != len(encoded) or not torch.equal(rows, torch.arange(batch, device=device)):
            cache.reorder_cache(rows)  # repeat each distinct prefix's KV cache for its rows
        logits = out.logits[:, -1, :][rows]
        mask = mask[rows]
        position = mask.sum(-1)  # [B] position of the next token
        tokens = torch.full((batch, steps), policy.pad_token_id, dtype=torch.long, device=device)
        logps = torch.zeros((batch, steps), dtype=torch.float32, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        stopped = torch.zeros(batch, dtype=torch.bool, device=device)
        live = torch.arange(batch, device=device)  # the original row of each current batch row
        active = torch.ones(batch, dtype=torch.bool, device=device)  # over the current batch rows
        tok = policy.tokenizer
        for t in range(steps):
            logp = torch.log_softmax(logits.float(), dim=-1)
            if temperature == 0:
                nxt = logp.argmax(-1)
            else:
                # Gumbel-max: argmax(logits / T + Gumbel noise) is a sample of softmax(logits / T); cheaper
                # than softmax + multinomial per step.
                noise_device = generator.device if generator is not None else logits.device
                uniform = torch.rand(logits.shape, generator=generator, device=noise_device).to(logits.device)
                nxt = (logits.float() / temperature - torch.log(-torch.log(uniform))).argmax(-1)
            # Record for every current row; rows already ended contribute nothing (length, logprob, flags).
            tokens[live, t] = nxt
            logps[live, t] = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1) * active
            lengths[live] += active.long()
            is_eos = active & (nxt == eos)
            finished[live] |= is_eos
            if stop_ids is not None:
                is_stop = active & torch.isin(nxt, stop_ids) & ~is_eos
            elif text_stop is not None:
                texts = tok.batch_decode(tokens[live, : t + 1].tolist(), skip_special_tokens=True)
                is_stop = active & torch.tensor([text_stop in s for s in texts], device=device) & ~is_eos
            else:
                is_stop = torch.zeros_like(active)
            stopped[live] |= is_stop
            active = active & ~(is_eos | is_stop)
            n_active = int(active.sum())
            if n_active == 0 or t == steps - 1:
                break
            if n_active <= self.compact_below * len(live):
                idx = active.nonzero().squeeze(-1)
                cache.batch_select_indices(idx)
                live, nxt, mask, position, active = live[idx], nxt[idx], mask[idx], position[idx], active[idx]
            # Ended rows still in the batch keep decoding (rows are independent); their output is ignored.
            if padded:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            out = model(
                input_ids=nxt.unsqueeze(-1),
                attention_mask=mask if padded else None,
                position_ids=position.unsqueeze(-1),
                past_key_values=cache,
                use_cache=True,
            )
            position = position + 1
            logits = out.logits[:, -1, :]
        return tokens, logps, lengths, finished, stopped

    def _package(self, prefixes, n, tokens, logps, lengths, finished, stopped, eos, stop):
        tok = self.policy.tokenizer
        lengths_l = lengths.tolist()
        token_lists = [row[:length] for row, length in zip(tokens.tolist(), lengths_l)]
        text_ids = [ids[:-1] if fin else ids for ids, fin in zip(token_lists, finished.tolist())]
        texts = tok.batch_decode(text_ids, skip_special_tokens=True)
        sums = (logps.cpu()).sum(-1).tolist()
        fin_l, stop_l = finished.tolist(), stopped.tolist()
        result: list[list[Continuation]] = []
        for i in range(len(prefixes)):
            group = []
            for j in range(n):
                r = i * n + j
                text = texts[r]
                if stop_l[r] and stop is not None:
                    text = text.split(stop, 1)[0]
                group.append(
                    Continuation(
                        text=text,
                        token_ids=tuple(token_lists[r]),
                        logprob=sums[r],
                        finished=fin_l[r],
                        stopped=stop_l[r],
                    )
                )
            result.append(group)
        return result
