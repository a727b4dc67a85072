"""Variants: a params block under a new name with ``strategy: <name>`` runs that strategy's
code as its own curve, its keys on top of the base's block; "What helped" compares it with
its base."""

from __future__ import annotations

import pytest

from transferlab.adapt import strategies
from transferlab.adapt.strategies import get, parse_blocks
from transferlab.core.errors import ParamsError


def test_a_variant_inherits_its_base_block_and_overrides_keys() -> None:
    blocks = parse_blocks({"finetune": {"lr": 0.01, "epochs": 7},
                           "finetune_src": {"strategy": "finetune", "head_init": "source"}})
    assert blocks["finetune_src"].lr == 0.01 and blocks["finetune_src"].epochs == 7
    assert blocks["finetune_src"].head_init == "source"
    assert blocks["finetune"].head_init == "fresh"
    cls = get("finetune_src")
    assert cls.variant_of == "finetune" and cls.name == "finetune_src"
    assert issubclass(cls, get("finetune")) and not cls.roles  # the base keeps its roles
    assert strategies.by_role("reference") == "finetune"
    assert "finetune_src" not in strategies.names(variants=False)
    # the same variant again is the same class
    parse_blocks({"finetune_src": {"strategy": "finetune"}})
    assert get("finetune_src") is cls


def test_variant_errors_name_the_key_and_the_choices() -> None:
    with pytest.raises(ParamsError, match=r"transfer\.fast\.strategy: unknown strategy "
                                          "'fintune'; expected one of .*finetune"):
        parse_blocks({"fast": {"strategy": "fintune"}})
    with pytest.raises(ParamsError, match=r"transfer\.finetune_x\.strategy: finetune_x is a "
                                          "strategy of its own"):
        parse_blocks({"finetune_x": {"strategy": "finetune"}})
        parse_blocks({"finetune_x": {"strategy": "lp_ft"}})
    with pytest.raises(ParamsError, match=r"transfer\.Bad-Name: a variant's name"):
        parse_blocks({"Bad-Name": {"strategy": "finetune"}})
    with pytest.raises(ParamsError, match=r"transfer\.scratch2\.strategy: scratch is the "
                                          "baseline"):
        parse_blocks({"scratch2": {"strategy": "scratch"}})
    with pytest.raises(ParamsError, match=r"transfer\.finetun: unknown key; expected one of "
                                          ".*or a variant"):
        parse_blocks({"finetun": {"lr": 0.1}})
    with pytest.raises(ParamsError, match=r"transfer\.ft2\.lr: must be > 0"):
        parse_blocks({"ft2": {"strategy": "finetune", "lr": 0}})
