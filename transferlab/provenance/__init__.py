"""Can a result be trusted and rerun? A run's machine record (``record``), kernel fingerprints
(``fingerprint``), comparing outputs and conclusions (``comparison``, ``drift``), rerunning in a
copy (``reproduction``), and the audit that ties them together (``audit``).

Layer 8: may import the layers below (core ... tracking).
"""
