"""Text from users' data (class, region, scene and method names) made safe for matplotlib."""

from __future__ import annotations


def mpl_text(name: object) -> str:
    """`name` shown literally by a matplotlib text artist: each `$` escaped, so no mathtext is parsed
    (a class folder named `p$\\q{$` would otherwise fail to draw)."""
    return str(name).replace("$", r"\$")
