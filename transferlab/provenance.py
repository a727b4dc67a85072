"""Where a report's numbers came from: code version, configuration, data, software, hardware.

Pure data: :func:`collect_provenance` returns a dict and prints nothing; the report renders it.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from transferlab.run_context import git_state, package_versions
from transferlab.runtime import sha256_file

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "scikit-learn", "scipy", "mlflow", "dvc",
            "matplotlib")
REPRODUCE = ("Check out the commit above, fetch the cached data and models with `dvc pull` (or "
             "let them be rebuilt), then run `dvc repro`; `dvc metrics show` and "
             "`dvc plots show` read the same outputs this report was built from.")


def collect_provenance(params_path: str | Path, data_dir: str | Path,
                       repo: str | Path | None = None) -> dict:
    """Everything needed to tell whether another run of the pipeline is the same run.

    Args:
        params_path: the params file the pipeline ran with; its full text is recorded.
        data_dir: the prepared data root (``target/`` and ``sources/<name>/``, each with a
            ``manifest.json`` that lists the sha256 of its arrays).
        repo: the git work tree to describe; defaults to the one holding this package.
    Returns:
        {"git": {"commit", "dirty", "note"}, "params": {"path", "text", "sha256"},
         "data": [{"dataset", "file", "sha256", "matches_file"}], "python": str,
         "packages": {name: version}, "device": str, "reproduce": str}.
    """
    params_path = Path(params_path)
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[1]
    return {
        "git": git_state(repo),
        "params": {"path": str(params_path), "text": params_path.read_text(),
                   "sha256": sha256_file(params_path)},
        "data": data_hashes(Path(data_dir)),
        "python": platform.python_version(),
        "packages": package_versions(PACKAGES),
        "device": device_name(),
        "reproduce": REPRODUCE,
    }


def data_hashes(data_dir: Path) -> list[dict]:
    """The sha256 of every array each manifest lists, checked against the file on disk.

    Raises:
        FileNotFoundError: naming the manifest, if ``target/manifest.json`` is missing.
    """
    manifests = [("target", data_dir / "target" / "manifest.json")]
    manifests += [(f"sources/{p.parent.name}", p)
                  for p in sorted((data_dir / "sources").glob("*/manifest.json"))]
    rows = []
    for dataset, manifest in manifests:
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: manifest not found")
        listed = json.loads(manifest.read_text()).get("sha256", {})
        for name, digest in sorted(listed.items()):
            array = manifest.parent / name
            rows.append({"dataset": dataset, "file": name, "sha256": digest,
                         "matches_file": array.is_file() and sha256_file(array) == digest})
    return rows


def device_name() -> str:
    """The CUDA device's name when one is visible, else ``cpu``."""
    import torch  # deferred: importing torch is slow and only this needs it

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
