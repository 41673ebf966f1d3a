"""History: every payment, alert and dead letter archived as Parquet, and rules backtested
on the archive with the engine the workers run."""
