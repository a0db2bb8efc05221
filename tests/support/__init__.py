"""What the tests and the benchmarks share, importable as a library (a conftest is not one): tiny Deita-shaped
checkpoints (`checkpoints`), the real instruction data in tests/data (`data`), the reference method (`reference`),
a GGUF reader for assertions (`gguf_reading`) and the Ray test actors (`ray_actors`, importable by Ray workers)."""
