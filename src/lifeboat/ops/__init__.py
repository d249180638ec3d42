"""Operations around the repository: audit log, scheduler, alerts, metrics, reports."""
