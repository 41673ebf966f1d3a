-- a labelled training set: every payment, with the active rules whose alerts cite it
WITH flagged AS (
  SELECT txn_id, list(DISTINCT rule_id ORDER BY rule_id) AS rules
  FROM (SELECT unnest(txn_ids) AS txn_id, rule_id
        FROM read_parquet('.cache/archive/alerts/**/*.parquet', hive_partitioning = true)
        WHERE status = 'active')
  GROUP BY txn_id
)
SELECT p.*, f.rules IS NOT NULL AS fraud, coalesce(f.rules, []) AS rules
FROM read_parquet('.cache/archive/payments/**/*.parquet', hive_partitioning = true) AS p
LEFT JOIN flagged AS f USING (txn_id)
ORDER BY p.ts;
