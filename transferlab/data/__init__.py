"""Everything about examples before a model sees them: the dataset kinds and their loaders
(``images``, ``text``, ``fonts``), modalities (how examples are stored and shifted), the
prepared store that stages exchange (``store``), building it (``prepare``), the fixed splits and
budget subsets (``splits``), and data hygiene (``cleaning``).

Layer 2: may import :mod:`transferlab.core` and :mod:`transferlab.config`.
"""
