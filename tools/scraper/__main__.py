"""``python -m tools.scraper [check-live] ...``."""

import sys

from .cli import main

if sys.argv[1:2] == ["check-live"]:
    from .check_live import check_live

    check_live.main(args=sys.argv[2:], prog_name="python -m tools.scraper check-live")
else:
    main()
