"""Secrets never leave memory: a credential anywhere in a config is refused before anything
is written, and whatever reaches a store anyway (an older cotrain's) is redacted on the way
out to reports, exports and status."""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml

from orchestrator import api
from orchestrator.config import parse_config
from store.errors import ConfigError
from store.secrets import REDACTED, credential_name, find_secret, redact, redact_text
from tests.conftest import write_config

SECRET = "s3cr3t-VALUE-0123456789abcdef"


def _plant(tmp: Path, where: str) -> Path:
    cfg = write_config(tmp, max_rounds=1)
    data = yaml.safe_load(cfg.read_text())
    llm = {"name": "l", "kind": "llm", "fields": ["a_0"], "model": "openai/x", "api_base": "http://127.0.0.1:9/v1"}
    if where == "llm.api_key":
        data["views"].append({**llm, "api_key": SECRET})
    elif where == "llm.api_base userinfo":
        data["views"].append({**llm, "api_base": f"https://bob:{SECRET}@llm.example/v1"})
    elif where == "llm.api_base query":
        data["views"].append({**llm, "api_base": f"https://llm.example/v1?api_key={SECRET}"})
    elif where == "plugin param":
        data["views"][1] = {"name": "vb", "kind": "tests.plugin_views:CentroidView", "columns": ["b_0"],
                            "hf_token": SECRET}
    elif where == "estimator_params":
        data["views"][1]["estimator_params"] = {"password": SECRET}
    elif where == "nested list":
        data["views"][1]["estimator_params"] = {"extra": [{"clientSecret": SECRET}]}
    elif where == "debate agent":
        data["debate"] = {"fields": ["a_0"], "agents": [{"name": "a1", "model": "openai/x",
                                                          "api_base": f"http://u:{SECRET}@127.0.0.1:9/v1"}]}
    elif where == "llm.api_base api_token":
        data["views"].append({**llm, "api_base": f"https://llm.example/v1?model=x&api_token={SECRET}"})
    elif where == "llm.api_base x-api-key":
        data["views"].append({**llm, "api_base": f"https://llm.example/v1?x-api-key={SECRET}"})
    elif where == "key in api_key_env":
        data["views"].append({**llm, "api_key_env": "Wq3xT9sLm2Pz8Kd4Rv7Yb1Nc"})
    elif where == "key-shaped value":
        data["views"].append({**llm, "instructions": "use sk-proj-" + SECRET})
    cfg.write_text(yaml.safe_dump(data))
    return cfg


PLACES = ["llm.api_key", "llm.api_base userinfo", "llm.api_base query", "llm.api_base api_token",
          "llm.api_base x-api-key", "key in api_key_env", "plugin param", "estimator_params", "nested list",
          "debate agent", "key-shaped value"]


@pytest.mark.parametrize("where", PLACES)
def test_a_planted_credential_is_refused_and_written_nowhere(tmp_path: Path, where: str):
    cfg = _plant(tmp_path, where)
    for call in (api.plan, api.run):
        with pytest.raises(ConfigError) as err:
            call(cfg)
        msg = str(err.value)
        assert "api_key_env" in msg and "\n" not in msg and SECRET not in msg and "Wq3xT9sLm2Pz8Kd4Rv7Yb1Nc" not in msg
    assert not (tmp_path / "run.duckdb").exists()
    for f in tmp_path.rglob("*"):  # only the config itself holds it
        if f.is_file() and f.name != "cotrain.yaml":
            assert SECRET.encode() not in f.read_bytes(), f


def test_names_that_are_not_credentials_pass():
    for name in ("max_tokens", "max_answer_tokens", "budget_tokens", "tokenizer", "tokenizer_params", "api_key_env",
                 "top_logprobs", "keywords", "monkey", "sort_key", "author"):
        assert not credential_name(name), name
    for name in ("api_key", "apiKey", "hf_token", "password", "client_secret", "Authorization", "key", "access_key",
                 "auth"):
        assert credential_name(name), name
    ok = {"task": {"labels": ["password", "token"]}, "data": {"train": "x.csv"},
          "views": [{"name": "l", "kind": "llm", "fields": ["t"], "api_key_env": "OPENAI_API_KEY",
                     "verbalizers": {"password": ["password"], "token": "token"}, "max_answer_tokens": 8}],
          "cotrain": {"policy": "self"}}
    assert find_secret(ok) is None
    parse_config(ok)


def test_an_older_store_holding_a_secret_shows_it_nowhere(tmp_path: Path):
    cfg = write_config(tmp_path, max_rounds=1)
    api.run(cfg)
    store = tmp_path / "run.duckdb"
    con = duckdb.connect(str(store))
    config = json.loads(con.execute("SELECT config FROM runs").fetchall()[0][0])
    config["views"][1]["estimator_params"] = {"api_key": SECRET}  # as an older cotrain could have stored it
    config["views"][0]["api_base"] = f"https://bob:{SECRET}@host/v1"
    con.execute("UPDATE runs SET config = ?", [json.dumps(config)])
    con.close()
    out = tmp_path / "out"
    out.mkdir()
    for fmt, name in (("parquet", "l.parquet"), ("csv", "l.csv"), ("jsonl", "l.jsonl"), ("label-studio", "ls.json"),
                      ("argilla", "ar.json"), ("hf-parquet", "h.parquet")):
        api.export(store, out / name, fmt)
    html = api.report(store, out / "report.html")
    assert "&lt;redacted&gt;" in html.read_text(encoding="utf-8")
    status = api.status(store)
    for f in out.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert SECRET not in repr(status)


