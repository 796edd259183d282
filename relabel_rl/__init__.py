"""Shared plumbing for relabel-rl's entry points: the config convention and the run-directory convention."""

from relabel_rl.config import ConfigError, config_to_dict, load_config, parse_overrides, to_yaml
from relabel_rl.rundir import RunDir, git_sha, jsonable, package_versions, read_metrics, seed_everything

__all__ = [
    "ConfigError",
    "RunDir",
    "config_to_dict",
    "git_sha",
    "jsonable",
    "load_config",
    "package_versions",
    "parse_overrides",
    "read_metrics",
    "seed_everything",
    "to_yaml",
]
