"""Which quantization keeps a scorer's scores: every quant type (and llama.cpp's per-tensor overrides) compared
with the f32 GGUF of the same checkpoint by `localscore.runs.compare`, on a trained scorer and, for contrast, on seeded
random weights of the same shape.

    python benchmarks/quant_fidelity.py --sample 160 [--models trained,random] [--types f16,q4_k_m] [--json FILE]

The trained scorer and its held-out records come from trained_scorer.py (built once under
benchmarks/work/fidelity/, a few minutes on 2 cores); every GGUF is made once from its bf16 checkpoint, the way
`localscore convert` makes the real scorer's. Prints a Markdown table per model.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import gguf

from benchmarks.trained_scorer import SHAPE, build
from localscore.convert import QUANT_TYPES, convert
from localscore.convert.quantize import quantize
from localscore.runs.compare.scorers import compare
from localscore.runs.compare.scorer_report import Comparison
from localscore.runs.score import score_file
from localscore.llama.scorer import Scorer
from localscore.options import CompareOptions, InputOptions, OutputOptions, RunOptions
from tests.support.checkpoints import write_checkpoint

WORK = Path(__file__).resolve().parent / "work" / "fidelity"


@dataclass(frozen=True)
class Variant:
    name: str
    quant: str
    output_tensor: str | None = None
    token_embedding: str | None = None


# Every type `localscore convert` offers but the reference itself, then q4_k_m with llama.cpp's tensor overrides.
VARIANTS = (
    *(Variant(quant, quant) for quant in QUANT_TYPES if quant != "f32"),
    Variant("q4_k_m, output.weight q8_0", "q4_k_m", output_tensor="q8_0"),
    Variant("q4_k_m, token_embd q8_0", "q4_k_m", token_embedding="q8_0"),
    Variant("q4_k_m, both q8_0", "q4_k_m", output_tensor="q8_0", token_embedding="q8_0"),
)
FLOAT = ("f32", "f16", "bf16")


def gguf_of(folder: Path, variant: Variant) -> Path:
    """The checkpoint at `folder` as `variant`, made once: float types by localscore, the rest by llama.cpp's
    quantizer from the exact bf16 file (what `localscore convert` does, plus the tensor overrides)."""
    slug = variant.name.replace(", ", "-").replace(" ", "-").replace(".", "")
    out = folder.parent / f"{folder.name}.{slug}.gguf"
    if out.is_file():
        return out
    partial = out.with_name(out.name + ".partial")
    if variant.quant in FLOAT:
        convert(folder, partial, variant.quant)
    else:
        quantize(gguf_of(folder, Variant("bf16", "bf16")), partial, variant.quant,
                 output_tensor=variant.output_tensor, token_embedding=variant.token_embedding)
    partial.rename(out)
    return out


def tensor_types(path: Path) -> str:
    """The types of output.weight and token_embd.weight, and of the other matrices, as written."""
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors if len(t.shape) == 2}
    rest = sorted({kind for name, kind in types.items() if name not in ("output.weight", "token_embd.weight")})
    return f"output {types['output.weight']}, token_embd {types['token_embd.weight']}, others {'/'.join(rest)}"


def reference_scores(folder: Path, data: Path) -> Path:
    """The f32 GGUF's scores of `data`, as `localscore score` writes them, made once: every comparison reads
    this file instead of scoring the reference again."""
    out = folder.parent / f"{folder.name}.f32.scored.jsonl"
    if not out.is_file():
        with Scorer.from_path(gguf_of(folder, Variant("f32", "f32"))) as scorer:
            score_file(InputOptions(data), OutputOptions(out), scorer)
    return out


def measure(folder: Path, data: Path, sample: int | None,
            variants: tuple[Variant, ...]) -> list[tuple[Variant, Path, Comparison]]:
    reference = reference_scores(folder, data)
    rows = []
    for variant in variants:
        path = gguf_of(folder, variant)
        rows.append((variant, path, compare(reference, path, data, CompareOptions(sample=sample), RunOptions())))
        print(f"fidelity: {folder.name} {variant.name} done", flush=True)
    return rows


def labels_agreement(folder: Path, data: Path) -> Comparison:
    """How well the f32 model learned its labels (the records' `label` field), through compare() itself."""
    labels = data.with_name("labels.jsonl")
    with open(data, encoding="utf-8") as src, open(labels, "w", encoding="utf-8") as out:
        for line in src:
            record = json.loads(line)
            out.write(json.dumps(record | {"quality_score": record["label"]}, ensure_ascii=False) + "\n")
    return compare(labels, reference_scores(folder, data), data, CompareOptions(), RunOptions())


def table(rows: list[tuple[Variant, Path, Comparison]]) -> list[str]:
    lines = ["| GGUF | MB | Spearman ρ | Kendall τ | mean \\|Δ\\| | max \\|Δ\\| | top 5 % | top 10 % | top 25 % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for variant, path, c in rows:
        t = c.per_turn
        overlaps = " | ".join(f"{v:.0%}" for v in t.top_overlap.values())
        lines.append(f"| {variant.name} | {path.stat().st_size / 1e6:.1f} | {t.spearman:.4f} | {t.kendall:.4f} | "
                     f"{t.mean_abs_delta:.4f} | {t.max_abs_delta:.3f} | {overlaps} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write every comparison's figures here")
    parser.add_argument("--sample", type=int, help="compare this many of the held-out records (seed 0)")
    parser.add_argument("--models", default="trained,random", help="which of trained,random to measure")
    parser.add_argument("--types", help="comma-separated GGUF names of the table to measure (default: all)")
    args = parser.parse_args()
    variants = VARIANTS
    if args.types:
        by_name = {v.name: v for v in VARIANTS}
        if unknown := set(args.types.split(",")) - set(by_name):
            parser.error(f"unknown types {', '.join(sorted(unknown))}; choose from {', '.join(by_name)}")
        variants = tuple(by_name[name] for name in args.types.split(","))
    WORK.mkdir(parents=True, exist_ok=True)
    trained, data = build(WORK)
    random = WORK / "deita-random"
    if not (random / "config.json").is_file():
        write_checkpoint(random, SHAPE, fmt="safetensors", shards=1)
    learned = labels_agreement(trained, data)
    results = {}
    for name in args.models.split(","):
        folder = {"trained": trained, "random": random}[name]
        rows = measure(folder, data, args.sample, variants)
        results[name] = {v.name: c.to_dict() | {"bytes": p.stat().st_size, "tensors": tensor_types(p)}
                         for v, p, c in rows}
        print(f"\n{name} scorer ({SHAPE}), {rows[0][2].compared} held-out records, vs its f32 GGUF:\n", flush=True)
        print("\n".join(table(rows)))
        print("\n" + "\n".join(f"- {v.name}: {tensor_types(p)}" for v, p, _ in rows if v.quant not in FLOAT))
    t = learned.per_turn
    scores = learned.b_scores
    print(f"\ntrained f32 vs its labels: Spearman ρ {t.spearman:.3f}, mean |Δ| {t.mean_abs_delta:.3f}; "
          f"scores {scores.min():.2f}-{scores.max():.2f} (sd {scores.std():.2f})")
    if args.json:
        args.json.write_text(json.dumps(results | {"labels": learned.to_dict()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
