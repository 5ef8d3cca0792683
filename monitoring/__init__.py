"""Monitoring: everything that watches the buildings and the model once a model is deployed.

* the monitoring pass (`monitor`), one check on frames (`check`), the retrain policy (`retrain_policy`),
  Evidently drift (`drift`);
* consumption anomalies (`anomalies`, their table `anomaly_store`) and what they cost (`savings_advice`);
* savings verification, IPMVP Option C (`verification`, `towt`, `savings_baselines`, `savings_verify`);
* the CLI: `wattflow monitor`, `wattflow anomalies` (`commands`) and `wattflow savings` (`savings_commands`);
* `synthetic`: portfolios with a known truth for tests and benchmarks.

Validation of incoming data (Great Expectations, checks, quarantine) stays in `data_quality`.
"""