def test_redact_keeps_everything_else():
    cfg = {"a": {"token": "x", "tokens": 5, "url": "https://u:p@h/x?key=abc&b=1"}, "l": ["sk-" + "a" * 30, "ok"]}
    assert redact(cfg) == {"a": {"token": "<redacted>", "tokens": 5, "url": "https://<redacted>@h/x?key=<redacted>&b=1"},
                           "l": ["<redacted>", "ok"]}
    # any query parameter named like a credential or a signature, the others kept
    url = "https://h/v1?model=m&api_token=a&x-api-key=b&client_secret=c&X-Amz-Signature=d&max_tokens=5"
    assert redact({"u": url}) == {"u": "https://h/v1?model=m&api_token=<redacted>&x-api-key=<redacted>"
                                       "&client_secret=<redacted>&X-Amz-Signature=<redacted>&max_tokens=5"}


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/v1?api%5Fkey=PLAINSECRET123",  # percent-encoded: the server reads api_key
    "http://h/v1#access_token=PLAINSECRET123", "http://h/v1?pass=PLAINSECRET123", "http://h/v1?jwt=PLAINSECRET123",
    "http://h/v1?sessionid=PLAINSECRET123", "//user:PLAINSECRET123@h/v1",
])
def test_disguised_url_credentials_are_refused_and_redacted(url: str):
    """A probe's api_base with ?api%5Fkey=... passed the check, so the key sat in runs.config,
    llm_cache.model, llm_calls.model and the report; so did a fragment's access_token, ?pass=,
    ?jwt=, ?sessionid= and a scheme-relative //user:pw@."""
    assert find_secret({"views": [{"api_base": url}]})[0] == "views[0].api_base"
    assert "PLAINSECRET123" not in redact_text(url) and REDACTED in redact_text(url)


def test_the_completions_path_goes_before_the_base_urls_query():
    from views.llm.transport import completions_url

    assert completions_url("http://h:8/v1/") == "http://h:8/v1/chat/completions"
    assert completions_url("http://h/v1?api-version=2") == "http://h/v1/chat/completions?api-version=2"


@pytest.mark.parametrize("value", [
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF",  # GitHub fine-grained
    "glpat-abcdefghij0123456789",  # GitLab
    "sk_live_51H8abcdefghijklmnopqrstuvwx", "rk_test_51H8abcdefghijklmnopqrstuvwx",  # Stripe
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",  # a JWT
])
def test_more_key_shapes_are_refused_in_a_label_description_and_redacted(tmp_path: Path, value: str):
    """A probe put a fine-grained GitHub token and a Stripe key in label descriptions: the run
    started, and both sat in runs.config and the report."""
    cfg = write_config(tmp_path, max_rounds=1)
    data = yaml.safe_load(cfg.read_text())
    first = data["task"]["labels"][0]
    data["task"]["labels"][0] = {"name": first, "description": f"see {value} here"}
    cfg.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="a value shaped like an API key") as err:
        api.run(cfg)
    assert value not in str(err.value)
    assert redact(f"token {value}, end") == f"token {REDACTED}, end"


def test_words_that_only_look_like_key_prefixes_pass():
    from store.secrets import secret_in_text

    for text in ("desk_test_abcdefghijklmnopqrstuv", "task_live_x", "eyJ alone", "glpat-short",
                 # a key's prefix inside a longer word: file names and identifiers, not keys
                 "feats/hf_distilbertbaseuncasedembeddings_v2.parquet", "hf_modelrepositoryembeddingsv2_final",
                 "data/sk_test_sentencetransformers.csv", "runs/rk_live_experimentsummary2024a.csv",
                 "github_pat_is_a_name_of_some_variable_here", "s3://b/AKIAIOSFODNN7EXAMPLEPLUS/x"):
        assert secret_in_text(text) is None, text


def test_the_command_lines_secret_values_skip_places_throwaways_and_bombs(tmp_path):
    """What the CLI scrubs: the values a config's ``*_env`` keys name and credential-named
    variables' values, but not a path or URL held in one (``https://`` and ``/home/user/``
    would vanish from every line printed), not a throwaway key of under 8 characters, and a
    YAML alias bomb is refused by the config's own reader, not walked (it hung ``run``)."""
    import time

    from orchestrator.secret_values import known_secrets

    env = {"SRV_KEY": "devSERVERkey4242", "OPENAI_API_KEY": "sk-abcdefghijklmnop", "SHORT_TOKEN": "none",
           "ACTIONS_ID_TOKEN_REQUEST_URL": "https://pipelines.example/token", "HF_TOKEN_PATH": "/nowhere/token"}
    cfg = {"views": [{"name": "llm", "api_key_env": "SRV_KEY"}, {"name": "b", "api_key_env": "UNSET"}]}
    assert known_secrets(cfg, env) == ("sk-abcdefghijklmnop", "devSERVERkey4242")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)) + "k_env: SRV_KEY\n")
    t = time.perf_counter()
    assert known_secrets(bomb, env) == ("sk-abcdefghijklmnop",) and time.perf_counter() - t < 5
    assert known_secrets(tmp_path / "missing.yaml", {}) == () and known_secrets(tmp_path, {}) == ()
