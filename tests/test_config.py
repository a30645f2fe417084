"""Every bad config gives one ConfigError naming the key and what was expected."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from orchestrator.config import load_config, parse_config
from store.errors import ConfigError

BASE = {
    "task": {"labels": ["neg", "pos"]},
    "data": {"train": "items.csv"},
    "views": [
        {"name": "a", "kind": "sklearn", "columns": ["x"]},
        {"name": "b", "kind": "sklearn", "text": "t"},
    ],
}


def with_(path: str, value):
    cfg = copy.deepcopy(BASE)
    node = cfg
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    last: str | int = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


def test_valid_config_defaults():
    cfg = parse_config(copy.deepcopy(BASE))
    assert cfg.task.names == ["neg", "pos"]
    assert cfg.cotrain.policy == "auto" and cfg.cotrain.feeding == "cross" and cfg.cotrain.veto == "ensemble"
    assert cfg.cotrain.combination == "auto" and cfg.cotrain.min_precision == 0.9 and cfg.cotrain.calibration_folds == 5
    assert cfg.views[1].params == {"text": "t"}


def test_numeric_label_names_become_strings():
    cfg = parse_config(with_("task.labels", [0, 1]))
    assert cfg.task.names == ["0", "1"]


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("task.labels", ["only"], r"config key 'task.labels': List should have at least 2 items"),
        ("task.labels", ["a", "a"], r"'task.labels': label 'a' is declared twice"),
        ("data.train", KeyError, r"'data.train': required key is missing"),
        ("data.format", "xlsx", r"'data.format': Input should be 'auto', 'csv', 'jsonl', 'parquet' or 'images'"),
        ("views", [], r"'views': List should have at least 1 item"),
        ("views.0.kind", "nonsense", r"'views\[0\]': unknown view kind 'nonsense'"),
        ("views.0.estimatr", "x", r"'views\[0\]\.estimatr': unknown key"),
        ("views.0.columns", None, r"'views\[0\]': give exactly one of 'columns', 'column_prefix' or 'text'"),
        ("views.1.name", "a", r"'views': view name 'a' is used twice"),
        ("views.1.name", "has space", r"'views\[1\]\.name': String should match pattern"),
        ("views.0.name", "ensemble", r"'views': view name 'ensemble' is reserved"),
        ("task.labels", [True, False], r"'task.labels': label True is a YAML boolean .*: quote it"),
        ("seed", 10**23, r"'seed': Input should be less than or equal to"),
        ("cotrain.max_rounds", 3_000_000_000, r"'cotrain.max_rounds': Input should be less than or equal to 100000"),
        ("cotrain.k", 10**20, r"'cotrain.k': Input should be less than or equal to"),
        ("views.1.name", "gold", r"'views': view name 'gold' is reserved"),
        ("views.1.name", "escalated", r"'views': view name 'escalated' is reserved"),
        ("task.labels", ["cat ", "dog"], r"'task.labels\[0\].name': label 'cat ' starts or ends with whitespace"),
        ("task.labels", [" ", "dog"], r"'task.labels\[0\].name': label ' ' starts or ends with whitespace"),
        ("data.split_column", "label", r"'data': data.split_column and data.label_column both name the column 'label'"),
        ("data.id_column", "label", r"'data': data.id_column and data.label_column both name the column 'label'"),
        ("cotrain.threshold", 1.5, r"'cotrain.threshold': Input should be less than 1"),
        ("cotrain.max_rounds", -1, r"'cotrain.max_rounds': Input should be greater than or equal to 0"),
        ("cotrain.policy", "vote", r"'cotrain.policy': Input should be 'auto', 'threshold', 'k_best', 'agreement' or 'self'"),
        ("cotrain.feeding", "both", r"'cotrain.feeding': Input should be 'cross' or 'shared'"),
        ("cotrain.min_agree", 3, r"cotrain.min_agree=3 but only 2 view\(s\)"),
        ("cotrain.pseudo_weight", 0.0, r"'cotrain.pseudo_weight'"),
        ("cotrain.calibration_folds", 1, r"'cotrain.calibration_folds': must be 0 \(no cross-validation\)"),
        ("cotrain.batch", 3, r"'cotrain.batch': unknown key"),
        ("seeds", 3, r"'seeds': unknown key"),
        # YAML's true/yes for a number was read as 1: max_rounds: true ran one round
        ("cotrain.max_rounds", True, r"'cotrain.max_rounds': expected a number, not true"),
        ("cotrain.threshold", False, r"'cotrain.threshold': expected a number, not false"),
        ("seed", True, r"'seed': expected a number, not true"),
        ("views.0.calibration_cv", True, r"'views\[0\]\.calibration_cv': expected a number, not true"),
        # an infinite weight passed validation and the dry run, then failed the run's second round
        ("cotrain.pseudo_weight", float("inf"), r"'cotrain.pseudo_weight': expected a finite number, not inf"),
        ("cotrain.threshold", float("nan"), r"'cotrain.threshold': expected a finite number, not nan"),
        # inside a list too: a vision view's mean [true, 0.4, 0.4] was read as [1.0, 0.4, 0.4]
        ("views.1", {"name": "v", "kind": "vision", "image": "text", "mean": [True, 0.4, 0.4]},
         r"'views\[1\]\.mean': expected numbers, not true"),
        ("views.1", {"name": "v", "kind": "vision", "image": "text", "std": [0.2, float("inf"), 0.2]},
         r"'views\[1\]\.std': expected a finite number, not inf"),
    ],
)
def test_bad_config(path, value, match):
    cfg = with_(path, value)
    if path == "cotrain.min_agree":
        cfg["cotrain"]["policy"] = "agreement"
    with pytest.raises(ConfigError, match=match) as info:
        parse_config(cfg)
    assert "\n" not in str(info.value)


def test_cross_feeding_needs_two_views():
    cfg = copy.deepcopy(BASE)
    cfg["views"] = cfg["views"][:1]
    cfg["cotrain"] = {"policy": "k_best"}
    with pytest.raises(ConfigError, match="'cross' needs at least 2 views"):
        parse_config(cfg)
    cfg["cotrain"] = {"policy": "self"}
    assert parse_config(cfg).cotrain.policy == "self"
    cfg["cotrain"] = {}  # auto with one view: the view learns from its own combined-evidence picks
    assert parse_config(cfg).cotrain.policy == "auto"


def test_plugin_kind_params_pass_through():
    cfg = with_("views.0", {"name": "p", "kind": "my.module:MyView", "alpha": 3})
    assert parse_config(cfg).views[0].params == {"alpha": 3}


def test_malformed_yaml_names_file_and_line(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("task:\n  labels: [a, b\ndata: {train: x.csv}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: config key '<yaml>': malformed YAML at line \d+, column \d+"):
        load_config(p)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"config key '<file>': is a folder, not a config file"):
        load_config(tmp_path)


def test_paths_resolve_against_config_folder(tmp_path: Path):
    import yaml

    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.yaml"
    p.write_text(yaml.safe_dump(BASE))
    cfg = load_config(p)
    assert cfg.data.train == str(tmp_path / "sub" / "items.csv")
    assert cfg.store == str(tmp_path / "sub" / "cotrain.duckdb")


def test_with_the_data_digest_the_fingerprint_leaves_the_data_paths_out():
    a = parse_config(copy.deepcopy(BASE))
    b = parse_config(with_("data.train", "/elsewhere/items.csv"))
    assert a.fingerprint("d1") == b.fingerprint("d1") != a.fingerprint("d2")
    assert a.fingerprint("d1", with_paths=True) != b.fingerprint("d1", with_paths=True)
    assert a.fingerprint() != b.fingerprint()  # no digest (no file): the path is all there is


def test_an_image_folder_s_path_stays_in_the_fingerprint(tmp_path: Path):
    """Its items are named by their paths under the folder's parent: a renamed folder is other data."""
    for name in ("images", "imgs"):
        (tmp_path / name).mkdir()
    a = parse_config(with_("data.train", str(tmp_path / "images")))
    b = parse_config(with_("data.train", str(tmp_path / "imgs")))
    assert a.fingerprint("d1") != b.fingerprint("d1")


