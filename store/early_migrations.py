"""Migrations 001-005: the schema of cotrain's first releases (runs, rounds, items,
predictions, pseudo-labels, metrics; the LLM cache and ledger; debates; item problems;
reviews). ``store.migrations`` lists them with the later ones, in order. Never edit one: a
store remembers which ran; append a new migration instead."""
from __future__ import annotations

import duckdb


def m001_core(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE runs (
            run_id        INTEGER PRIMARY KEY,
            created_at    TIMESTAMP NOT NULL,
            finished_at   TIMESTAMP,
            status        VARCHAR NOT NULL,          -- running | finished
            termination   VARCHAR,                   -- max_rounds | pool_exhausted | no_change
            config        JSON NOT NULL,             -- validated config snapshot
            config_hash   VARCHAR NOT NULL,
            seed          BIGINT NOT NULL,
            code_version  VARCHAR NOT NULL,
            labels        VARCHAR[] NOT NULL,        -- the task's labels, in probability order
            views         VARCHAR[] NOT NULL,
            data_table    VARCHAR NOT NULL           -- snapshot of the input rows for this run
        );
        CREATE TABLE items (
            run_id      INTEGER NOT NULL,
            item_id     VARCHAR NOT NULL,
            row_idx     BIGINT NOT NULL,             -- position in the data snapshot
            split       VARCHAR NOT NULL,            -- train | test
            gold_label  VARCHAR,                     -- NULL: unlabelled
            PRIMARY KEY (run_id, item_id)
        );
        CREATE TABLE rounds (
            run_id        INTEGER NOT NULL,
            round         INTEGER NOT NULL,
            started_at    TIMESTAMP NOT NULL,
            finished_at   TIMESTAMP NOT NULL,
            n_gold        BIGINT NOT NULL,
            n_pseudo      BIGINT NOT NULL,           -- accepted pseudo-labels before this round
            pool_size     BIGINT NOT NULL,           -- unlabelled items left at the start of the round
            labels_added  BIGINT NOT NULL,
            n_disputed    BIGINT NOT NULL,
            termination   VARCHAR,                   -- set on the run's last round
            rng_state     JSON NOT NULL,             -- generator state after the round: resume point
            seconds_fit   DOUBLE,
            seconds_predict DOUBLE,
            seconds_total DOUBLE,
            PRIMARY KEY (run_id, round)
        );
        CREATE TABLE predictions (
            run_id      INTEGER NOT NULL,
            round       INTEGER NOT NULL,
            view        VARCHAR NOT NULL,
            item_id     VARCHAR NOT NULL,
            label       VARCHAR,                     -- NULL: the view abstained
            confidence  FLOAT,
            probs       FLOAT[]                      -- in runs.labels order
        );
        CREATE TABLE pseudo_labels (
            run_id        INTEGER NOT NULL,
            item_id       VARCHAR NOT NULL,
            label         VARCHAR NOT NULL,
            confidence    FLOAT NOT NULL,
            source        VARCHAR NOT NULL,          -- policy that accepted it (threshold, k_best, agreement, self)
            source_views  VARCHAR[] NOT NULL,        -- views whose picks made it
            round         INTEGER NOT NULL,
            status        VARCHAR NOT NULL,          -- accepted | confirmed | revoked (by a review)
            created_at    TIMESTAMP NOT NULL
        );
        CREATE TABLE disputes (
            run_id      INTEGER NOT NULL,
            round       INTEGER NOT NULL,
            item_id     VARCHAR NOT NULL,
            views       VARCHAR[] NOT NULL,          -- confident views
            labels      VARCHAR[] NOT NULL,          -- their labels, aligned with views
            confidences FLOAT[] NOT NULL
        );
        CREATE TABLE metrics (
            run_id        INTEGER NOT NULL,
            round         INTEGER NOT NULL,
            view          VARCHAR NOT NULL,          -- a view name, or 'ensemble'
            n_train       BIGINT,
            labels_added  BIGINT,                    -- picks of this view that were accepted
            test_accuracy DOUBLE,
            test_macro_f1 DOUBLE,
            pool_agreement DOUBLE,                   -- share of pool items where this view agrees with the ensemble
            seconds_fit   DOUBLE,
            seconds_predict DOUBLE
        );
        CREATE TABLE view_agreement (
            run_id  INTEGER NOT NULL,
            round   INTEGER NOT NULL,
            view_a  VARCHAR NOT NULL,
            view_b  VARCHAR NOT NULL,
            n_both  BIGINT NOT NULL,                 -- pool items where neither abstained
            rate    DOUBLE                           -- share of those with the same label
        );
        CREATE TABLE feature_cache (
            namespace  VARCHAR NOT NULL,             -- e.g. the encoder's identity
            key        VARCHAR NOT NULL,             -- content hash of the encoded input
            vector     FLOAT[] NOT NULL,
            PRIMARY KEY (namespace, key)
        );
        """
    )


def m002_llm(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE llm_cache (
            key         VARCHAR PRIMARY KEY,         -- sha256 of the model's identity + the full request
            model       VARCHAR NOT NULL,            -- identity: model string (+ api_base) or local:name
            request     JSON NOT NULL,               -- messages and parameters; never credentials
            response    JSON NOT NULL,               -- content, top logprobs, usage, finish reason
            created_at  TIMESTAMP NOT NULL
        );
        CREATE TABLE llm_calls (
            run_id             INTEGER,
            round              INTEGER,
            view               VARCHAR,
            key                VARCHAR NOT NULL,     -- llm_cache.key of the request
            model              VARCHAR NOT NULL,
            cached             BOOLEAN NOT NULL,     -- answered from llm_cache: no call, no cost
            status             VARCHAR NOT NULL,     -- ok | error | budget | cancelled (later: no new migration, a value)
            error              VARCHAR,
            attempts           INTEGER NOT NULL,     -- HTTP attempts made (retries + 1); 0 when cached
            prompt_tokens      BIGINT,
            completion_tokens  BIGINT,
            cost_usd           DOUBLE,
            latency_s          DOUBLE,
            created_at         TIMESTAMP NOT NULL
        );
        CREATE TABLE llm_demonstrations (
            run_id      INTEGER NOT NULL,
            round       INTEGER NOT NULL,
            view        VARCHAR NOT NULL,
            item_id     VARCHAR NOT NULL,            -- the item predicted
            demo_ids    VARCHAR[] NOT NULL,          -- pseudo-labelled or gold items shown as examples, in order
            PRIMARY KEY (run_id, round, view, item_id)
        );
        """
    )


