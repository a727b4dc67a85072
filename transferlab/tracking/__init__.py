"""The MLflow mirror: the stages' tracker and journals (``tracker``), rebuilding the mirror from
DVC outputs (``mirror``), and the local services a team server runs (``services``). The DVC
outputs are the truth; nothing here changes them.

Layer 7: may import the layers below (core ... evaluation).
"""
