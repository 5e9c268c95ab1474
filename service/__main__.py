"""`python -m service` is the same as the `lookout` command."""

from service.cli import main

raise SystemExit(main())
