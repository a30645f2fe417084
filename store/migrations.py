"""Named schema migrations, in the order ``store.migrate`` applies them.

As in sqlite-utils: each migration has a stable name; a store remembers which ran (in
``_migrations``), so opening an older store upgrades it and opening a current one does
nothing. Never edit a migration that has shipped: append a new one.
"""
from __future__ import annotations

import json
from collections.abc import Callable

import duckdb

from store.early_migrations import m001_core, m002_llm, m003_debates, m004_item_problems, m005_reviews
from store.errors import StoreError

Migration = tuple[str, Callable[[duckdb.DuckDBPyConnection], None]]


def _m006_reviewed_labels(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        -- each reviewed item's latest review: the label every reader treats as gold
        CREATE VIEW reviewed_labels AS
        SELECT run_id, item_id, max(review_id) AS review_id, arg_max(label, review_id) AS label,
               arg_max(reviewer, review_id) AS reviewer
        FROM reviews GROUP BY run_id, item_id;
        """
    )


def _m007_run_columns_and_current_labels(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        -- what readers need from a run's config, as typed columns written when the run is made
        -- (the store never reads config JSON by key); older runs are filled from their snapshot
        ALTER TABLE runs ADD COLUMN label_column VARCHAR;
        ALTER TABLE runs ADD COLUMN policy VARCHAR;
        ALTER TABLE runs ADD COLUMN feeding VARCHAR;
        ALTER TABLE runs ADD COLUMN max_rounds INTEGER;
        ALTER TABLE runs ADD COLUMN input_files VARCHAR[];     -- data files the run read
        ALTER TABLE runs ADD COLUMN text_fields VARCHAR[];     -- text fields a reviewer should see
        ALTER TABLE runs ADD COLUMN image_fields VARCHAR[];    -- image fields a reviewer should see
        UPDATE runs SET
            label_column = json_extract_string(config, '$.data.label_column'),
            policy = json_extract_string(config, '$.cotrain.policy'),
            feeding = json_extract_string(config, '$.cotrain.feeding'),
            max_rounds = CAST(json_extract(config, '$.cotrain.max_rounds') AS INTEGER),
            input_files = list_filter([json_extract_string(config, '$.data.train'),
                                       json_extract_string(config, '$.data.test')], lambda x: x IS NOT NULL);
        -- the one definition of an item's current label: a reviewer's, else the file's gold,
        -- else its accepted pseudo-label; with where it came from
        CREATE VIEW current_labels AS
        SELECT i.run_id, i.item_id, i.row_idx, i.split,
               coalesce(rv.label, i.gold_label, p.label) AS label,
               CASE WHEN rv.label IS NOT NULL THEN 'review' WHEN i.gold_label IS NOT NULL THEN 'gold'
                    WHEN p.label IS NOT NULL THEN p.source END AS source,
               CASE WHEN rv.label IS NULL AND i.gold_label IS NULL THEN p.source_views END AS source_views,
               CASE WHEN rv.label IS NULL AND i.gold_label IS NULL THEN p.round END AS round,
               CASE WHEN rv.label IS NOT NULL OR i.gold_label IS NOT NULL THEN CAST(1.0 AS FLOAT)
                    ELSE p.confidence END AS confidence,
               rv.label IS NOT NULL AS reviewed
        FROM items i
        LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = i.item_id
        LEFT JOIN pseudo_labels p ON p.run_id = i.run_id AND p.item_id = i.item_id AND p.status = 'accepted';
        """
    )
    # older runs: the fields their views and debate read, by the rule cotrain 0.1 used then
    for run_id, config in con.execute("SELECT run_id, config FROM runs").fetchall():
        text, images = _fields_of_old_config(json.loads(config))
        con.execute("UPDATE runs SET text_fields = ?, image_fields = ? WHERE run_id = ?", [text, images, run_id])


def _fields_of_old_config(config: dict) -> tuple[list[str], list[str]]:
    """(text fields, image fields) of a config snapshot written before migration 007."""
    text: list[str] = []
    images: list[str] = []
    for v in config.get("views", []):
        if v.get("kind") == "vision" and v.get("image"):
            images.append(v["image"])
        elif v.get("kind") == "llm":
            text += list(v.get("fields") or [])
        elif v.get("kind") in ("embedding", "sklearn") and v.get("text"):
            text.append(v["text"])
    text += list((config.get("debate") or {}).get("fields") or [])
    return [c for c in dict.fromkeys(text) if c not in images], list(dict.fromkeys(images))


