"""Test and benchmark helpers: numeric comparison (``numeric``), DeepSeek shape lists (``shapes``)."""
