"""Backbones as plugins: one module per backbone (or family), each registering itself.

Every module of this package except ``registry`` is a backbone module and is imported here, so
that it registers. Adding a backbone is one file::

    @register
    class Tiny(Backbone):
        name = "tiny"

        def build(self, arch, width, arch_config):
            return Built(nn.Sequential(OrderedDict(pool=nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten()))), dim=1, channels=1)
"""

import importlib
import pkgutil

from transferlab.models.backbones.registry import (  # noqa: F401
    Backbone,
    Built,
    check,
    find,
    get,
    names,
    register,
    unregister,
)

_INFRASTRUCTURE = {"registry"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _INFRASTRUCTURE and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
