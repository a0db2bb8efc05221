"""data-juicer's samples as localscore records. A sample is read in the first of these shapes it has:

1. data-juicer's dialog form: the last turn in `query_key` / `response_key`, the turns before it in `history_key` as
   [query, response] pairs; an `instruction_key` field is joined before the last query as Alpaca joins its input
   (data-juicer's own Alpaca conversion keeps `instruction` and moves `input` to `query`);
2. the shapes `localscore score` reads: Alpaca (instruction/input/output), ShareGPT (conversations), messages;
3. text: the question in `text_key`, its answer in `response_key`.

Pure: no data-juicer, no model."""

from __future__ import annotations

from dataclasses import dataclass

from .records import alpaca_instruction

# What the shapes of `localscore score` are recognised by (records.make_record).
_RECORD_SHAPES = ("instruction", "output", "conversations", "messages")


@dataclass(frozen=True)
class SampleKeys:
    """Where a sample keeps its parts (data-juicer's operator options of the same names)."""

    query_key: str = "query"
    response_key: str = "response"
    history_key: str = "history"
    instruction_key: str = "instruction"
    text_key: str = "text"

    def record_data(self, sample: dict) -> tuple[dict | None, str | None]:
        """The record object localscore reads for `sample`, or None and why the sample has no known shape."""
        if sample.get(self.query_key) is not None:
            return self._dialog(sample)
        if any(sample.get(key) is not None for key in _RECORD_SHAPES):
            return sample, None
        if sample.get(self.text_key) is not None:
            return {"instruction": sample[self.text_key], "output": sample.get(self.response_key)}, None
        return None, (f"no known sample shape: expected '{self.query_key}'/'{self.response_key}' (and "
                      f"'{self.history_key}'), 'instruction'/'output', 'conversations', 'messages' or "
                      f"'{self.text_key}'")

    def _dialog(self, sample: dict) -> tuple[dict | None, str | None]:
        history = sample.get(self.history_key) or []
        if not isinstance(history, list) or not all(isinstance(pair, (list, tuple)) and len(pair) == 2
                                                    for pair in history):
            return None, f"'{self.history_key}' must be a list of [query, response] pairs"
        query, response = sample[self.query_key], sample.get(self.response_key)
        if not history:
            # One turn is an Alpaca record: the same prompt (and score) as the Alpaca file it came from.
            instruction = sample.get(self.instruction_key)
            data = ({"instruction": instruction, "input": query} if instruction is not None
                    else {"instruction": query})
            return ({**data, "output": response} if response is not None else data), None
        instruction = sample.get(self.instruction_key)
        if isinstance(instruction, str) and instruction.strip() and isinstance(query, str):
            query = alpaca_instruction(instruction, query)
        messages = []
        for past_query, past_response in history:
            messages += [{"role": "user", "content": past_query}, {"role": "assistant", "content": past_response}]
        messages.append({"role": "user", "content": query})
        if response is not None:
            messages.append({"role": "assistant", "content": response})
        return {"messages": messages}, None
