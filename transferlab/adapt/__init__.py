"""Adapting a source to the target: the strategies (a registry, one module per method), the
within-budget selection protocol (``selection``), the replicate loop over budgets and seeds
(``replicates``), and where replicates run, locally or on Ray (``execution``).

Layer 5: may import the layers below (core, config, data, models, training).
"""
