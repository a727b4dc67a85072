"""transferlab: transfer-learning measurement pipeline.

Importing the package pins the CPU math libraries' instruction-set dispatch first (see
:mod:`transferlab.cpu_pinning`): numpy and torch read those switches only when they load.
"""

from transferlab import cpu_pinning

cpu_pinning.apply()
