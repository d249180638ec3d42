"""The daemon: an entry point like `cli/` that runs the services on their schedules
(backups in a spawned child stopped at their deadline, retention, checks, drills, WAL
jobs of the kinds that have them), serves metrics and fires alerts."""
