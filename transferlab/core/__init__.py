"""Foundations every layer may use: typed errors, the CPU pins that make kernels portable
(``cpu_pinning``), the stage runtime (seeding, atomic outputs, timing, progress), run identity
(``run_context``), copies of the workspace (``workspace``), and the task kinds with their
metrics (``tasks``, ``metrics``: what a label is and how a prediction is scored).

Layer 0: imports nothing else from transferlab.
"""
