"""Diagnostics: every problem a user can hit names the file, line and column, the node, and the
param or port, and says what was expected and what was found."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Mark:
    """A position in a recipe file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    mark: Mark
    message: str
    node: str | None = None
    param: str | None = None
    port: str | None = None
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = []
        if self.node is not None:
            where.append(f"node '{self.node}'")
        if self.param is not None:
            where.append(f"param '{self.param}'")
        if self.port is not None:
            where.append(f"port '{self.port}'")
        head = f"{self.mark}: " + (" ".join(where) + ": " if where else "")
        prefix = "warning: " if self.severity == "warning" else ""
        return head + prefix + self.message

    def to_json(self) -> dict:
        return {
            "file": self.mark.file,
            "line": self.mark.line,
            "col": self.mark.col,
            "severity": self.severity,
            "node": self.node,
            "param": self.param,
            "port": self.port,
            "message": self.message,
            "text": str(self),
        }


class RecipeError(Exception):
    """A recipe that cannot be compiled. Carries every error found, not just the first."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: d.mark)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class NodeFailure(Exception):
    """A node raised while the graph ran (and had no restarts left)."""

    def __init__(self, node: str, node_type: str, frame_id: int | None, cause: BaseException) -> None:
        self.node = node
        self.node_type = node_type
        self.frame_id = frame_id
        self.cause = cause
        at = f" on frame {frame_id}" if frame_id is not None else ""
        super().__init__(f"node '{node}' ({node_type}) failed{at}: {type(cause).__name__}: {cause}")


class RegistryError(Exception):
    """Two node types claim the same id, or a plugin could not be loaded."""
