"""Who a session belongs to once it has authenticated, shared by auth and the stores."""

from __future__ import annotations

from dataclasses import dataclass

_FORBIDDEN = frozenset("/\\\0")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # the login name, as the user database spells it
    home: str | None = None  # the passwd-file's home field, when set

    @property
    def local_part(self) -> str:
        return self.name.rpartition("@")[0] or self.name

    @property
    def domain(self) -> str:
        return self.name.rpartition("@")[2] if "@" in self.name else ""


def is_safe_user_name(name: str) -> bool:
    """Whether a name can become part of a path without leaving the mail root.

    Refuses separators, NUL, control and space characters, "..", and a leading dot (which would
    also collide with Maildir++ folder names).
    """
    return (
        0 < len(name) <= 255
        and name.isprintable()
        and not any(c in _FORBIDDEN or c.isspace() for c in name)
        and ".." not in name
        and not name.startswith(".")
        and not name.startswith("@")
    )
