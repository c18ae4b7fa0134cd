"""Where each site is: Open-i and MedPix base URLs, and the rewriting that sends every request to them.

The release and Open-i name absolute URLs on the public hosts (``https://openi.nlm.nih.gov//imgs/...``,
``https://medpix.nlm.nih.gov/case?id=...``) and relative paths (``/imgs/512/...``, MedPix's
``imageURL``). :meth:`Sites.url` maps both onto the configured bases, so ``--openi-base`` and
``--medpix-base`` redirect REST calls, case pages and images alike (tests and mirrors need that).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urljoin, urlparse

OPENI_BASE = "https://openi.nlm.nih.gov"
MEDPIX_BASE = "https://medpix.nlm.nih.gov"
_OPENI_HOSTS = frozenset({"openi.nlm.nih.gov"})
_MEDPIX_HOSTS = frozenset({"medpix.nlm.nih.gov"})


@dataclass(frozen=True)
class Sites:
    """The two sites' bases (no trailing slash)."""

    openi: str = OPENI_BASE
    medpix: str = MEDPIX_BASE

    def __post_init__(self) -> None:
        object.__setattr__(self, "openi", self.openi.rstrip("/"))
        object.__setattr__(self, "medpix", self.medpix.rstrip("/"))

    def url(self, url: str, site: str = "medpix") -> str:
        """``url`` on the configured base: public hosts are swapped, relative paths joined to ``site``'s base."""
        parsed = urlparse(url)
        base = self.openi if site == "openi" else self.medpix
        if parsed.scheme in ("http", "https"):
            if parsed.hostname in _OPENI_HOSTS:
                base = self.openi
            elif parsed.hostname in _MEDPIX_HOSTS:
                base = self.medpix
            else:
                return url
            tail = parsed.path.lstrip("/") + (f"?{parsed.query}" if parsed.query else "")
            return f"{base}/{tail}"
        return urljoin(base + "/", url.lstrip("/"))

    def rest(self, kind: str, **params: str) -> str:
        """A MedPix REST JSON URL, e.g. ``rest("encounter", encounterID="...")``."""
        return f"{self.medpix}/rest/{kind}.json?{urlencode(params)}"

    def case_page(self, figure_id: str) -> str:
        """The MedPix case page of one image (the release's ``URL_Article_image``)."""
        return f"{self.medpix}/case?{urlencode({'id': figure_id})}"


def query_id(url: str | None) -> str | None:
    """The ``id`` parameter of a ``case?id=`` / ``bycase?id=`` URL."""
    if not url:
        return None
    values = parse_qs(urlparse(url).query).get("id")
    return values[0].strip() or None if values else None
