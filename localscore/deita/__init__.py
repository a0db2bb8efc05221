"""Deita's rules as pure functions and data: the scorer prompts and their result fields, prompt building and cutting,
the vicuna conversation rendering, logits to scores, the evol score and diversity filter. No llama.cpp, no files."""
