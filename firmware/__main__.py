"""`python -m firmware` is the same as the `dpfw` command."""

from firmware.cli import main

raise SystemExit(main())
