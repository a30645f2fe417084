"""The embedding view with the real packaged MiniLM encoder: offline, cached, deterministic."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator import api
from orchestrator.packaged_data import make_split, rotten_tomatoes
from store.adapters import StoreCache
from store.database import Store
from store.errors import ViewError
from views.base import ViewContext
from views.embedding import EmbeddingView

pytest.importorskip("sentence_transformers")
LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def rt_small():
    return make_split(rotten_tomatoes(), n_labelled=16, n_test=40, seed=0, n_pool=64)


def test_embeddings_are_cached_in_the_store(rt_small, tmp_path: Path):
    texts = rt_small.text.tolist()[:30]
    with Store(tmp_path / "s.duckdb") as st:
        view = EmbeddingView.from_params("e", ViewContext(LABELS, seed=0, cache=StoreCache(st)), text="text")
        view.resolve_fields(["text"])
        first = view.embed(texts)
        assert first.shape == (30, 384) and view.encoded_count_ == len(set(texts))
        assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-4)
        again = view.embed(texts + texts[:5])
        assert view.encoded_count_ == len(set(texts))  # nothing re-encoded
        assert np.allclose(again[:30], first)
    with Store(tmp_path / "s.duckdb") as st:  # a new process/view reads the same cache
        fresh = EmbeddingView.from_params("e2", ViewContext(LABELS, seed=0, cache=StoreCache(st)), text="text")
        assert np.allclose(fresh.embed(texts), first) and fresh.encoded_count_ == 0


def test_without_the_cache_every_text_is_encoded_and_nothing_is_stored(rt_small, tmp_path: Path):
    texts = rt_small.text.tolist()[:12]
    with Store(tmp_path / "s.duckdb") as st:
        ctx = ViewContext(LABELS, seed=0, cache=StoreCache(st))
        cached = EmbeddingView.from_params("e", ctx, text="text", device="cpu")  # auto on a CPU: cached
        off = EmbeddingView.from_params("e", ctx, text="text", device="cpu", cache=False)
        gpu = EmbeddingView.from_params("e", ctx, text="text", device="cuda")  # auto on CUDA: encoded every time
        assert cached.caches() and not off.caches() and not gpu.caches()
        vecs = off.embed(texts + texts[:4])
        assert off.encoded_count_ == 16 and st.scalar("SELECT count(*) FROM feature_cache") == 0
        assert np.allclose(vecs, cached.embed(texts + texts[:4]), atol=1e-5)  # the same vectors either way
        assert cached.encoded_count_ == 12 and st.scalar("SELECT count(*) FROM feature_cache") == 12


@pytest.mark.parametrize("head", ["logistic_regression", "mlp"])
def test_heads_fit_and_are_deterministic(rt_small, head: str):
    train = rt_small[rt_small.label.notna() & (rt_small.split == "train")]
    y = (train.label == "positive").astype(int).to_numpy()
    test = rt_small[rt_small.split == "test"]
    probs = []
    for _ in range(2):
        v = EmbeddingView.from_params("e", ViewContext(LABELS, seed=3), text="text", head=head,
                          head_params={"epochs": 60} if head == "mlp" else {})
        v.fit(train, y, np.ones(len(y)))
        probs.append(v.predict_proba(test))
    assert probs[0].shape == (40, 2) and np.allclose(probs[0].sum(1), 1)
    assert np.array_equal(probs[0], probs[1])
    acc = (probs[0].argmax(1) == (test.label == "positive").to_numpy()).mean()
    assert acc > 0.5


def test_bad_encoder_and_field():
    v = EmbeddingView.from_params("e", ViewContext(LABELS, seed=0), text="body", encoder="no-such-encoder")
    with pytest.raises(ViewError, match="text field 'body' is not a column"):
        v.resolve_fields(["text"])
    with pytest.raises(ViewError, match="view 'e': encoder 'no-such-encoder' is neither a packaged encoder"):
        v.resolve_fields(["body"])


@pytest.mark.parametrize(("head", "params", "match"), [
    ("logistic_regression", {"C": -1}, "head 'logistic_regression': C must be a number above 0, not -1"),
    ("logistic_regression", {"Cx": 2}, "head_params 'Cx': not a parameter of this head"),
    ("logistic_regression", {"solver": "nope"}, "'solver' parameter of LogisticRegression"),
    ("mlp", {"epochs": 0}, "epochs must be a whole number of at least 1, not 0"),
    ("mlp", {"dropout": 1.0}, "dropout must be a number of at least 0 and below 1, not 1.0"),
    ("mlp", {"epochs": "1e2"}, "epochs must be a whole number of at least 1, not '1e2' .'epochs' read as text"),
    ("mlp", {"hiden": 3}, "head_params 'hiden': not a parameter of this head .it takes hidden, epochs"),
])
def test_bad_head_params_are_refused_before_any_text_is_encoded(head: str, params: dict, match: str):
    """A typo or a bad value in ``head_params`` failed the first fit, after the whole pool was encoded."""
    v = EmbeddingView.from_params("e", ViewContext(LABELS, seed=0), text="body", head=head, head_params=params)
    with pytest.raises(ViewError, match=f"view 'e': .*{match}"):
        v.resolve_fields(["body"])
    assert v.encoded_count_ == 0


def test_an_encoder_folder_that_holds_no_model_is_named_before_any_round(tmp_path: Path):
    """An empty folder passed the early check and failed at round 0 with transformers'
    "Unrecognized model" (no view named); a folder with a broken config failed the same way.
    The first is refused by resolve_fields, the second when the encoder loads, by the view."""
    (tmp_path / "empty").mkdir()
    v = EmbeddingView.from_params("e", ViewContext(LABELS, seed=0, base_dir=tmp_path), text="body", encoder="empty")
    with pytest.raises(ViewError, match=r"view 'e': encoder folder 'empty' holds no model \(none of modules.json"):
        v.resolve_fields(["body"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    v = EmbeddingView.from_params("e", ViewContext(LABELS, seed=0, base_dir=tmp_path), text="body", encoder="broken")
    assert v.resolve_fields(["body"]) == ["body"]
    with pytest.raises(ViewError, match=r"view 'e': cannot load a sentence-transformers model from .*broken: "):
        v.embed(["a text"])


def test_run_with_embedding_view_encodes_each_text_once(rt_small, tmp_path: Path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    encoded: list[str] = []  # every text the encoder is given
    real = SentenceTransformer.encode

    def encode(self, sentences, *args, **kwargs):
        encoded.extend([sentences] if isinstance(sentences, str) else sentences)
        return real(self, sentences, *args, **kwargs)

    monkeypatch.setattr(SentenceTransformer, "encode", encode)
    rt_small.to_csv(tmp_path / "items.csv", index=False)
    cfg = {"task": {"labels": list(LABELS)}, "data": {"train": "items.csv", "split_column": "split"},
           "views": [{"name": "tfidf", "kind": "sklearn", "text": "text"},
                     {"name": "minilm", "kind": "embedding", "text": "text"}],
           "cotrain": {"policy": "k_best", "k": 8, "max_rounds": 3}, "store": "s.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = api.run(tmp_path / "c.yaml")
    assert sorted(encoded) == sorted(rt_small.text.unique())  # each distinct text once
    with Store(tmp_path / "s.duckdb", read_only=True) as st:
        cached = st.scalar("SELECT count(*) FROM feature_cache WHERE namespace LIKE 'sentence-transformers:%'")
    assert cached == rt_small.text.nunique()
    assert res.n_pseudo > 0 and 0.0 <= res.final_metrics["minilm"]["test_accuracy"] <= 1.0  # evaluated
    encoded.clear()
    again = api.run(tmp_path / "c.yaml", new_run=True)
    assert encoded == []  # a second run on the same store re-encodes nothing ...
    assert again.final_metrics["minilm"] == res.final_metrics["minilm"]  # ... and reads the same vectors


def test_encoder_loads_offline_and_leaves_the_process_as_it_found_it(leaves_process_as_found, tmp_path: Path):
    """The packaged MiniLM loads and encodes with no hub, and afterwards no environment variable
    (no HF_HUB_OFFLINE), warning filter or logger is changed; huggingface_hub itself is not left
    offline; a folder that holds no model fails at once instead of retrying the hub."""
    empty = tmp_path / "no_model"
    empty.mkdir()
    leaves_process_as_found(f'''
        import time
        from pathlib import Path
        from store.errors import ViewError
        from views.encoders import load_sentence_transformer, resolve_text_encoder

        m = load_sentence_transformer(resolve_text_encoder("all-MiniLM-L6-v2"), device="cpu")
        assert m.encode(["a great film"]).shape == (1, 384)
        import huggingface_hub.constants
        from transformers.utils import logging as hf_logging
        assert not huggingface_hub.constants.HF_HUB_OFFLINE and hf_logging.is_progress_bar_enabled()
        for missing in (Path({str(empty)!r}), Path({str(tmp_path / "absent")!r})):
            t = time.perf_counter()
            try:
                load_sentence_transformer(missing, device="cpu")
                raise AssertionError("loaded a model from " + str(missing))
            except ViewError as exc:  # one line naming the folder, whatever transformers raised
                assert time.perf_counter() - t < 5 and str(missing) in exc.detail, (missing, exc)
    ''', tmp_path)


@pytest.mark.slow  # 16 s; test_review_selection covers the typical choice itself
def test_typical_review_items_are_found_in_the_runs_cached_embeddings(rt_small, tmp_path: Path, monkeypatch):
    """``typical`` (and ``active`` on an uncovered run) clusters the run's pretrained vectors,
    read from the store's cache without encoding anything; a run whose vectors are not cached
    (``cache: false``) or that has no pretrained view keeps the views' probabilities."""
    from sentence_transformers import SentenceTransformer

    from orchestrator import review_selection
    from orchestrator.review_space import pretrained_space
    from store.exchange.candidates import review_candidates

    rt_small.to_csv(tmp_path / "items.csv", index=False)
    cfg = {"task": {"labels": list(LABELS)}, "data": {"train": "items.csv", "split_column": "split"},
           "views": [{"name": "tfidf", "kind": "sklearn", "text": "text"},
                     {"name": "minilm", "kind": "embedding", "text": "text"}],
           "cotrain": {"max_rounds": 1}, "store": "s.duckdb"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    api.run(tmp_path / "c.yaml")
    encoded: list[str] = []
    monkeypatch.setattr(SentenceTransformer, "encode", lambda self, s, *a, **k: encoded.extend(s) or None)
    spaces: list[object] = []
    real = review_selection.choose_for_review
    monkeypatch.setattr(review_selection, "choose_for_review", lambda *a: spaces.append(a[-1]) or real(*a))
    with Store(tmp_path / "s.duckdb", read_only=True) as st:
        ids = review_candidates(st, 1).item_id.tolist()
        space = pretrained_space(st, 1, ids)
        texts = st.query("SELECT d.text FROM items i JOIN data_1 d ON d.__row = i.row_idx WHERE i.item_id ="
                         " ANY(?) ORDER BY list_position(?, i.item_id)", [ids, ids]).column(0).to_pylist()
        view = EmbeddingView.from_params("e", ViewContext(LABELS, seed=0, cache=StoreCache(st)), text="text")
        assert np.allclose(space, view.embed(texts), atol=1e-6)  # the cached vectors, one per candidate
    assert encoded == [] and space.shape == (len(ids), 384)
    assert api.export(tmp_path / "s.duckdb", tmp_path / "t.csv", select="typical", sample=8) == 8
    assert np.array_equal(spaces[-1], space)  # the export clustered them
    cfg["views"][1]["cache"] = False
    cfg["store"] = "nocache.duckdb"
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.undo()
    api.run(tmp_path / "n.yaml")
    with Store(tmp_path / "nocache.duckdb", read_only=True) as st:
        assert pretrained_space(st, 1, review_candidates(st, 1).item_id.tolist()) is None
