"""`compare`: is a quantization (or another conversion) good enough for my data? Two scorers' scores side by side
(scorers.py, its figures in score_agreement.py, the report in scorer_report.py, the picture in plot.py), or two
embedders' vectors and the selections they make (embedders.py, its figures in embedding_agreement.py)."""
