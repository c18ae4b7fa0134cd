"""Dropping the watchers a removed widget left on a long-lived object (Textual issue 6666).

``self.watch(obj, ...)`` and ``data_bind`` store ``(widget, callback)`` on the *watched*
object, and Textual prunes that list only when the watched attribute changes next. A
widget that watches something long-lived whose value stays put (the app's title, the
results screen's footer's ``compact``) is therefore kept, with its whole subtree and its
render caches, for the app's lifetime: each case opened left its header and the results
screen's footer keys behind (about 10,000 objects a case), and Python's full garbage
collections, walking them all, grew to 400 ms pauses after 40 cases: the long tail of
case open. :func:`forget_watchers` does now what Textual would do at the next change.
"""

from __future__ import annotations

from textual.dom import DOMNode


def forget_watchers(observed: object, owner: DOMNode | None = None) -> int:
    """Drop ``observed``'s watcher entries made by ``owner`` or by any node that is closing; how many.

    Textual keeps them under the attribute ``__watchers`` (name -> list of (node, callback));
    an object without it has nothing to drop.
    """
    watchers: dict[str, list[tuple[DOMNode, object]]] = getattr(observed, "__watchers", None) or {}
    dropped = 0
    for entries in watchers.values():
        kept = [(node, callback) for node, callback in entries
                if node is not owner and not getattr(node, "_closing", False)]
        dropped += len(entries) - len(kept)
        entries[:] = kept
    return dropped
