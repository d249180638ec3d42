"""The services layer: one function per operation (backup, restore, retention, check,
keys, escrow, drills) that opens the repository once, does the work through the asset
plug-ins and the repository, writes the audit entry, closes what it opened and returns a
typed result. The CLI, the daemon, drills and the demo call these; none of them opens a
repository or writes an audit entry by itself.
"""
