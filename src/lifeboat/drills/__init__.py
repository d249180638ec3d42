"""Restore drills: scenarios run into isolated staging, measured RPO/RTO, cross-asset
checks, signed evidence bundles and the corrective-actions ledger."""