def test_fingerprint_ignores_store_path_only():
    a = parse_config(copy.deepcopy(BASE))
    b = parse_config(with_("store", "elsewhere.duckdb"))
    c = parse_config(with_("seed", 1))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize(("params", "match"), [
    ({"scoring": "vote"}, r"'views\[0\]\.scoring"),
    ({"api_key_env": "sk-abc 123"}, r"'views\[0\]\.api_key_env"),
    ({"demonstrations": {"strategy": "nearest"}}, r"'views\[0\]\.demonstrations"),
    ({"samples": 0}, r"'views\[0\]\.samples"),
    ({"fields": []}, r"'views\[0\]\.fields"),
    ({"budget_usd": -1}, r"'views\[0\]\.budget_usd"),
    ({"api_key": "sk-live-123"}, r"api_key must not be written in a config"),
])
def test_bad_llm_params(params, match):
    view = {"name": "l", "kind": "llm", "fields": ["text"], **params}
    with pytest.raises(ConfigError, match=match) as info:
        parse_config({"task": {"labels": ["a", "b"]}, "data": {"train": "x.csv"}, "views": [view],
                      "cotrain": {"policy": "self"}})
    assert "\n" not in str(info.value) and "sk-live" not in str(info.value)


def test_pseudo_weight_auto_is_resolved_by_policy_and_stored_resolved():
    from orchestrator.config import CotrainConfig

    assert CotrainConfig().pseudo_weight == 0.1                       # policy auto
    assert CotrainConfig(policy="k_best").pseudo_weight == 1.0        # explicit policies: sklearn's weighting
    assert CotrainConfig(policy="self", pseudo_weight=0.5).pseudo_weight == 0.5
    assert CotrainConfig(pseudo_weight="confidence").pseudo_weight == "confidence"
    assert CotrainConfig().model_dump()["pseudo_weight"] == 0.1       # the snapshot says what was used


