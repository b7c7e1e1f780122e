"""``python -m cloudburst`` runs the command-line interface."""

from cloudburst.cli.main import main

raise SystemExit(main())
