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
