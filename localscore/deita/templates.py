"""The Deita scorer prompts, exactly as the scorers were trained on them, and the labels they score with."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_PLACEHOLDER = re.compile(r"\{(instruction|output)\}")


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    uses_response: bool
    # The result fields this scorer adds to a record: its score (Alpaca), one score per turn (conversations), whether
    # a prompt was cut to fit, and why a record could not be scored. Every module names them through these.
    score_field: str = field(init=False)
    scores_field: str = field(init=False)
    truncated_field: str = field(init=False)
    error_field: str = field(init=False)

    def __post_init__(self) -> None:
        for kind in ("score", "scores", "truncated", "error"):
            object.__setattr__(self, f"{kind}_field", f"{self.name}_{kind}")

    @property
    def result_fields(self) -> tuple[str, str, str, str]:
        return (self.score_field, self.scores_field, self.truncated_field, self.error_field)

    @property
    def head(self) -> str:
        """The fixed text before the first placeholder: identical for every prompt, so its KV cache is shared."""
        return self.text.split("{", 1)[0]

    def format(self, instruction: str, output: str = "") -> str:
        # One pass over the template: str.format would choke on braces, and chained replace() would
        # substitute a literal "{output}" inside the user's instruction.
        values = {"instruction": instruction, "output": output}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)


QUALITY = Template(
    name="quality",
    text=(
        "You are a helpful assistant. Please identify the quality score of the Response corresponding to the "
        "Question. \n #Question#:\n{instruction}\n#Response#:\n{output} \n##Quality: "
    ),
    uses_response=True,
)

COMPLEXITY = Template(
    name="complexity",
    text=(
        "You are a helpful assistant. Please identify the complexity score of the following user query. \n"
        "##Query: {instruction}  \n##Complexity: "
    ),
    uses_response=False,
)

TEMPLATES = {t.name: t for t in (QUALITY, COMPLEXITY)}

# The scorers put their answer in the logits of these six single-character tokens; score = sum(p_i * i).
LABELS = ("1", "2", "3", "4", "5", "6")
