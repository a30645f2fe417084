"""``llm`` view kind: a prompted LLM as one view among others.

Any model litellm reaches (``openai/gpt-4o-mini``, ``ollama/llama3``, ``hosted_vllm/...``
with ``api_base``) or an embedded local model (``local:smollm2-135m``, the default, served
on 127.0.0.1 by llama.cpp for as long as the view is open). Probabilities come from
label-word log-probabilities when the endpoint returns them, else from k sampled JSON
answers (``scoring: auto`` decides with one probe request; ``logprobs``/``sample`` force).

The view learns from its peers: at every fit it takes the labelled items it is given as
the pool of few-shot demonstrations (``balanced`` or ``knn`` by the text encoder's vectors,
under a token budget), and may fit a per-class bias and/or a temperature on them
(``calibration``). Item text is data: a demonstration puts an item's text into other items'
prompts, so only gold and reviewed items demonstrate and calibrate (the orchestrator tags
each training row's source in ``__label_source``); pseudo-labelled ones demonstrate only with
``demonstrations.from_pseudo: true``, and an item's own label always comes from label-word
scoring, never from its text. Which demonstrations each prediction saw is filed
in the store (``llm_demonstrations``); every request, cache hit, token and dollar is filed
by the client (``llm_calls``).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from store.errors import ViewError
from views.base import ParamsView, ViewContext, item_ids, trusted_rows
from views.llm.client import OVERLOAD, RETRYABLE, Endpoint, LLMClient, Price, count_tokens, estimate_cost
from views.llm.connect import Connection, check_model, connect, endpoint_for
from views.llm.demos import balanced_draw, nearest, within_budget
from views.llm.local import LocalServer
from views.llm.prompt import DEFAULT_SYSTEM, DEFAULT_USER, PromptBuilder, estimate_tokens
from views.llm.scoring import apply_calibration, check_batch, fit_calibration, read_answers
from views.params import LLMParams

log = logging.getLogger("cotrain")

class LLMView(ParamsView):
    """Parameters (:class:`views.params.LLMParams`, the one place of their defaults):

    model, api_base, api_key_env (the *name* of the variable holding the key); fields (item
    fields the prompt shows); instructions, system, template (Jinja); verbalizers
    (``{label: [words]}``); scoring (auto|logprobs|sample), samples, temperature,
    top_logprobs, max_answer_tokens; demonstrations ({strategy: none|balanced|knn, k,
    max_tokens, encoder, text, from_pseudo}: drawn from gold and reviewed items only, plus
    pseudo-labelled ones when ``from_pseudo`` is true); calibration
    (none|bias|temperature|both, fitted on gold and reviewed items only),
    calibration_max_items; concurrency, max_concurrency (adaptive above concurrency),
    rate_limit (requests/s), timeout_s, max_retries, backoff_s; price ({input_per_mtok, output_per_mtok}); budget_usd; n_ctx and threads
    (local models).
    """

    Params = LLMParams
    zero_shot = True  # labels without any training item: a run may start with no gold label

    def __init__(self, name: str, context: ViewContext, params: LLMParams) -> None:
        self.name = name
        self.context = context
        self.model = params.model
        self.fields = list(params.fields)
        self.api_base = params.api_base
        self.api_key_env = params.api_key_env
        self.instructions = params.instructions
        self.system = params.system
        self.template = params.template
        self.verbalizers = {lab: list(words) for lab, words in params.verbalizers.items()}
        self.scoring = params.scoring
        self.samples = params.samples
        self.temperature = params.temperature
        self.top_logprobs = params.top_logprobs
        self.max_answer_tokens = params.max_answer_tokens
        self.demonstrations = params.demonstrations.model_dump()
        self.calibration = params.calibration
        self.calibration_max_items = params.calibration_max_items
        self.concurrency = params.concurrency
        self.max_concurrency = params.max_concurrency
        self.rate_limit = params.rate_limit
        self.timeout_s = params.timeout_s
        self.max_retries = params.max_retries
        self.backoff_s = params.backoff_s
        self.price = params.price.model_dump() if params.price is not None else None
        self.budget_usd = params.budget_usd
        self.n_ctx = params.n_ctx
        self.threads = params.threads
        self.backend, self.max_batch = params.backend, params.max_batch
        # fitted / run state
        self.mode_: str | None = None if self.scoring == "auto" else self.scoring
        self.bias_: np.ndarray | None = None
        self.temperature_: float = 1.0
        self.round_: int | None = None
        self.n_fits_ = 0
        self.abstentions_ = 0
        self._unread_warned = False  # said that most answers named no label (once a run)
        self._builder: PromptBuilder | None = None
        self._conn: Connection | None = None
        self._batched: Any = None  # a model that runs elsewhere (use_batched), else one in this process
        self._encoder_view: Any = None
        self._demo_items: list[dict[str, str]] = []
        self._demo_y = np.zeros(0, dtype=int)
        self._demo_ids: list[str] = []
        self._demo_cost: list[int] = []
        self._demo_vecs: np.ndarray | None = None
        self._round_demos = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ build / check
    @property
    def labels(self) -> tuple[str, ...]:
        return self.context.labels

    @property
    def fixed_prompts(self) -> bool:
        """Whether an item's prompt is the same after any fit: with no demonstrations only the
        calibration (applied after the cache) depends on the training set, so predicting
        the item again is a cache hit (read by ``orchestrator.shadows``; a paid plug-in view
        without this attribute counts as paying again)."""
        return self.demonstrations["strategy"] == "none"

    def _verbalisers(self) -> list[list[str]]:
        unknown = sorted(set(self.verbalizers) - set(self.labels))
        if unknown:
            raise ViewError(self.name, f"verbalizers name unknown label '{unknown[0]}' "
                            f"(labels: {', '.join(self.labels)})")
        out = []
        for lab in self.labels:
            words = self.verbalizers.get(lab) or [lab]
            if not all(isinstance(w, str) and w.strip() for w in words):
                raise ViewError(self.name, f"verbalizers of '{lab}' must be non-empty strings")
            out.append([w.strip() for w in words])
        return out

    def resolve_fields(self, columns: Sequence[str]) -> list[str]:
        for f in self.fields:
            if f not in columns:
                raise ViewError(self.name, f"field '{f}' is not a column of the data")
        check_model(self.model)  # a local model is installed? (raises naming the pip command)
        if self.budget_usd is not None and not str(self.model).startswith("local:") \
                and self.price_per_call(100.0, 1.0) is None:  # every call would be filed at $0: no budget
            raise ViewError(self.name, f"budget_usd is set but the price of '{self.model}' is unknown (litellm has "
                            "none); give price: {input_per_mtok, output_per_mtok} so the budget can be enforced")
        self._builder = self._make_builder()
        self._builder.check()
        used = list(self.fields)
        if self.demonstrations["strategy"] == "knn":
            text = self.demonstrations["text"] or self.fields[0]
            if text not in columns:
                raise ViewError(self.name, f"demonstrations.text field '{text}' is not a column of the data")
            if text not in used:
                used.append(text)
            self._embedder().resolve_fields(columns)
        return used

    def _make_builder(self) -> PromptBuilder:
        descs = getattr(self.context, "label_descriptions", None) or [None] * len(self.labels)
        return PromptBuilder(labels=self.labels, descriptions=descs, verbalisers=self._verbalisers(),
                             fields=self.fields, instructions=self.instructions or "",
                             system=self.system if self.system is not None else DEFAULT_SYSTEM,
                             template=self.template if self.template is not None else DEFAULT_USER, view=self.name)

    @property
    def builder(self) -> PromptBuilder:
        if self._builder is None:
            self._builder = self._make_builder()
        return self._builder

    def _embedder(self) -> Any:
        if self._encoder_view is None:
            from views.embedding import EmbeddingView

            self._encoder_view = EmbeddingView.from_params(f"{self.name}.demos", self.context,
                                                           text=self.demonstrations["text"] or self.fields[0],
                                                           encoder=self.demonstrations["encoder"])
        return self._encoder_view

    # ------------------------------------------------------------------ client / server
    def endpoint(self) -> Endpoint:
        return endpoint_for(self.model, self.api_base, self.api_key_env, self.backend)

    def client(self) -> LLMClient:
        """The view's client; starts the embedded server on first use for local models."""
        if self._conn is None:
            self._conn = connect(
                self.model, self.name, api_base=self.api_base, api_key_env=self.api_key_env,
                ledger=getattr(self.context, "ledger", None), concurrency=self.concurrency,
                max_concurrency=self.max_concurrency,
                rate_limit=self.rate_limit, timeout_s=self.timeout_s, max_retries=self.max_retries,
                backoff_s=self.backoff_s, price=self.price, budget_usd=self.budget_usd, n_ctx=self.n_ctx,
                threads=self.threads, backend=self.backend, max_batch=self.max_batch, batched=self._batched)
        return self._conn.client

    def batched_model(self) -> tuple[str, int, str, int] | None:
        """The packaged model's name, ``max_batch``, backend (``transformers``, ``vllm``), ``n_ctx``; else None."""
        if self.backend == "server":
            return None
        return self.model.split(":", 1)[1], self.max_batch, self.backend, self.n_ctx

    def use_batched(self, model: Any) -> None:
        """Answer with ``model`` (e.g. one in Ray actors) from the next call on; it is closed
        with the view."""
        self.close()
        self._batched = model

    @property
    def _server(self) -> LocalServer | None:
        return self._conn.server if self._conn is not None else None

    def close(self) -> None:
        """Stop the client's loop and the embedded server (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __del__(self) -> None:  # a forgotten view must not keep a server running
        try:
            self.close()
        except Exception:
            pass

    # ------------------------------------------------------------------ rounds
    def set_round(self, round_idx: int) -> None:
        """Called by the orchestrator before each round's fit: seeds the round's draws so a
        resumed run shows the same demonstrations (and so hits the cache)."""
        self.round_ = round_idx

    def _rng(self) -> np.random.Generator:
        step = self.round_ if self.round_ is not None else self.n_fits_
        return np.random.default_rng([self.context.seed, step])

    @staticmethod
    def _ids(items: pd.DataFrame) -> list[str]:
        ids = item_ids(items)
        return ids if ids is not None else [f"#{i}" for i in range(len(items))]

    def _records(self, items: pd.DataFrame) -> list[dict[str, str]]:
        cols = {f: items[f].tolist() for f in self.fields}
        return [{f: "" if _missing(cols[f][i]) else str(cols[f][i]) for f in self.fields} for i in range(len(items))]

    @staticmethod
    def _trusted(items: pd.DataFrame) -> np.ndarray:
        """Rows whose label is gold or reviewed, whose text may be shown to other items. A
        frame without the label sources (the view used on its own) is all trusted: its caller
        chose those items."""
        trusted = trusted_rows(items)
        return np.ones(len(items), dtype=bool) if trusted is None else trusted

    def fit(self, items: pd.DataFrame, y: np.ndarray, sample_weight: np.ndarray) -> None:
        """Take the given gold/reviewed items (and pseudo-labelled ones with
        ``demonstrations.from_pseudo``) as the demonstration pool and fit calibration."""
        y = np.asarray(y, dtype=int)
        sample_weight = np.asarray(sample_weight, dtype=float)
        rng = self._rng()
        self.n_fits_ += 1
        strategy = self.demonstrations["strategy"]
        trusted = self._trusted(items)
        # Calibration fits on trusted labels only, whatever from_pseudo says: peers' picks
        # would pull the bias towards the peers (the LLM's errors are supposed to differ from
        # theirs), and one poisoned pseudo-label would shift every item's probabilities.
        cal_items, cal_y, cal_w = items[trusted].reset_index(drop=True), y[trusted], sample_weight[trusted]
        if not self.demonstrations.get("from_pseudo"):  # pool text is data: only trusted items demonstrate
            items, y = cal_items, cal_y
        self._demo_items = self._records(items)
        self._demo_y = y
        self._demo_ids = self._ids(items)
        mode = self.mode_ or "logprobs"
        self._demo_cost = [] if strategy == "none" else [  # token cost of each item as a demonstration
            estimate_tokens(m["content"]) + estimate_tokens(self.builder.answer(int(lab), mode)) + 8
            for m, lab in zip((self.builder.messages(r, mode)[-1] for r in self._demo_items), y)]
        self._demo_vecs = None
        if strategy == "knn" and len(items):
            self._demo_vecs = self._embedder().embed(self._embed_texts(items))
        self._round_demos = (balanced_draw(y, int(self.demonstrations["k"]), rng, len(self.labels))
                             if strategy == "balanced" else np.zeros(0, dtype=np.int64))
        self.bias_, self.temperature_ = None, 1.0
        if self.calibration != "none" and len(np.unique(cal_y)) >= 2:
            n = min(len(cal_y), int(self.calibration_max_items))
            idx = np.sort(rng.choice(len(cal_y), size=n, replace=False))
            proba = self._score(cal_items.iloc[idx].reset_index(drop=True), record=False)
            if (~np.isnan(proba).any(axis=1)).sum() >= 2 * len(self.labels):
                self.bias_, self.temperature_ = fit_calibration(
                    proba, cal_y[idx], cal_w[idx],
                    bias=self.calibration in ("bias", "both"), temperature=self.calibration in ("temperature", "both"))
                log.info("view %s: calibration fitted on %d items (bias %s, T %.2f)", self.name, n,
                         np.round(self.bias_, 2).tolist(), self.temperature_)

    def _embed_texts(self, items: pd.DataFrame) -> list[str]:
        col = self.demonstrations["text"] or self.fields[0]
        return items[col].fillna("").astype(str).tolist()

    def predict_proba(self, items: pd.DataFrame) -> np.ndarray:
        return self._score(items, record=True)

    # ------------------------------------------------------------------ scoring
    def _demos_for(self, items: pd.DataFrame, ids: list[str]) -> list[list[int]]:
        """Each item's demonstrations (indices into the demonstration pool), in prompt order."""
        n = len(ids)
        strategy = self.demonstrations["strategy"]
        k, budget = int(self.demonstrations["k"]), int(self.demonstrations["max_tokens"])
        if strategy == "none" or not self._demo_ids:
            return [[] for _ in range(n)]
        pos = {d: i for i, d in enumerate(self._demo_ids)}
        if strategy == "balanced":
            base = [int(d) for d in self._round_demos]
            return [within_budget([d for d in base if self._demo_ids[d] != ids[i]], self._demo_cost, budget)
                    for i in range(n)]
        assert self._demo_vecs is not None
        vecs = self._embedder().embed(self._embed_texts(items))
        exclude = np.asarray([pos.get(i, -1) for i in ids], dtype=np.int64)
        near = nearest(vecs, self._demo_vecs, k, exclude)
        # most similar last: closest to the question in the prompt
        return [within_budget(list(row), self._demo_cost, budget)[::-1] for row in near]

    def _requests(self, messages: list[dict[str, str]], mode: str) -> list[dict[str, Any]]:
        if mode == "logprobs":
            return [{"messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True,
                     "top_logprobs": int(self.top_logprobs)}]
        n = max(1, int(self.samples))
        temp = float(self.temperature) if n > 1 else 0.0
        return [{"messages": messages, "max_tokens": int(self.max_answer_tokens), "temperature": temp, "seed": s}
                for s in range(n)]

    def _decide_mode(self, messages: list[dict[str, str]]) -> None:
        """``scoring: auto``: one probe request; logprobs if the endpoint returns them."""
        comp = self.client().complete(self._requests(messages, "logprobs"))[0]
        if not comp.ok:
            return  # undecided: this batch uses logprobs, the next one probes again
        self.mode_ = "logprobs" if comp.top_logprobs else "sample"
        log.info("view %s: scoring by %s", self.name,
                 "label-word log-probabilities" if self.mode_ == "logprobs" else
                 f"{self.samples} sampled answers (the endpoint returns no logprobs)")

    def _score(self, items: pd.DataFrame, record: bool) -> np.ndarray:
        n, k = len(items), len(self.labels)
        out = np.full((n, k), np.nan)
        if n == 0:
            return out
        records, ids = self._records(items), self._ids(items)
        demos = self._demos_for(items, ids)
        msgs = [self.builder.messages(records[i], self.mode_ or "logprobs",
                                      [(self._demo_items[d], int(self._demo_y[d])) for d in demos[i]])
                for i in range(n)]
        if self.mode_ is None:
            self._decide_mode(msgs[0])
            if self.mode_ == "sample":
                msgs = [self.builder.messages(records[i], "sample",
                                              [(self._demo_items[d], int(self._demo_y[d])) for d in demos[i]])
                        for i in range(n)]
        mode = self.mode_ or "logprobs"
        per_item = [self._requests(m, mode) for m in msgs]
        flat = [r for reqs in per_item for r in reqs]
        comps = self.client().complete(flat)
        bounds = np.cumsum([0] + [len(reqs) for reqs in per_item])
        grouped = [comps[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        check_batch(self.name, grouped, mode, self.scoring == "logprobs", (*RETRYABLE, *OVERLOAD))
        answered = [c for c in comps if c.ok]
        if self.mode_ is None and answered and not any(c.top_logprobs for c in answered):  # auto, its probe failed:
            self.mode_ = "sample"  # these answers carry no logprobs, so the endpoint gives none; ask again by sampling
            return self._score(items, record)
        out, unread, example = read_answers(grouped, mode, self.builder.verbalisers, k)
        self.abstentions_ += int(np.isnan(out).any(axis=1).sum())
        if not self._unread_warned and unread >= max(5, n // 2):  # once a run: the tables showed only a view
            self._unread_warned = True                             # with no accuracy
            log.warning("view %s: %d of %d answers named none of the task's labels (e.g. %r); those items "
                        "abstain. Check the prompt, the labels' verbalizers and the model", self.name, unread, n,
                        example)
        if record and self.demonstrations["strategy"] != "none":
            ledger = getattr(self.context, "ledger", None)
            if ledger is not None:
                ledger.record_demonstrations(self.name, ids, [[self._demo_ids[d] for d in ds] for ds in demos])
        return apply_calibration(out, self.bias_, self.temperature_)

    # ------------------------------------------------------------------ planning
    def plan(self, items: pd.DataFrame) -> dict[str, Any]:
        """Requests and prompt tokens to label ``items`` once (a dry run: no call is made).

        Demonstrations are costed at the strategy's ``k`` examples of these items' own mean
        length; tokens are counted with litellm's tokenizer for the model (offline)."""
        records = self._records(items)
        # ``auto`` samples when the endpoint returns no logprobs: its upper bound is sampling's
        mode = self.mode_ or ("logprobs" if self.scoring == "logprobs" else "sample")
        k_demo = 0 if self.demonstrations["strategy"] == "none" else int(self.demonstrations["k"])
        sample = records[: min(len(records), 50)]
        counts = [count_tokens(self.model, self.builder.messages(
            r, mode, [(sample[(j + 1) % len(sample)], 0) for j in range(k_demo)])) for r in sample]
        per_call = float(np.mean(counts)) if counts else 0.0
        calls_per_item = 1 if mode == "logprobs" else max(1, int(self.samples))
        out_tokens = 1 if mode == "logprobs" else int(self.max_answer_tokens)
        shown = "auto (bounded as sample)" if self.mode_ is None and self.scoring == "auto" else mode
        return {"view": self.name, "model": self.model, "mode": shown, "calls_per_item": calls_per_item,
                "prompt_tokens_per_call": per_call, "completion_tokens_per_call": out_tokens,
                "demonstrations": self.demonstrations["strategy"]}

    def price_per_call(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        """Dollars for one call of that size (None when the price is unknown)."""
        return estimate_cost(self.model, Price(**self.price) if self.price else None, prompt_tokens, completion_tokens)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))
