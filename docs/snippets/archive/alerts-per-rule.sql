-- alerts per rule
SELECT rule_id, rule_version, status, count(*) AS alerts, count(DISTINCT group_key) AS keys
FROM read_parquet('.cache/archive/alerts/**/*.parquet', hive_partitioning = true)
GROUP BY ALL ORDER BY alerts DESC;
