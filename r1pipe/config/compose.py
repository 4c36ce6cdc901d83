"""One config composition path: Hydra's compose API over ``conf/`` and the typed schemas.

``compose(["conf=smoke", "stage.cold_start.lr=1e-3"])`` returns the validated
:class:`~r1pipe.config.schema.R1Config` and the resolved DictConfig. Every failure becomes a
:class:`r1pipe.errors.UserError` whose one-line message names the key, option or file.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from r1pipe.config.schema import ConfigError, R1Config
from r1pipe.errors import UserError

SCHEMA_NAME = "r1pipe_schema"


def conf_dir() -> Path:
    """The ``conf/`` tree: ``$R1PIPE_CONF_DIR``, else the one beside the package source."""
    env = os.environ.get("R1PIPE_CONF_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "conf"
    if not (path / "config.yaml").is_file():
        raise UserError(f"config tree not found: {path}/config.yaml (set R1PIPE_CONF_DIR)")
    return path


def _register_schema() -> None:
    ConfigStore.instance().store(name=SCHEMA_NAME, node=R1Config)


def _split_conf(overrides: list[str]) -> tuple[str | None, list[str]]:
    conf, rest = None, []
    for o in overrides:
        if o.startswith("conf="):
            conf = o.split("=", 1)[1]
        else:
            rest.append(o)
    return conf, rest


def _explain(err: Exception) -> str:
    """Turn a Hydra/OmegaConf exception into one line that names the key."""
    msg = str(err).strip()
    if isinstance(err, MissingConfigException):
        opts = getattr(err, "options", None)
        m = re.search(r"Could not find '([^']+)'", msg)
        what = m.group(1) if m else msg.splitlines()[0]
        avail = f"; available: {', '.join(sorted(opts))}" if opts else ""
        return f"unknown config option '{what}'{avail}"
    cause = err.__cause__ or err
    full_key = getattr(cause, "full_key", None)
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else msg.splitlines()[0]
    m = re.search(r"Key '([^']+)' (?:is )?not in struct|Key '([^']+)' not in '(\w+)'", str(cause))
    if m or "not in struct" in str(cause):
        key = full_key or (m.group(1) or m.group(2) if m else "?")
        return f"unknown config key '{key}'{_did_you_mean(key)}"
    if full_key:
        return f"invalid value for '{full_key}': {first}"
    return first


def _did_you_mean(key: str) -> str:
    """`` (did you mean 'stage.cold_start.max_steps'?)`` for a near miss of a schema key."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.structured(R1Config)
    if parent:
        node = OmegaConf.select(node, parent, default=None)
    if not isinstance(node, DictConfig):
        return ""
    close = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1)
    return f" (did you mean '{parent + '.' if parent else ''}{close[0]}'?)" if close else ""


def _check_against_schema(cfg: DictConfig) -> None:
    """Merge the composed tree into a fresh schema: Hydra applies ``+key=value`` with the
    struct flag off, so a key the schema lacks (``+stage.cold_start.max_stepz=5``) would
    otherwise ride along unchecked, and ``OmegaConf.to_object`` keeps it as a stray attribute.
    The merge refuses unknown keys and converts every value to its field's type."""
    container = OmegaConf.to_container(cfg, resolve=False)
    OmegaConf.merge(OmegaConf.structured(R1Config), container)


def compose(overrides: list[str] | None = None) -> tuple[R1Config, DictConfig]:
    """Compose ``conf/config.yaml`` with an experiment and overrides; validate it.

    Args:
        overrides: Hydra overrides; ``conf=NAME`` picks ``conf/experiment/NAME.yaml`` and
            ``conf=PATH.yaml`` an experiment file anywhere.

    Returns:
        The typed config and the resolved DictConfig (what ``STAGE/config.yaml`` records).

    Raises:
        UserError: unknown key or option, wrong type, inconsistent values, missing file.
    """
    conf, rest = _split_conf(list(overrides or []))
    _register_schema()
    tmp: str | None = None
    search = conf_dir()
    try:
        if conf is not None and (conf.endswith((".yaml", ".yml")) or os.sep in conf):
            src = Path(conf)
            if not src.is_file():
                raise UserError(f"conf={conf}: experiment file not found")
            # Compose from a private copy of the tree with the user's file as one more
            # experiment, so it can use `override /model: ...` like the shipped ones.
            tmp = tempfile.mkdtemp(prefix="r1pipe-conf-")
            shutil.copytree(search, tmp, dirs_exist_ok=True)
            shutil.copy(src, Path(tmp) / "experiment" / "_user.yaml")
            search, conf = Path(tmp), "_user"
        if conf is not None:
            rest = [f"experiment={conf}"] + rest
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(search), version_base="1.3"):
                cfg = hydra_compose(config_name="config", overrides=rest)
        except (HydraException, OmegaConfBaseException) as e:
            raise UserError(f"config error: {_explain(e)}") from None
        finally:
            GlobalHydra.instance().clear()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return validate(cfg)


def validate(cfg: DictConfig) -> tuple[R1Config, DictConfig]:
    """Resolve interpolations, check mandatory values and cross-field rules."""
    try:
        OmegaConf.resolve(cfg)
        _check_against_schema(cfg)
        obj = OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        raise UserError(
            f"config error: '{e.full_key}' is required but not set (pass {e.full_key}=...)"
        ) from None
    except ConfigError as e:
        raise UserError(f"config error: {e}") from None
    except OmegaConfBaseException as e:
        raise UserError(f"config error: {_explain(e)}") from None
    assert isinstance(obj, R1Config)
    return obj, cfg


def from_yaml(path: str | Path) -> tuple[R1Config, DictConfig]:
    """Load and validate a resolved config saved as ``STAGE/config.yaml``."""
    schema = OmegaConf.structured(R1Config)
    try:
        loaded = OmegaConf.load(path)
        cfg = OmegaConf.merge(schema, loaded)
    except OmegaConfBaseException as e:
        raise UserError(f"{path}: {_explain(e)}") from None
    assert isinstance(cfg, DictConfig)
    return validate(cfg)