def _m008_label_estimates(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        -- p_correct: estimated probability that an accepted pseudo-label is right (combined
        -- posterior calibrated on gold by cross-validation); NULL before 008 and for debate verdicts
        ALTER TABLE pseudo_labels ADD COLUMN p_correct FLOAT;
        CREATE TABLE round_estimates (            -- per round: how evidence was combined, what selection estimated
            run_id INTEGER NOT NULL, round INTEGER NOT NULL,
            combination VARCHAR NOT NULL,         -- single | product | label_model | mean
            n_calibration INTEGER NOT NULL,       -- gold items with out-of-fold predictions
            calibration_accuracy DOUBLE,          -- out-of-fold accuracy of the combination on gold
            n_candidates INTEGER NOT NULL, n_selected INTEGER NOT NULL,
            est_precision DOUBLE,                 -- mean p_correct of the round's accepted labels
            est_precision_all DOUBLE,             -- mean p_correct of every accepted label so far
            coverage DOUBLE,                      -- share of the training pool pseudo-labelled after the round
            class_bars DOUBLE[], class_quota INTEGER[], class_selected INTEGER[],  -- per class, label order
            stopped VARCHAR,                      -- why selection stopped (min_precision), else NULL
            PRIMARY KEY (run_id, round));
        CREATE TABLE view_estimates (             -- per round and view: estimated accuracy and weight
            run_id INTEGER NOT NULL, round INTEGER NOT NULL, view VARCHAR NOT NULL,
            cv_accuracy DOUBLE, label_model_accuracy DOUBLE, weight DOUBLE,
            PRIMARY KEY (run_id, round, view));
        CREATE OR REPLACE VIEW current_labels AS
        SELECT i.run_id, i.item_id, i.row_idx, i.split,
               coalesce(rv.label, i.gold_label, p.label) AS label,
               CASE WHEN rv.label IS NOT NULL THEN 'review' WHEN i.gold_label IS NOT NULL THEN 'gold'
                    WHEN p.label IS NOT NULL THEN p.source END AS source,
               CASE WHEN rv.label IS NULL AND i.gold_label IS NULL THEN p.source_views END AS source_views,
               CASE WHEN rv.label IS NULL AND i.gold_label IS NULL THEN p.round END AS round,
               CASE WHEN rv.label IS NOT NULL OR i.gold_label IS NOT NULL THEN CAST(1.0 AS FLOAT)
                    ELSE p.confidence END AS confidence,
               rv.label IS NOT NULL AS reviewed,
               CASE WHEN rv.label IS NOT NULL OR i.gold_label IS NOT NULL THEN CAST(1.0 AS FLOAT)
                    ELSE p.p_correct END AS p_correct
        FROM items i
        LEFT JOIN reviewed_labels rv ON rv.run_id = i.run_id AND rv.item_id = i.item_id
        LEFT JOIN pseudo_labels p ON p.run_id = i.run_id AND p.item_id = i.item_id AND p.status = 'accepted';
        """
    )


def _m009_shadow_labels(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE shadow_labels (   -- per round: the picks of each gold fold's shadow run (orchestrator/shadows.py)
            run_id INTEGER NOT NULL, round INTEGER NOT NULL,
            fold SMALLINT NOT NULL,    -- the gold fold the shadow run never saw
            row_idx BIGINT NOT NULL,   -- the item's position in the data snapshot
            label SMALLINT NOT NULL,   -- index into runs.labels
            confidence FLOAT NOT NULL);
        """
    )


def _m010_items_without_key(con: duckdb.DuckDBPyConnection) -> None:
    """``items`` loses its primary key: the loader already refuses duplicate ids with a line
    naming the row, and the key's index tripled the load (1M items: 0.8 s insert and 0.5 s
    commit with it, 0.3 s and 0.0 without) and the file (47 MB against 5 MB)."""
    con.execute(
        """
        CREATE TABLE items_010 (run_id INTEGER NOT NULL, item_id VARCHAR NOT NULL, row_idx BIGINT NOT NULL,
                                split VARCHAR NOT NULL, gold_label VARCHAR);
        INSERT INTO items_010 SELECT run_id, item_id, row_idx, split, gold_label FROM items;
        DROP TABLE items;
        ALTER TABLE items_010 RENAME TO items;
        """
    )


