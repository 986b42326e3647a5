-- Why each golden case failed: {check name: detail}, plus "generation" when the model call
-- failed. failed_checks keeps the bare names for grouping; this keeps the evidence.
ALTER TABLE golden_results ADD COLUMN IF NOT EXISTS details String DEFAULT '{}';