def m003_debates(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE debates (
            debate_id       BIGINT PRIMARY KEY,
            run_id          INTEGER,                 -- NULL: a standalone debate (cotrain debate --items)
            round           INTEGER,                 -- co-training round; NULL when standalone
            item_id         VARCHAR NOT NULL,
            split           VARCHAR NOT NULL,        -- train (may become a label) | test (evaluation only)
            trigger         VARCHAR NOT NULL,        -- disputed | low_confidence | given
            status          VARCHAR NOT NULL,        -- verdict | no_verdict | budget
            verdict         VARCHAR,
            confidence      DOUBLE,
            accepted        BOOLEAN NOT NULL,        -- became a pseudo-label (source 'debate')
            aggregation     VARCHAR NOT NULL,
            rounds_used     INTEGER NOT NULL,
            early_stopped   BOOLEAN NOT NULL,
            calls           INTEGER NOT NULL,        -- requests made (cache hits excluded)
            tokens          BIGINT NOT NULL,
            cost_usd        DOUBLE NOT NULL,
            seconds         DOUBLE,
            created_at      TIMESTAMP NOT NULL
        );
        CREATE TABLE debate_turns (
            debate_id         BIGINT NOT NULL,
            agent             VARCHAR NOT NULL,      -- an agent's name, or 'judge'
            model             VARCHAR NOT NULL,
            debate_round      INTEGER NOT NULL,
            label             VARCHAR,               -- NULL: abstained (failed call or unreadable answer)
            confidence        DOUBLE,
            rationale         VARCHAR,
            status            VARCHAR NOT NULL,      -- ok | unreadable | error
            prompt_tokens     BIGINT,
            completion_tokens BIGINT,
            latency_s         DOUBLE,
            cached            BOOLEAN NOT NULL
        );
        """
    )


def m004_item_problems(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE item_problems (
            run_id      INTEGER NOT NULL,
            view        VARCHAR NOT NULL,
            item_id     VARCHAR NOT NULL,
            problem     VARCHAR NOT NULL,        -- e.g. 'file not found', 'not an image Pillow can read'
            location    VARCHAR,                 -- the file (or the item's bytes) it is about
            round       INTEGER,                 -- the round it was first seen in
            created_at  TIMESTAMP NOT NULL,
            PRIMARY KEY (run_id, view, item_id)
        );
        """
    )


def m005_reviews(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE reviews (
            review_id     BIGINT PRIMARY KEY,
            run_id        INTEGER NOT NULL,
            item_id       VARCHAR NOT NULL,
            label         VARCHAR NOT NULL,          -- the reviewer's label: gold from now on
            reviewer      VARCHAR,
            reviewed_at   TIMESTAMP,                 -- when the reviewer answered (if the tool says)
            imported_at   TIMESTAMP NOT NULL,
            source_file   VARCHAR NOT NULL,
            file_format   VARCHAR NOT NULL,          -- label_studio | label_studio_min | argilla | csv
            file_row      INTEGER NOT NULL,          -- 1-based record of the file
            prior_label   VARCHAR,                   -- the item's label before this review
            prior_source  VARCHAR,                   -- gold | review | a pseudo-label source | NULL
            prior_views   VARCHAR[],                 -- views whose picks made that pseudo-label
            outcome       VARCHAR NOT NULL           -- confirmed | corrected | new
        );
        CREATE TABLE test_predictions (
            run_id      INTEGER NOT NULL,
            round       INTEGER NOT NULL,
            view        VARCHAR NOT NULL,            -- a view, or 'ensemble'
            item_id     VARCHAR NOT NULL,
            label       VARCHAR,                     -- NULL: abstained
            confidence  FLOAT
        );
        ALTER TABLE pseudo_labels ADD COLUMN reviewed_by BIGINT;        -- review that confirmed/revoked it
        ALTER TABLE pseudo_labels ADD COLUMN status_changed_at TIMESTAMP;
        ALTER TABLE runs ADD COLUMN round_limit INTEGER;   -- last round of a run reopened by a review import
        """
    )


__all__ = ["m001_core", "m002_llm", "m003_debates", "m004_item_problems", "m005_reviews"]
