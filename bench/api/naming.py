"""File-system-safe names for suites, datasets, methods and training stages."""

import re


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
