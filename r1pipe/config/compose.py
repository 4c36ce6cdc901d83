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

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from hydra.plugins.config_source import ConfigSource
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from r1pipe.config.inputs import read_text
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


def _first_line(text: str) -> str:
    """The first line of an error, joined to the next when it only introduces it (Hydra's
    ``In 'x': ValidationError raised while composing config:`` then the reason)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]


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
    first = _first_line(str(cause)) or _first_line(msg)
    m = re.search(r"Key '([^']+)' (?:is )?not in struct|Key '([^']+)' not in '(\w+)'", str(cause))
    if m or "not in struct" in str(cause):
        key = full_key or (m.group(1) or m.group(2) if m else "?")
        return f"unknown config key '{key}'{_did_you_mean(key)}"
    if full_key:
        return f"invalid value for '{full_key}': {first}"
    return first


def _experiment_text(path: str) -> str:
    """The text of a user's experiment file (``conf=PATH``) once it is known to compose as
    one: UTF-8 (a byte order mark dropped), valid YAML, a mapping, with the ``_global_``
    package header."""
    key = f"conf={path}"
    text = read_text(path, "conf")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{key}: not valid YAML ({where}{problem})") from None
    if data is None:
        raise UserError(f"{key}: has no config keys (only comments or blank lines)")
    if not isinstance(data, dict):
        raise UserError(
            f"{key}: an experiment file is a mapping of config keys (model:, task:, stage:, "
            f"...), not a {'list' if isinstance(data, list) else type(data).__name__}; see "
            "conf/experiment/smoke.yaml"
        )
    try:
        package = ConfigSource._get_header_dict(text).get("package")
    except ValueError as e:  # a malformed `# @...` header line
        raise UserError(f"{key}: bad header line ({e})") from None
    if package != "_global_":
        found = "has no '# @package' header" if package is None else f"is '@package {package}'"
        raise UserError(
            f"{key}: {found}; an experiment sets top-level keys (model:, task:, stage:, ...), "
            "so make '# @package _global_' its first line"
        )
    return text


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
            src = Path(conf).expanduser()
            if not src.exists():
                raise UserError(f"conf={conf}: experiment file not found")
            text = _experiment_text(conf)
            # Compose from a private copy of the tree with the user's file as one more
            # experiment, so it can use `override /model: ...` like the shipped ones.
            tmp = tempfile.mkdtemp(prefix="r1pipe-conf-")
            shutil.copytree(search, tmp, dirs_exist_ok=True)
            (Path(tmp) / "experiment" / "_user.yaml").write_text(text, encoding="utf-8")
            search, conf = Path(tmp), "_user"
        if conf is not None:
            rest = [f"experiment={conf}"] + rest
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(search), version_base="1.3"):
                cfg = hydra_compose(config_name="config", overrides=rest)
        except (HydraException, OmegaConfBaseException, yaml.YAMLError) as e:
            msg = _explain(e)
            if tmp:  # name the user's file, not the private copy
                msg = msg.replace(str(Path(tmp) / "experiment" / "_user.yaml"), str(src))
                msg = msg.replace("experiment/_user", str(src))
            raise UserError(f"config error: {msg}") from None
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