def test_shadows_true_without_gold_folds_is_refused_not_ignored():
    with pytest.raises(ConfigError, match=r"'cotrain': shadows: true needs calibration_folds of at least 2"):
        parse_config(with_("cotrain", {"shadows": True, "calibration_folds": 0}))
    assert parse_config(with_("cotrain", {"shadows": "auto", "calibration_folds": 0})).cotrain.shadows == "auto"


def test_a_key_given_twice_in_the_yaml_is_refused_and_merge_keys_work(tmp_path: Path):
    """Two ``cotrain:`` sections ran with the second alone, silently."""
    p = tmp_path / "c.yaml"
    p.write_text("task: {labels: [a, b]}\ndata: {train: x.csv}\nviews: [{name: a, kind: sklearn, columns: [x]}]\n"
                 "cotrain: {max_rounds: 1}\ncotrain: {policy: k_best}\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line 5, column 1: key 'cotrain' appears twice"):
        load_config(p)
    p.write_text("task: {labels: [a, b]}\ndata: {train: x.csv}\n"
                 "views: [&v {name: a, kind: sklearn, columns: [x]}, {<<: *v, name: c}]\n")
    assert [(v.name, v.params) for v in load_config(p).views] == [("a", {"columns": ["x"]}), ("c", {"columns": ["x"]})]


def test_which_annotations_refuse_a_bool():
    from typing import Annotated, Any, Literal, Optional

    from views.checked import takes_number_not_bool

    assert [takes_number_not_bool(a) for a in (int, float, int | None, Optional[float], Annotated[int, "x"])] == [True] * 5
    assert not any(takes_number_not_bool(a) for a in (bool, int | bool, str, Any, Literal[1, 2], list[int], int | Any))


def test_a_yaml_alias_bomb_and_deep_nesting_are_refused_at_once(tmp_path: Path):
    """Ten nested anchors of nine aliases stand for 9^10 values: the secret check walked them
    for ever (Ctrl-C the only way out); 3,000 nested lists ended in a RecursionError naming nothing."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\ntask: {labels: *a9}\n")
    (tmp_path / "deep.yaml").write_text("task: {labels: [a, b]}\nx: " + "[" * 3000 + "1" + "]" * 3000 + "\n")
    (tmp_path / "deep90.yaml").write_text("task: {labels: [a, b]}\nx: " + "[" * 90 + "1" + "]" * 90 + "\n")
    for name, msg in (("bomb", "holds more than 100,000 values (a YAML alias used inside another"),
                      ("deep", "nests mappings and lists too deep to read"),
                      ("deep90", "nests more than 64 levels of mappings and lists")):
        with pytest.raises(ConfigError, match=rf"{name}\.yaml: config key '<yaml>': {re.escape(msg)}"):
            load_config(tmp_path / f"{name}.yaml")


def test_a_key_that_is_a_list_is_refused_before_it_is_compared(tmp_path: Path):
    """Two equal alias bombs as mapping keys were compared element by element while loading,
    before the size check: minutes of work from a few hundred bytes."""
    lines = ['a0: &a0 ["lol", "lol", "lol"]', 'b0: &b0 ["lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 4)]
    lines += [f"b{i}: &b{i} [*b{i - 1}, *b{i - 1}, *b{i - 1}]" for i in range(1, 4)]
    lines += ["x:", "  ? *a3", "  : 1", "  ? *b3", "  : 2"]
    (tmp_path / "keys.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"keys\.yaml: config key '<yaml>': malformed YAML at line \d+, column \d+: "
                                          r"a key that is a list or mapping"):
        load_config(tmp_path / "keys.yaml")


def test_a_label_model_over_two_views_is_refused_not_run():
    """Two views' votes do not identify a Dawid-Skene model: the run went on and accepted
    nothing (a probe's finding). Three views may; ``auto`` never tries it with two."""
    with pytest.raises(ConfigError, match=r"cotrain.combination 'label_model' needs at least 3 views \(2 configured\)"):
        parse_config(with_("cotrain", {"combination": "label_model"}))
    three = with_("cotrain", {"combination": "label_model"})
    three["views"].append({"name": "c", "kind": "sklearn", "columns": ["z"]})
    assert parse_config(three).cotrain.combination == "label_model"


def test_two_labels_in_two_unicode_forms_of_one_text_are_refused():
    """Data in either form names the task's label (``store.items.label_spelling``), so two
    task labels that differ only in their Unicode form could not both be named."""
    import unicodedata

    nfc = "caf\u00e9"
    with pytest.raises(ConfigError, match=r"labels 'caf\\xe9' and 'cafe\\u0301' are the same text in two Unicode forms"):
        parse_config(with_("task.labels", [nfc, unicodedata.normalize("NFD", nfc)]))
    assert parse_config(with_("task.labels", [nfc, "tea"])).task.names == [nfc, "tea"]
