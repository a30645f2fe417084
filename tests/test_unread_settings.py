"""A cotrain key set under a policy that never reads it is said once, not silently ignored."""
from __future__ import annotations

import copy
import logging
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml

from orchestrator import api
from orchestrator.config import parse_config
from orchestrator.examples import example_config
from orchestrator.unread_settings import unread_settings
from tests.conftest import write_config

BASE = {
    "task": {"labels": ["neg", "pos"]},
    "data": {"train": "items.csv"},
    "views": [{"name": "a", "kind": "sklearn", "columns": ["x"]}, {"name": "b", "kind": "sklearn", "text": "t"}],
}
POLICY_KEYS = {"k": 20, "min_agree": 2, "veto": "none", "min_precision": 0.95, "cut_neighbors": 10, "feeding": "shared"}


def _unread(**cotrain) -> list[str]:
    cfg = copy.deepcopy(BASE)
    cfg["cotrain"] = cotrain
    return [line.split()[0] for line in unread_settings(parse_config(cfg))]


@pytest.mark.parametrize("policy, unread", [
    ("auto", ["cotrain.cut_neighbors", "cotrain.k", "cotrain.min_agree", "cotrain.veto"]),
    ("k_best", ["cotrain.min_precision", "cotrain.cut_neighbors", "cotrain.min_agree"]),
    ("agreement", ["cotrain.min_precision", "cotrain.cut_neighbors", "cotrain.k"]),
    ("threshold", ["cotrain.min_precision", "cotrain.cut_neighbors", "cotrain.k", "cotrain.min_agree"]),
    ("self", ["cotrain.min_precision", "cotrain.cut_neighbors", "cotrain.k", "cotrain.min_agree", "cotrain.feeding",
              "cotrain.veto"]),
])
def test_each_policy_names_exactly_the_keys_it_never_reads_in_config_order(policy, unread):
    assert _unread(policy=policy, **POLICY_KEYS) == unread


def test_defaults_left_unset_are_never_named_and_a_key_read_is_not_either():
    assert _unread() == []
    assert _unread(policy="threshold") == []
    assert _unread(policy="k_best", k=40, veto="none", threshold=0.8) == []
    assert _unread(select="cut_statistic", cut_neighbors=10, min_precision=0.95) == []


def test_shadow_runs_read_min_precision_under_an_explicit_policy_and_a_disabled_escalation_does_not():
    """Shadow runs pick with ``min_precision`` whatever the policy, and their picks shape the
    calibration; an escalation section switched off asks nothing."""
    assert _unread(policy="threshold", shadows=True, min_precision=0.95) == []
    cfg = copy.deepcopy(BASE)
    cfg["cotrain"] = {"policy": "threshold", "min_precision": 0.95}
    cfg["escalate"] = {"model": "openai/gpt-4o-mini", "fields": ["t"], "budget_usd": 1.0, "enabled": False}
    assert [line.split()[0] for line in unread_settings(parse_config(cfg))] == ["cotrain.min_precision"]
    cfg["escalate"]["enabled"] = True
    assert unread_settings(parse_config(cfg)) == []


def test_the_line_names_the_key_its_readers_and_the_policy_in_force():
    cfg = copy.deepcopy(BASE)
    cfg["cotrain"] = {"k": 50}
    assert unread_settings(parse_config(cfg)) == [
        "cotrain.k is read only by policy 'k_best'; this run (policy 'auto', select 'posterior') ignores it"]


@pytest.mark.parametrize("name", ["example.yaml", "images.yaml"])
def test_the_shipped_templates_set_nothing_their_policy_ignores(name):
    text = example_config() if name == "example.yaml" else \
        resources.files("orchestrator").joinpath(f"templates/{name}").read_text(encoding="utf-8")
    assert unread_settings(parse_config(yaml.safe_load(text))) == []


def test_a_run_warns_once_per_unread_key_and_the_dry_run_notes_it(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    cfg = write_config(tmp_path, policy="auto", k=25, max_rounds=1)
    assert api.plan(cfg)["unread_settings"] == [
        "cotrain.k is read only by policy 'k_best'; this run (policy 'auto', select 'posterior') ignores it"]
    with caplog.at_level(logging.WARNING, logger="cotrain"):
        api.run(cfg)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cotrain.")]
    assert said == ["cotrain.k is read only by policy 'k_best'; this run (policy 'auto', select 'posterior') ignores it"]


def test_the_readme_names_every_key_the_table_knows():
    """README's paragraph under the configuration table lists the keys by hand: it must name
    exactly the keys ``_READERS`` checks, so a key added there is documented too."""
    from orchestrator.unread_settings import _READERS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("A key that only some policies read (")
    listed = readme[start:readme.index("), set", start)].split("(", 1)[1]
    named = {name for part in listed.split(";") for name in re.findall(r"`(\w+)`", part.split(":")[0])}
    assert named == set(_READERS)
