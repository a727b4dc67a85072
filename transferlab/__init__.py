"""transferlab: transfer-learning measurement pipeline.

Importing the package pins the CPU math libraries' instruction-set dispatch first (see
:mod:`transferlab.core.cpu_pinning`): numpy and torch read those switches only when they load.

It also switches MLflow's usage telemetry off (unless the user set ``MLFLOW_DISABLE_TELEMETRY``):
the pipeline runs offline, and MLflow 3.17's telemetry thread sets and unsets an environment
variable while request threads iterate ``os.environ``, which can fail a tracking call with
``KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'`` (seen with 8 writers on one server).
"""

import os

from transferlab.core import cpu_pinning

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
cpu_pinning.apply()
