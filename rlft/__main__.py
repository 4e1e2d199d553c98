"""``python -m rlft`` (and ``torchrun ... -m rlft``): the ``rlft`` command."""

from rlft.cli import main

raise SystemExit(main())
