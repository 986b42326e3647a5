-- The id Kafka gave the source topic when it was created (streams.topics.TopicEpochs): a
-- topic deleted and created again restarts its offsets at 0 under a new id, so the replay
-- rule must not take its offsets for the old topic's. '' for rows written before.
ALTER TABLE flush_log ADD COLUMN IF NOT EXISTS topic_id String DEFAULT '';
