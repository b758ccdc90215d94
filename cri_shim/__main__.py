"""Allows `python -m cri_shim`."""

from cri_shim.cli import main

raise SystemExit(main())
