"""The run summary, as a table for people."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from lineguard.runtime.executor import RunReport


def print_report(report: RunReport, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 130)
    nodes = Table(title=f"{report.recipe} — {report.status} ({report.clock} clock {report.sim_duration_s:.2f} s, wall {report.wall_duration_s:.2f} s)")
    for col in ("node", "type", "state", "in", "out", "errors", "restarts", "dropped", "mean ms", "p99 ms"):
        nodes.add_column(col, justify="right" if col not in ("node", "type", "state") else "left")
    for n in report.nodes:
        nodes.add_row(
            n["node"],
            n["type"],
            n["state"],
            str(n["in"]),
            str(sum(n["out"].values())),
            str(n["errors"]),
            str(n["restarts"]),
            str(sum(n["dropped"].values())),
            "" if n["mean_ms"] is None else f"{n['mean_ms']:.3f}",
            "" if n["p99_ms"] is None else f"{n['p99_ms']:.3f}",
        )
    console.print(nodes)
    edges = Table(title="edges")
    for col in ("edge", "policy", "capacity", "delivered", "dropped", "high water"):
        edges.add_column(col, justify="left" if col in ("edge", "policy") else "right")
    for e in report.edges:
        edges.add_row(e["edge"], e["policy"], str(e["capacity"]), str(e["delivered"]), str(e["dropped"]), str(e["high_water"]))
    console.print(edges)
    events = [(n["node"], e, c) for n in report.nodes for e, c in n.get("events", {}).items()]
    if events:
        table = Table(title="node events")
        for col in ("node", "event", "count"):
            table.add_column(col, justify="right" if col == "count" else "left")
        for node, event, count in events:
            table.add_row(node, event, str(count))
        console.print(table)
    if report.error:
        console.print(f"[red]error:[/red] {report.error}")
