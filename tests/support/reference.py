"""The reference method, as Deita's scorer runs it: its two prompts filled with str.format, transformers + torch in
fp32, one sample at a time, the next-token logits after the prompt, softmax over the six score tokens, expected
value. Ids come from sentencepiece (BOS + encode), because transformers 5 tokenizes runs of spaces differently from
the SentencePiece model the scorer was trained with; DEITA_PROMPT_IDS pins what Deita's own tokenizer path gives.

Nothing here comes from `localscore`: the parity tests compare the product with this, not with itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np

SCORE_TOKEN_IDS = [29896, 29906, 29941, 29946, 29945, 29953]

# Transcribed character for character from hkust-nlp/deita, src/deita/selection/scorer/llama_scorer.py
# (Llama_Scorer.quality_template / complexity_template); scorer/base.py fills them with str.format.
DEITA_TEMPLATES = {
    "quality": ("You are a helpful assistant. Please identify the quality score of the Response corresponding to "
                "the Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: "),
    "complexity": ("You are a helpful assistant. Please identify the complexity score of the following user query. "
                   "\n##Query: {instruction}  \n##Complexity: "),
}

# Token ids of 8 real prompts (self-instruct user-oriented pairs 0, 38 (braces), 45 (curly quotes), 86 (runs of
# spaces), both templates) as Deita's scorer tokenizes them: `tokenizer.encode(prompt)` with transformers' slow,
# legacy SentencePiece tokenizer. transformers 5 has no slow LlamaTokenizer, so they were made once with
# transformers 4.57.6 in a throwaway venv (`pip install "transformers<5" sentencepiece`) by
#   LlamaTokenizer(vocab_file="tests/fixtures/llama-spm/tokenizer.model", legacy=True).encode(
#       DEITA_TEMPLATES[template].format(instruction=instruction, output=output))
# with (instruction, output) from tests.support.data.alpaca_pairs(), and stored as data.
DEITA_PROMPT_IDS: list[dict] = json.loads(
    (Path(__file__).parent.parent / "data" / "deita_prompt_ids.json").read_text(encoding="utf-8"))["prompts"]


def deita_prompt(template: str, instruction: str, output: str = "") -> str:
    """The prompt Deita's scorer builds for `template` ("quality" or "complexity")."""
    return DEITA_TEMPLATES[template].format(instruction=instruction, output=output)


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


# Deita's selection (selection/filter/base.py and combined_filter.py): the evol score, then IterativeFilter with
# batch size 1, in torch the way Deita runs it.


def deita_final_scores(records: list[dict]) -> np.ndarray:
    """Combined_Filter._sort: np.array per score column, multiplied, summed per record."""
    out = []
    for r in records:
        c = np.array(r.get("complexity_scores", r.get("complexity_score")))
        q = np.array(r.get("quality_scores", r.get("quality_score")))
        out.append((c * q).sum())
    return np.array(out)


def deita_filter(records: list[dict], embeddings: np.ndarray, data_size: int, threshold: float
                 ) -> tuple[list[int], int]:
    """IterativeFilter.filter with batch_size 1 and cosine distance, as Deita runs it (torch float32): the kept
    records, and how many candidates of the ranking a walk that stops once the budget is full examines."""
    import torch

    order = np.argsort(-deita_final_scores(records), kind="stable")
    emb = np.asarray(embeddings)[order]

    def cosine(a, b):
        a, b = a / a.norm(dim=1)[:, None], b / b.norm(dim=1)[:, None]  # normalize_emb
        a, b = a / a.norm(dim=1)[:, None], b / b.norm(dim=1)[:, None]  # and again for 'cosine'
        return torch.mm(a, b.t())

    kept = [0]
    for i in range(1, len(emb)):
        cur = torch.tensor(emb[i:i + 1], dtype=torch.float32)
        existing = torch.tensor(emb[kept], dtype=torch.float32)
        if not torch.any(cosine(cur, existing) > threshold, dim=1)[0]:
            kept.append(i)
        if len(kept) >= data_size:
            break
    examined = kept[data_size - 1] + 1 if len(kept) >= data_size else len(emb)
    return [int(order[k]) for k in kept[:data_size]], examined
