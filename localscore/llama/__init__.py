"""llama.cpp: a model loaded once (kernels chosen per CPU and weight type, its own log), and the contexts built on
it: the scoring engine (and the Scorer that pairs it with a Deita prompt) and the embedder."""
