-- Issue 18: drift statistics carry the Holm-adjusted p-value of the evaluation and, for the
-- novelty feature, the estimated share of traffic unlike the training data with its interval.
-- Numbered after the issue so that parallel branches' migrations do not collide.
ALTER TABLE drift_stats ADD COLUMN IF NOT EXISTS p_adjusted Nullable(Float64);
ALTER TABLE drift_stats ADD COLUMN IF NOT EXISTS share Nullable(Float64);
ALTER TABLE drift_stats ADD COLUMN IF NOT EXISTS share_low Nullable(Float64);
ALTER TABLE drift_stats ADD COLUMN IF NOT EXISTS share_high Nullable(Float64);
-- The novelty bin of each stored prompt, so that an explanation can sample the novel ones
-- (bottom-k by hash of request_id, workers/explain.py); -1: not embedded.
ALTER TABLE inference_logs ADD COLUMN IF NOT EXISTS novelty_bin Int32 DEFAULT -1;
-- What changed, as JSON (workers.explain.Explanation): grown / shrunk bins with names, the
-- off-distribution share, keywords and example prompts of the new traffic.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS details String DEFAULT '{}';
-- One alert per incident (workers/incidents.py): notifications name their incident, and
-- the incidents table keeps each open incident's state (a row per change; FINAL: newest).
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS incident_id String DEFAULT '';
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS incident_state LowCardinality(String) DEFAULT '';
CREATE TABLE IF NOT EXISTS incidents
(
    incident_id     String,
    base_model      LowCardinality(String),
    adapter_version LowCardinality(String),
    kind            LowCardinality(String),
    feature         LowCardinality(String),
    state           LowCardinality(String),
    severity        LowCardinality(String),
    opened_at       DateTime64(3, 'UTC'),
    updated_at      DateTime64(3, 'UTC'),
    notified_at     DateTime64(3, 'UTC'),
    healthy         UInt32,
    message         String
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (base_model, adapter_version, kind, feature, incident_id)
TTL toDateTime(updated_at) + INTERVAL 365 DAY;
