"""A bare DRF create of a minimal model, mounted only for ``make bench-create`` (benchmarks/create_changes.py): the
yardstick the project's change create is compared with, on the same server, database and authentication."""
