"""What the user asks for: the typed params (``params``, built on ``typed``) and the scenarios
composed on them (``scenarios``: override files, ``dvc exp run -S``, studies).

Layer 1: may import :mod:`transferlab.core` only.
"""
