"""Networks: the image backbones with their named blocks and heads, checkpoints, and the
text encoders (``text``).

Layer 3: may import the layers below (core, config, data).
"""
