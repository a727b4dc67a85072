"""Scoring choices already made, on the test split read once: per-run evaluation
(``evaluate``), seed-level statistics and verdicts (``stats``, ``analysis``), transferability
scores and the judging of source rankings (``transferability``, ``source_ranking``), what helped
(``helped``), and the flat tables behind ``dvc plots`` (``tables``).

Layer 6: may import the layers below (core ... adapt).
"""
