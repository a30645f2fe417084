"""The trust boundary: a config is code (dotted paths are imported and run by a real run),
but ``--dry-run`` imports without calling any user factory, and an estimator must be a class."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator import api
from orchestrator.cli import app
from store.errors import ViewError
from tests.conftest import write_config


def _with_view(tmp: Path, view: dict) -> Path:
    cfg = write_config(tmp, max_rounds=1)
    data = yaml.safe_load(cfg.read_text())
    data["views"][1] = {"name": "vb", **view}
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def test_dry_run_never_constructs_a_plugin_estimator(tmp_path: Path):
    marker = tmp_path / "estimator-ran"
    cfg = _with_view(tmp_path, {"kind": "sklearn", "column_prefix": "b_",
                                "estimator": "tests.plugin_views.MarkingClassifier",
                                "estimator_params": {"marker": str(marker)}})
    plan = api.plan(cfg)
    assert plan["n_gold"] > 0 and not marker.exists()
    res = CliRunner().invoke(app, ["run", str(cfg), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert not marker.exists() and not (tmp_path / "run.duckdb").exists()
    api.run(cfg)  # a real run is allowed to run the code the config names
    assert marker.read_text() == "constructed"


def test_dry_run_never_constructs_a_plugin_view(tmp_path: Path):
    marker = tmp_path / "view-ran"
    cfg = _with_view(tmp_path, {"kind": "tests.plugin_views:MarkingView", "columns": ["b_0", "b_1"],
                                "marker": str(marker)})
    api.plan(cfg)
    assert not marker.exists()
    (tmp_path / "bad").mkdir()
    bad = _with_view(tmp_path / "bad", {"kind": "tests.plugin_views:MarkingView", "colums": ["b_0"]})
    with pytest.raises(ViewError, match="bad parameters for kind"):
        api.plan(bad)  # parameters are still checked against the signature
    api.run(cfg)
    assert marker.exists()


def test_a_function_is_not_an_estimator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`estimator: subprocess.getoutput` with `{cmd: ...}` ran the command during --dry-run."""
    monkeypatch.chdir(tmp_path)
    cfg = _with_view(tmp_path, {"kind": "sklearn", "column_prefix": "b_", "estimator": "subprocess.getoutput",
                                "estimator_params": {"cmd": "touch PWNED"}})
    for call in (api.plan, api.run):
        with pytest.raises(ViewError, match="not a classifier class") as err:
            call(cfg)
        assert "logistic_regression" in str(err.value)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("estimator, params", [
    ("subprocess.Popen", {"args": ["touch", "PWNED"]}),
    ("logging.FileHandler", {"filename": "PWNED"}),
    ("sklearn.linear_model.LinearRegression", {}),
])
def test_a_class_that_is_no_classifier_is_refused_before_it_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      estimator: str, params: dict):
    """A class passed the function check: subprocess.Popen ran its command (and logging.FileHandler
    created its file) when the run built it, and --dry-run passed both."""
    monkeypatch.chdir(tmp_path)
    cfg = _with_view(tmp_path, {"kind": "sklearn", "column_prefix": "b_", "estimator": estimator,
                                "estimator_params": params})
    for call in (api.plan, api.run):
        with pytest.raises(ViewError, match=rf"'{estimator}' is not a classifier class: it has no fit and "
                                            r"predict_proba \(or decision_function, with calibration\)"):
            call(cfg)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_estimator_lists_the_built_ins(tmp_path: Path):
    cfg = _with_view(tmp_path, {"kind": "sklearn", "column_prefix": "b_", "estimator": "gradient_boosting"})
    with pytest.raises(ViewError) as err:
        api.plan(cfg)
    msg = str(err.value)
    assert "unknown estimator 'gradient_boosting'" in msg
    for name in ("logistic_regression", "random_forest", "hist_gradient_boosting", "knn", "mlp"):
        assert name in msg


def test_a_dotted_path_that_names_no_module_is_one_error(tmp_path: Path):
    """estimator '...' was a TypeError about relative imports, with a traceback file."""
    for estimator in ("...", ".sklearn.svm.SVC", "sklearn..svm.SVC"):
        cfg = _with_view(tmp_path, {"kind": "sklearn", "column_prefix": "b_", "estimator": estimator})
        with pytest.raises(ViewError, match=rf"cannot import '{re.escape(estimator)}' .*: "
                                            rf"'{re.escape(estimator)}' is not a dotted path of a module"):
            api.plan(cfg)


def test_init_into_a_folder_and_data_that_is_a_device_are_named(tmp_path: Path):
    from store.errors import CotrainError, DataError

    for force in (False, True):  # --force then failed with IsADirectoryError
        with pytest.raises(CotrainError, match=r"is a folder; name the config file to write"):
            api.init_config(tmp_path, force=force)
    cfg = _with_view(tmp_path, {"kind": "sklearn", "column_prefix": "b_"})
    data = yaml.safe_load(cfg.read_text())
    data["data"]["train"] = "/dev/null"
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(DataError, match=r"^/dev/null: not a regular file$"):
        api.run(cfg)
