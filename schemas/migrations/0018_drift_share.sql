-- Issue 18: drift statistics carry the Holm-adjusted p-value of the evaluation and, for the
-- novelty feature, the estimated share of traffic unlike the training data with its interval.
-- Numbered after the issue so that parallel branches' migrations do not collide.
ALTER TABLE drift_stats ADD COLUMN IF NOT EXISTS p_adjusted Nullable(Float64);
ALTER TABLE drift_stats ADD COLUMN IF NOT EXISTS share Nullable(Float64);
ALTER TABLE drift_stats ADD COLUMN IF NOT EXISTS share_low Nullable(Float64);
ALTER TABLE drift_stats ADD COLUMN IF NOT EXISTS share_high Nullable(Float64);
