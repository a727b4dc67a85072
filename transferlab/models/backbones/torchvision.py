"""torchvision classification architectures as backbones, randomly initialised (pretrained
weights are loaded afterwards from ``pretrain.init``: :func:`transferlab.models.nets.load_init`).

ResNets keep their stem and four layers as blocks; MobileNet / EfficientNet keep each stage of
``features``. To add another torchvision architecture, add its name to :data:`ARCHS` (its
blocks are cut by one of the two layouts below).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from transferlab.models.backbones.registry import Backbone, Built, register

ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "efficientnet_b0")


def torchvision_backbone(arch: str) -> tuple[nn.Sequential, int, nn.Module]:
    """(named blocks, feature width, the whole torchvision network) of ``arch``."""
    import torchvision

    net = torchvision.models.get_model(arch, weights=None)
    if arch.startswith("resnet"):
        blocks = OrderedDict(stem=nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
                             layer1=net.layer1, layer2=net.layer2, layer3=net.layer3,
                             layer4=net.layer4,
                             pool=nn.Sequential(net.avgpool, nn.Flatten()))
        return nn.Sequential(blocks), net.fc.in_features, net
    # mobilenet / efficientnet: features is a Sequential of stages, classifier ends in Linear
    blocks = OrderedDict((f"stage{i}", m) for i, m in enumerate(net.features))
    blocks["pool"] = nn.Sequential(net.avgpool, nn.Flatten())
    last = [m for m in net.classifier.modules() if isinstance(m, nn.Linear)][0]
    return nn.Sequential(blocks), last.in_features, net


class TorchvisionBackbone(Backbone):
    """One torchvision architecture; :data:`ARCHS` registers a subclass per name."""

    def build(self, arch: str, width: int, arch_config: dict[str, Any] | None) -> Built:
        blocks, dim, _ = torchvision_backbone(arch)
        return Built(blocks, dim, channels=3)


for _rank, _arch in enumerate(ARCHS, start=10):
    register(type(f"Torchvision_{_arch}", (TorchvisionBackbone,),
                  {"name": _arch, "rank": _rank, "__module__": __name__}))
