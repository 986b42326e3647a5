-- SentryML schema v1. Runs unchanged on chDB and on a ClickHouse server.
-- Every statement is idempotent. For a cluster, see docs/operations.md (ON CLUSTER and
-- Replicated* engines: the same columns and ORDER BY keys).

-- Redacted raw requests. ReplacingMergeTree collapses a replayed request_id.
CREATE TABLE IF NOT EXISTS inference_logs
(
    request_id        String,
    ts                DateTime64(3, 'UTC'),
    base_model        LowCardinality(String),
    adapter_version   LowCardinality(String),
    app               LowCardinality(String),
    tenant            LowCardinality(String),
    prompt            String,
    completion        String,
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    latency_ms        Float64,
    metadata          String,
    embed_bin         Int32,
    refusal           UInt8,
    ingested_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (base_model, adapter_version, request_id)
TTL toDateTime(ts) + INTERVAL 30 DAY
SETTINGS non_replicated_deduplication_window = 1000;

-- Partial per-minute bin counts from every worker; ClickHouse sums the partials.
CREATE TABLE IF NOT EXISTS window_counts
(
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    baseline_id     LowCardinality(String),
    feature         LowCardinality(String),
    bucket          DateTime('UTC'),
    bin             UInt16,
    count           UInt64
)
ENGINE = SummingMergeTree(count)
PARTITION BY toYYYYMM(bucket)
ORDER BY (base_model, adapter_version, baseline_id, feature, bucket, bin)
TTL bucket + INTERVAL 90 DAY
SETTINGS non_replicated_deduplication_window = 10000;

-- One row per worker flush and source partition: the offsets it covered, with its counts.
-- Inserting here feeds window_counts through the view below in the same insert, so the
-- counts and the record of which offsets they cover land (or are deduplicated) together.
CREATE TABLE IF NOT EXISTS flush_log
(
    consumer_group  LowCardinality(String),
    topic           LowCardinality(String),
    partition       UInt32,
    first_offset    UInt64,
    last_offset     UInt64,
    worker_id       String,
    flushed_at      DateTime64(3, 'UTC') DEFAULT now64(3),
    events          UInt64,
    `counts.base_model`      Array(String),
    `counts.adapter_version` Array(String),
    `counts.baseline_id`     Array(String),
    `counts.feature`         Array(String),
    `counts.bucket`          Array(DateTime('UTC')),
    `counts.bin`             Array(UInt16),
    `counts.count`           Array(UInt64)
)
ENGINE = MergeTree
ORDER BY (consumer_group, topic, partition, last_offset)
TTL toDateTime(flushed_at) + INTERVAL 14 DAY
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS flush_log_to_window_counts TO window_counts AS
SELECT
    c.1 AS base_model, c.2 AS adapter_version, c.3 AS baseline_id, c.4 AS feature,
    c.5 AS bucket, c.6 AS bin, c.7 AS count
FROM flush_log
ARRAY JOIN arrayZip(`counts.base_model`, `counts.adapter_version`, `counts.baseline_id`,
                    `counts.feature`, `counts.bucket`, `counts.bin`, `counts.count`) AS c;

CREATE TABLE IF NOT EXISTS baselines
(
    baseline_id     String,
    created_at      DateTime64(3, 'UTC'),
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    embedder        String,
    k               UInt16,
    n_fit           UInt32,
    n_reference     UInt32,
    source          String,
    payload         String
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY (base_model, adapter_version, baseline_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS drift_stats
(
    ts              DateTime64(3, 'UTC'),
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    baseline_id     LowCardinality(String),
    feature         LowCardinality(String),
    window          LowCardinality(String),
    psi             Float64,
    jsd             Float64,
    chi2            Float64,
    p_value         Float64,
    sample_size     UInt64,
    baseline_size   UInt64,
    psi_warn        Float64,
    psi_alert       Float64,
    status          LowCardinality(String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (base_model, adapter_version, feature, window, ts)
TTL toDateTime(ts) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS judge_scores
(
    ts                DateTime64(3, 'UTC'),
    request_id        String,
    base_model        LowCardinality(String),
    adapter_version   LowCardinality(String),
    judge_model       LowCardinality(String),
    dimension         LowCardinality(String),
    score             Nullable(UInt8),
    ok                UInt8,
    rationale         String,
    schema_valid      Nullable(UInt8),
    injection_flag    UInt8,
    latency_ms        Float64,
    prompt_tokens     UInt32,
    completion_tokens UInt32,
    cost_usd          Float64,
    error             Nullable(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (base_model, adapter_version, dimension, request_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS alerts
(
    ts              DateTime64(3, 'UTC'),
    alert_id        String,
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    kind            LowCardinality(String),
    feature         LowCardinality(String),
    window          LowCardinality(String),
    severity        LowCardinality(String),
    value           Float64,
    threshold       Float64,
    p_value         Nullable(Float64),
    sample_size     UInt64,
    message         String
)
ENGINE = ReplacingMergeTree
ORDER BY (base_model, kind, ts, alert_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS golden_runs
(
    ts              DateTime64(3, 'UTC'),
    run_id          String,
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    golden_set      String,
    trigger         LowCardinality(String),
    total           UInt32,
    passed          UInt32,
    pass_rate       Float64,
    threshold       Float64,
    tag_pass_rates  String,
    failed_case_ids String
)
ENGINE = ReplacingMergeTree
ORDER BY (base_model, adapter_version, ts, run_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS golden_results
(
    ts              DateTime64(3, 'UTC'),
    run_id          String,
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    case_id         String,
    tags            Array(String),
    passed          UInt8,
    failed_checks   Array(String),
    expected        String,
    output          String,
    latency_ms      Float64
)
ENGINE = ReplacingMergeTree
ORDER BY (base_model, adapter_version, run_id, case_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS retrain_jobs
(
    ts              DateTime64(3, 'UTC'),
    job_id          String,
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    decision        LowCardinality(String),
    reason          String,
    details         String
)
ENGINE = MergeTree
ORDER BY (base_model, ts, job_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS adapters
(
    updated_at      DateTime64(3, 'UTC'),
    version         String,
    base_model      LowCardinality(String),
    parent_version  String,
    method          LowCardinality(String),
    dataset_hash    String,
    metrics         String,
    sha256          String,
    path            String,
    status          LowCardinality(String),
    job_id          String
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (base_model, version)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS feedback
(
    ts              DateTime64(3, 'UTC'),
    request_id      String,
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    label           Nullable(String),
    correction      Nullable(String),
    chosen          Nullable(String),
    rejected        Nullable(String),
    prompt          Nullable(String),
    reviewer        Nullable(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (base_model, request_id, ts)
SETTINGS non_replicated_deduplication_window = 1000;

-- Views for the common questions.
CREATE OR REPLACE VIEW v_drift_over_time AS
SELECT toStartOfHour(ts) AS hour, base_model, adapter_version, feature, window,
       max(psi) AS psi, max(jsd) AS jsd, min(p_value) AS p_value,
       max(sample_size) AS sample_size, argMax(status, ts) AS status
FROM drift_stats
GROUP BY hour, base_model, adapter_version, feature, window;

CREATE OR REPLACE VIEW v_judge_trend AS
SELECT toDate(ts) AS day, base_model, adapter_version, dimension,
       avgIf(score, ok = 1) AS mean_score, countIf(ok = 1) AS scored,
       countIf(ok = 0) AS failures, sum(injection_flag) AS injection_flags
FROM judge_scores FINAL
GROUP BY day, base_model, adapter_version, dimension;

CREATE OR REPLACE VIEW v_golden_pass_rate AS
SELECT base_model, adapter_version, count() AS runs,
       argMax(pass_rate, ts) AS last_pass_rate, avg(pass_rate) AS mean_pass_rate,
       max(ts) AS last_run
FROM golden_runs FINAL
GROUP BY base_model, adapter_version;

CREATE OR REPLACE VIEW v_hourly_traffic AS
SELECT toStartOfHour(ts) AS hour, base_model, adapter_version, count() AS requests,
       avg(completion_tokens) AS mean_completion_tokens, avg(refusal) AS refusal_rate,
       quantile(0.5)(latency_ms) AS p50_latency_ms
FROM inference_logs
GROUP BY hour, base_model, adapter_version;
