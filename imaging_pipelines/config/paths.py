"""Where the project's files are (imports nothing): the project folder and the default catalog folder."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CATALOG_DIR = PROJECT_ROOT / "data_catalog"
