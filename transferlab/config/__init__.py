"""What the user asks for: the typed params (``params``, built on ``typed``).

The checks that need a registry of a higher layer (dataset kinds, backbones, strategy blocks)
run where that layer resolves the params (:mod:`transferlab.models.resolved`,
:func:`transferlab.adapt.strategies.resolve`).

Layer 1: may import :mod:`transferlab.core` only.
"""