def _m011_prediction_rows(con: duckdb.DuckDBPyConnection) -> None:
    """Predictions are stored by the item's ``row_idx`` (``prediction_rows``), and
    ``predictions`` becomes a view that joins ``items`` for the ``item_id``, so every query of
    it reads as before. Why: a run writes one row per view and pool item each round, and the
    item ids were the costliest column to insert (3M rows: 0.76 s with string ids, 0.47 s
    with integers), which kept a 3M-item run with stored predictions 1.6 times as slow as the
    scikit-learn anchor. Every stored prediction is carried over. The join to ``items`` would
    drop a prediction of an item the run's ``items`` do not hold, and double one whose item is
    listed twice (``items`` has no key since 010; the loader refuses duplicate ids): either
    way the migration refuses, naming an example, and nothing of it is applied."""
    missing = con.execute(
        "SELECT count(*), any_value(run_id), any_value(item_id) FROM predictions p WHERE NOT EXISTS "
        "(SELECT 1 FROM items i WHERE i.run_id = p.run_id AND i.item_id = p.item_id)").fetchall()[0]
    if missing[0]:
        raise StoreError(f"migration 011: {missing[0]} stored prediction(s) name an item their run does not hold "
                         f"(e.g. item {missing[2]!r} of run {missing[1]}); delete those rows of its predictions table "
                         "(the duckdb CLI), then open the store again")
    twice = con.execute("SELECT count(*), any_value(run_id), any_value(item_id) FROM "
                        "(SELECT run_id, item_id FROM items GROUP BY ALL HAVING count(*) > 1)").fetchall()[0]
    if twice[0]:
        raise StoreError(f"migration 011: {twice[0]} item id(s) are listed twice in items (e.g. item {twice[2]!r} "
                         f"of run {twice[1]}), so their predictions cannot be told apart by position")
    con.execute(
        """
        CREATE TABLE prediction_rows (
            run_id      INTEGER NOT NULL,
            round       INTEGER NOT NULL,
            view        VARCHAR NOT NULL,
            row_idx     BIGINT NOT NULL,             -- the item's items.row_idx
            label       VARCHAR,                     -- NULL: the view abstained
            confidence  FLOAT,
            probs       FLOAT[]                      -- in runs.labels order
        );
        INSERT INTO prediction_rows
            SELECT p.run_id, p.round, p.view, i.row_idx, p.label, p.confidence, p.probs
            FROM predictions p JOIN items i ON i.run_id = p.run_id AND i.item_id = p.item_id
            ORDER BY p.run_id, p.round, p.view, i.row_idx;
        DROP TABLE predictions;
        CREATE VIEW predictions AS
            SELECT p.run_id, p.round, p.view, i.item_id, p.label, p.confidence, p.probs
            FROM prediction_rows p JOIN items i ON i.run_id = p.run_id AND i.row_idx = p.row_idx;
        """
    )


def _m012_debate_turn_answers(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        -- what the model said, verbatim (its first 2,000 characters), and why a call failed (the
        -- LLM seam's redacted message): an abstained turn showed only 'unreadable' or 'error'
        ALTER TABLE debate_turns ADD COLUMN answer VARCHAR;
        ALTER TABLE debate_turns ADD COLUMN error VARCHAR;
        """
    )


MIGRATIONS: list[Migration] = [
    ("001_core_schema", m001_core),
    ("002_llm_calls", m002_llm),
    ("003_debates", m003_debates),
    ("004_item_problems", m004_item_problems),
    ("005_reviews", m005_reviews),
    ("006_reviewed_labels", _m006_reviewed_labels),
    ("007_run_columns_and_current_labels", _m007_run_columns_and_current_labels),
    ("008_label_estimates", _m008_label_estimates),
    ("009_shadow_labels", _m009_shadow_labels),
    ("010_items_without_key", _m010_items_without_key),
    ("011_prediction_rows", _m011_prediction_rows),
    ("012_debate_turn_answers", _m012_debate_turn_answers),
]
