"""The phases of ``bench.model_migration`` (a full model migration under load), one module each:
the load generator, the commands, CPU accounting and the analysis; ``bench/model_migration.py``
runs them in order."""
