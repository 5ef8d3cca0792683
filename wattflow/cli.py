"""The `wattflow` command. Heavy libraries are imported inside commands so that `--help` stays fast."""

from __future__ import annotations

import importlib

from wattflow.cli_groups import app

# Each module attaches its commands to the groups in wattflow.cli_groups.
COMMAND_MODULES = [
    "lakehouse.commands",
    "data_quality.commands",
    "lakehouse.registry_commands",
    "lakehouse.sources.commands",
    "serving.commands",
    "lakehouse.simulator.commands",
    "ml.commands",
    "monitoring.commands",
    "monitoring.savings_commands",
    "wattflow.dashboard.commands",
    "wattflow.lineage_commands",
    "wattflow.score_commands",
]

for _module in COMMAND_MODULES:
    importlib.import_module(_module)


if __name__ == "__main__":
    app()
