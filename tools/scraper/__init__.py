"""Harvest MedPix cases (Open-i records, MedPix case pages, images) into a MedPix 2.0 source folder.

The paper's pipeline is not public, so this package rebuilds it: list images through the
Open-i API, scrape case and topic text from the MedPix case pages, curate (keep clear CT and
MR only), download, and write a folder that ``medpix-tui bundle build`` accepts. See
``tools/scraper/README.md`` for the assumptions about the live sites.
"""
