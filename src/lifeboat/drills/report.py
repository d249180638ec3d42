"""Human reports of a drill (Markdown and self-contained HTML) from its drill.json data."""

from __future__ import annotations

from typing import Any


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(drill: dict[str, Any]) -> tuple[str, str]:
    """A drill record as Markdown and HTML reports."""
    from jinja2 import Environment, PackageLoader  # ~20 ms: only a drill that reports loads it

    text_env = Environment(loader=PackageLoader("lifeboat.drills"), autoescape=False)
    html_env = Environment(loader=PackageLoader("lifeboat.drills"), autoescape=True)
    for env in (text_env, html_env):
        env.globals["fmt"] = _fmt
    return (
        text_env.get_template("report.md.j2").render(d=drill),
        html_env.get_template("report.html.j2").render(d=drill),
    )
