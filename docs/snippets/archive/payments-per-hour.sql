-- payments per hour
SELECT event_date, event_hour, count(*) AS payments, sum(amount) AS amount
FROM read_parquet('.cache/archive/payments/**/*.parquet', hive_partitioning = true)
GROUP BY ALL ORDER BY ALL;
