"""Typed config schemas and the one composition path."""

from r1pipe.config.compose import compose, conf_dir, from_yaml
from r1pipe.config.schema import R1Config

__all__ = ["R1Config", "compose", "conf_dir", "from_yaml"]
