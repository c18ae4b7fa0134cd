"""``python -m tools.scraper``."""

from .cli import main

main()
