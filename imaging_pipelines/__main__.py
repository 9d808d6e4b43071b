"""``python -m imaging_pipelines ...``: the ``imaging-pipelines`` command (see :mod:`imaging_pipelines.entry`)."""

from imaging_pipelines.entry import main

raise SystemExit(main())
