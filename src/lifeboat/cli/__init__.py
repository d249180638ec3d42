"""Command line: one small module per verb. The only place that prints or exits."""
