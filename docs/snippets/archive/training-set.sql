-- a labelled training set: every payment with what people and chargebacks said of it
-- (fraud, not_fraud, inconclusive; NULL: nobody said), not which rules fired on it
WITH latest AS (  -- the latest label of each subject (the topic is compacted by it)
  SELECT * FROM read_parquet('.cache/archive/labels/**/*.parquet', hive_partitioning = true)
  QUALIFY row_number() OVER (PARTITION BY key ORDER BY kafka_offset DESC) = 1
),
said AS (  -- a case labels each of its payments, a chargeback its one
  SELECT unnest(coalesce(txn_ids, []) || coalesce([txn_id], [])) AS txn_id, label
  FROM latest WHERE label IS NOT NULL
),
verdict AS (  -- fraud wins over not_fraud, which wins over inconclusive
  SELECT txn_id,
         arg_max(label, CASE label WHEN 'fraud' THEN 3 WHEN 'not_fraud' THEN 2 ELSE 1 END) AS label
  FROM said WHERE txn_id IS NOT NULL GROUP BY txn_id
)
SELECT p.*, v.label
FROM read_parquet('.cache/archive/payments/**/*.parquet', hive_partitioning = true) AS p
LEFT JOIN verdict AS v USING (txn_id)
ORDER BY p.ts;
