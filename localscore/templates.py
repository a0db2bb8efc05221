"""The Deita scorer prompts, exactly as the scorers were trained on them, and the labels they score with."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLACEHOLDER = re.compile(r"\{(instruction|output)\}")


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    uses_response: bool

    @property
    def score_field(self) -> str:
        return f"{self.name}_score"

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
