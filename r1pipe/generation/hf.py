"""The transformers back end: batched ``generate`` with KV cache, CPU and GPU."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from r1pipe.generation.base import Completion, SamplingParams


class HFGenerator:
    """Generate with a transformers model already in memory.

    Args:
        model: A causal LM (its weights are read at call time: no copy, so the trainer's
            updates are seen without a weight push).
        tokenizer: Its tokenizer (left padding is set here for batched generation).
        batch_size: Prompts per ``generate`` call.
        synced_gpus: Keep ranks in lockstep (needed when the model is ZeRO-3 partitioned).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 256,
        synced_gpus: bool = False,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # ZeRO-3: every rank must run the same number of forward passes (parameters are
        # gathered collectively), so ranks keep stepping until all are done.
        self.synced_gpus = synced_gpus

    @torch.no_grad()
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        if params.seed is not None:
            torch.manual_seed(params.seed)
        # Each prompt repeated n times, consecutive, so that a group stays together.
        flat = [(i, p) for i, p in enumerate(prompts) for _ in range(params.n)]
        out: list[list[Completion]] = [[] for _ in prompts]
        greedy = params.temperature == 0
        n_batches = -(-len(flat) // self.batch_size)
        if self.synced_gpus:
            from r1pipe.training.dist import all_gather_objects

            # the same number of generate calls on every rank (an empty call repeats a prompt)
            n_batches = max(all_gather_objects(n_batches))
        for b in range(n_batches):
            start = b * self.batch_size
            if start >= len(flat):
                if not flat:
                    break  # nothing to mirror; only reachable without prompts at all
                self._mirror_call(flat[0][1], params)
                continue
            chunk = flat[start : start + self.batch_size]
            enc = [tok(p, add_special_tokens=False)["input_ids"] for _, p in chunk]
            L = max(len(e) for e in enc)
            ids = torch.full((len(enc), L), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(enc), L), dtype=torch.long)
            for j, e in enumerate(enc):  # left padding: generation continues at the right edge
                ids[j, L - len(e) :] = torch.tensor(e)
                mask[j, L - len(e) :] = 1
            gen_kwargs = dict(
                max_new_tokens=params.max_new_tokens,
                do_sample=not greedy,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                return_dict_in_generate=True,
                output_scores=params.return_logprobs,
            )
            if not greedy:
                gen_kwargs.update(
                    temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None
                )
            else:
                gen_kwargs.update(temperature=None, top_p=None, top_k=None)
            if params.stop:
                gen_kwargs.update(stop_strings=params.stop, tokenizer=tok)
            res = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), **gen_kwargs
            )
            new = res.sequences[:, L:].cpu()  # [b, T_new]
            lps = None
            if params.return_logprobs:
                # scores are the processed logits the sampler drew from (temperature, top-p).
                scores = torch.stack(res.scores, 1).float().log_softmax(-1).cpu()  # [b, T, V]
                lps = scores.gather(-1, new[..., None]).squeeze(-1)
            for j, (pi, _) in enumerate(chunk):
                row = new[j].tolist()
                n, reason = len(row), "length"
                for k, t in enumerate(row):
                    if t == tok.eos_token_id:
                        n, reason = k + 1, "stop"  # keep EOS: it is a sampled token
                        break
                token_ids = row[:n]
                text = tok.decode(
                    [t for t in token_ids if t != tok.eos_token_id], skip_special_tokens=False
                )
                if reason == "length" and params.stop and any(s in text for s in params.stop):
                    reason = "stop"
                out[pi].append(
                    Completion(
                        prompt_index=pi,
                        text=text,
                        token_ids=token_ids,
                        logprobs=lps[j, :n].tolist() if lps is not None else None,
                        finish_reason=reason,
                    )
                )
        if was_training:
            self.model.train()
        return out

    def _mirror_call(self, prompt: str, params: SamplingParams) -> None:
        """A throw-away generate call so that a rank with no work keeps ZeRO-3 in step."""
        ids = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        device = next(self.model.parameters()).device
        self.model.generate(
            input_ids=ids.to(device),
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            synced_gpus=True,
            pad_token_id=self.tokenizer.pad_token_id,
        )
