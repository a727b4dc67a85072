"""End to end on text: the real `dvc repro` of a shrunk text scenario, with the network blocked.

Every Python process the stages start imports a ``sitecustomize`` that refuses socket connections
(other than Unix sockets) and logs each attempt; the pipeline must run through and the log stay
empty. A positive control shows that the blocker does see a connection attempt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.llm_fixtures import write_tiny_causal_lm
from tests.text_fixtures import sentiment_rows, text_params, write_csv, write_tiny_checkpoint
from transferlab.core.workspace import copy_worktree

BLOCKER = '''
import os, socket, sys
_log = os.environ["NETWORK_LOG"]

def _refuse(what, address):
    with open(_log, "a") as f:
        f.write(f"{' '.join(sys.argv)[:200]} -> {what} {address!r}\\n")
    raise OSError(f"network blocked by the test: {what} {address!r}")

_connect = socket.socket.connect
def connect(self, address):
    if self.family == socket.AF_UNIX:
        return _connect(self, address)
    _refuse("connect", address)
socket.socket.connect = connect
socket.socket.connect_ex = lambda self, address: _refuse("connect_ex", address)
socket.getaddrinfo = lambda host, *a, **k: _refuse("getaddrinfo", host)
'''


def blocked_env(tmp: Path) -> dict:
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    return dict(os.environ, PATH=path, PYTHONPATH=str(site), NETWORK_LOG=str(tmp / "net.log"),
                DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0")


def test_the_blocker_sees_a_connection_attempt(tmp_path: Path) -> None:
    env = blocked_env(tmp_path)
    code = ("import urllib.request\n"
            "try:\n    urllib.request.urlopen('http://example.org', timeout=2)\n"
            "except Exception as e:\n    print(type(e).__name__)\n")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert "getaddrinfo 'example.org'" in (tmp_path / "net.log").read_text()


@pytest.mark.slow
def test_text_scenario_runs_end_to_end_offline(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy_worktree(ROOT, repo)
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny")
    data = tmp_path / "data"
    write_csv(data / "target.csv", sentiment_rows(60, 0), "review", "sentiment")
    write_csv(data / "source.csv", sentiment_rows(40, 1))
    params = text_params(checkpoint, data)
    # a causal LM beside the encoders: its own tokenizer's encoding of the target
    causal = f"llm:{write_tiny_causal_lm(tmp_path / 'tiny_lm')}"
    params["prepare"]["sources"]["causal"] = {"kind": "none", "init": causal}
    params["evaluate"]["contrasts"] = [["pretrained/linear_probe", "causal/linear_probe"]]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.lock").unlink(missing_ok=True)
    env = blocked_env(tmp_path)
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.email=t@t", "-c", "user.name=t",
                                       "commit", "-qm", "text", "--allow-empty"]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = tmp_path / "net.log"
    assert not log.exists() or not log.read_text(), log.read_text()

    target = json.loads((repo / "data/prepared/target/manifest.json").read_text())
    assert target["modality"] == "text" and target["counts"]["test"] == {"neg": 20, "pos": 20}
    null = json.loads((repo / "data/prepared/sources/random_init/manifest.json").read_text())
    assert null["modality"] == "text" and null["tokenizer"] == target["tokenizer"]
    for source in ("pretrained", "intermediate", "random_init", "causal"):
        assert (repo / f"runs/{source}/finetune/1_4.pt").is_file()
    folder = json.loads((repo / "data/prepared/target/manifest.json").read_text())[
        "encodings"][causal]
    encoding = json.loads((repo / "data/prepared/target" / folder / "manifest.json").read_text())
    assert encoding["tokenizer"]["source"] == causal
    assert json.loads((repo / "models/causal/metrics.json").read_text())["trained"] is False
    adabn = json.loads((repo / "runs/pretrained/adabn/runs.json").read_text())
    assert "no BatchNorm" in adabn["skipped"]
    lora = json.loads((repo / "runs/pretrained/lora/runs.json").read_text())
    assert len(lora["runs"]) == 4 and all(r["trainable_params"] > 0 for r in lora["runs"])
    inter = json.loads((repo / "models/intermediate/metrics.json").read_text())
    assert inter["trained"] and inter["test"]["accuracy"] >= 0.0
    report = json.loads((repo / "metrics/evaluate.json").read_text())
    summary = report["summary"]
    assert {"pretrained/linear_probe", "intermediate/finetune", "scratch",
            "causal/linear_probe"} <= set(summary)
    assert [c["budget"] for c in report["contrasts"]] == ["2", "4"]
    cell = summary["pretrained/finetune"]["4"]
    assert {"accuracy", "shifted_accuracy", "f1_macro"} <= set(cell)
    runs = (repo / "metrics/runs.csv").read_text().split("\n")[0].split(",")
    assert {"recall_macro", "f1_macro", "accuracy", "shifted_accuracy"} <= set(runs)
    assert report["skipped"]["pretrained/adabn"].startswith("the hf:")
    assert "hashed token counts" in report["data_hygiene"]["label_issues"]["method"]
    forgetting = summary["intermediate/finetune"]["4"]["forgetting"]
    assert forgetting["n"] == 2  # the adapted encoder under the intermediate task's head
    md = (repo / "reports/report.md").read_text()
    assert "training texts" in md and "replaced by [UNK]" in md and "pixel" not in md
