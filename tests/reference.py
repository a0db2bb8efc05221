"""The reference method, as Deita's scorer runs it: transformers + torch in fp32, one sample at a time, the
next-token logits after the prompt, softmax over the six score tokens, expected value. Ids come from
sentencepiece (BOS + encode), because transformers 5 tokenizes runs of spaces differently from the
SentencePiece model the scorer was trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

SCORE_TOKEN_IDS = [29896, 29906, 29941, 29946, 29945, 29953]


class ReferenceScorer:
    def __init__(self, checkpoint: Path, threads: int | None = None, dtype: str = "float32"):
        import sentencepiece
        import torch
        from transformers import LlamaForCausalLM

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(Path(checkpoint) / "tokenizer.model"))
        # Deita runs fp32; bf16 is the fast variant on CPUs with AMX (benchmarks only).
        self.model = LlamaForCausalLM.from_pretrained(str(checkpoint), dtype=getattr(torch, dtype))
        self.model.eval()

    def ids(self, prompt: str) -> list[int]:
        return [self.sp.bos_id(), *self.sp.encode(prompt)]

    def logits(self, ids: list[int]) -> np.ndarray:
        with self.torch.no_grad():
            out = self.model(self.torch.tensor([ids]))
        return out.logits[0, -1, SCORE_TOKEN_IDS].float().numpy()

    def score(self, prompt: str) -> float:
        logits = self.logits(self.ids(prompt)).astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return float(p @ np.arange(1, 7))

    def scores(self, prompts: Iterable[str]) -> list[float]:
        return [self.score(p) for p in prompts]
