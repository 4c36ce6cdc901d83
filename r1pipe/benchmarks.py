"""Benchmarks for ``r1pipe eval``: the paper's math test sets by name, any other source by path.

``load_benchmark(cfg.bench)`` returns the problems as :class:`~r1pipe.data.types.Example`
(id, problem text, reference answer); ``load_predictions(path, cfg.bench)`` reads completions
written by any model for scoring. A bad row raises one :class:`~r1pipe.errors.UserError`
naming the file and line.

Named benchmarks live as ``NAME/test.jsonl`` under a data folder (``bench.data_dir``, else
``$R1PIPE_DATA_DIR``, ``./data``, ``../shared/data``)::

    >>> sorted(BENCHMARKS)
    ['aime24', 'aime25', 'amc23', 'gsm8k', 'math500']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1pipe.config.schema import BenchConfig
from r1pipe.data.jsonl import read_jsonl
from r1pipe.data.types import Example
from r1pipe.errors import UserError
from r1pipe.rewards.parsing import extract_boxed, extract_gsm8k_reference


@dataclass(frozen=True)
class Benchmark:
    """Where a named benchmark's file is and how its rows read."""

    file: str
    """Path under the data folder."""
    prompt_field: str
    answer_field: str
    reference: str
    """How the reference is read from ``answer_field``: ``field``, ``gsm8k`` or ``boxed``."""
    about: str


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark(
        "gsm8k/test.jsonl", "question", "answer", "gsm8k", "GSM8K test, 1319 problems"
    ),
    "math500": Benchmark(
        "math500/test.jsonl", "problem", "answer", "field", "MATH-500 (PRM800K split)"
    ),
    "aime24": Benchmark("aime24/test.jsonl", "problem", "answer", "field", "AIME 2024, 30"),
    "aime25": Benchmark("aime25/test.jsonl", "problem", "answer", "field", "AIME 2025, 30"),
    "amc23": Benchmark("amc23/test.jsonl", "problem", "answer", "field", "AMC 2023, 40"),
}

# Field names tried, in order, when neither the config nor the benchmark names one.
PROMPT_FIELDS = ("problem", "question", "prompt", "input")
REFERENCE_FIELDS = ("answer", "reference", "ground_truth", "gt", "target", "solution")
COMPLETION_FIELDS = (
    "completions",
    "completion",
    "responses",
    "response",
    "outputs",
    "output",
    "generations",
    "generation",
    "predictions",
    "prediction",
)
ID_FIELDS = ("id", "unique_id", "idx", "problem_id", "question_id")

_REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir_candidates(data_dir: str | None) -> list[Path]:
    """Folders searched for named benchmarks, in order."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    found = [Path(os.environ["R1PIPE_DATA_DIR"])] if os.environ.get("R1PIPE_DATA_DIR") else []
    found += [Path.cwd() / "data", Path.cwd().parent / "shared" / "data"]
    found.append(_REPO_ROOT.parent / "shared" / "data")
    return list(dict.fromkeys(p.resolve() for p in found))


def resolve_source(cfg: BenchConfig) -> tuple[str, Benchmark | None, str]:
    """``(source, registry entry or None, label)`` for ``bench.name``.

    The label names the output folder: the benchmark's name, a file's stem, or a hub id with
    ``/`` replaced.
    """
    if not cfg.name:
        raise UserError(
            "r1pipe eval: benchmark= is required ("
            + ", ".join(BENCHMARKS)
            + ", a JSONL/parquet/CSV path or a datasets source), or predictions=FILE.jsonl"
        )
    if cfg.name in BENCHMARKS:
        bench = BENCHMARKS[cfg.name]
        places = data_dir_candidates(cfg.data_dir)
        for folder in places:
            if (folder / bench.file).is_file():
                return str(folder / bench.file), bench, cfg.name
        raise UserError(
            f"benchmark={cfg.name}: {bench.file} not found under "
            f"{', '.join(str(p) for p in places)}; set data_dir=DIR (bench.data_dir) to the "
            "folder that holds it, or pass benchmark=PATH"
        )
    path = Path(cfg.name).expanduser()
    if path.exists():
        return str(path), None, file_label(path)
    if cfg.name.count("/") == 1 and not cfg.name.startswith((".", "/", "~")):
        return cfg.name, None, cfg.name.replace("/", "__")  # a hub dataset id
    raise UserError(
        f"benchmark={cfg.name}: not a known benchmark ({', '.join(BENCHMARKS)}), "
        "an existing path, or a hub dataset id"
    )


def _read_source(source: str, split: str) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Rows with a location each (``file:line`` or ``source[i]``), and a display name."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".jsonl":
        return [(f"{path}:{n}", row) for n, row in read_jsonl(path, "benchmark")], str(path)
    from datasets import load_dataset, load_from_disk
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    try:
        if path.is_file():
            kind = {".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
            if path.suffix not in kind:
                raise UserError(
                    f"benchmark={source}: unknown file type (jsonl, json, parquet, csv)"
                )
            ds = load_dataset(kind[path.suffix], data_files=str(path), split="train")
        elif path.is_dir() and (path / "dataset_info.json").is_file():
            ds = load_from_disk(str(path))
        else:
            ds = load_dataset(source, split=split)
        if hasattr(ds, "keys") and not hasattr(ds, "column_names"):  # a DatasetDict
            ds = ds[split]
    except UserError:
        raise
    except Exception as e:  # datasets raises many types; the user needs the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"benchmark={source}: cannot load with datasets ({first})") from None
    return [(f"{source}[{i}]", row) for i, row in enumerate(ds.to_list())], source


def _pick(row: dict[str, Any], configured: str | None, candidates: tuple[str, ...]) -> str | None:
    """The configured field name, or the first candidate the row has (not null)."""
    if configured:
        return configured
    return next((c for c in candidates if row.get(c) is not None), None)


def _text(value: Any) -> str:
    # Numbers stored as numbers (AIME25's 70, AMC23's 27.0) become the answer as written.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def file_label(path: Path) -> str:
    """A folder name for results from a file: its stem, with its folder's name when the stem
    only names a split (``math500/test.jsonl`` -> ``math500-test``)."""
    path = Path(path)
    if path.is_dir():
        return path.name
    generic = path.stem in ("test", "train", "validation", "val", "dev", "eval")
    return f"{path.parent.resolve().name}-{path.stem}" if generic else path.stem


def read_reference(raw: Any, mode: str | None, where: str) -> str:
    """The reference answer from a field: as is, after ``####``, or the last ``\\boxed{}``.

    ``mode=None`` decides per value: ``gsm8k`` when it has ``####``, ``boxed`` when it has a
    box, else the field as is.

    >>> read_reference("so 72 #### 72", None, "x"), read_reference(27.0, None, "x")
    ('72', '27')
    """
    text = _text(raw).strip()
    if mode is None:
        mode = "gsm8k" if "####" in text else "boxed" if "\\boxed" in text else "field"
    if mode == "gsm8k":
        if "####" not in text:
            raise UserError(f"{where}: reference has no '#### <answer>' (reference=gsm8k)")
        return extract_gsm8k_reference(text)
    if mode == "boxed":
        boxed = extract_boxed(text)
        if boxed is None:
            raise UserError(f"{where}: reference has no \\boxed{{}} (reference=boxed)")
        return boxed
    if not text:
        raise UserError(f"{where}: the reference is empty")
    return text


def load_benchmark(cfg: BenchConfig) -> tuple[list[Example], str, str]:
    """The problems of ``bench.name`` (the first ``bench.limit``), its source and label."""
    source, bench, label = resolve_source(cfg)
    rows, shown = _read_source(source, cfg.split)
    prompt_key = cfg.prompt_field or (bench.prompt_field if bench else None)
    answer_key = cfg.answer_field or (bench.answer_field if bench else None)
    mode = cfg.reference or (bench.reference if bench else None)
    examples: list[Example] = []
    seen: set[str] = set()
    for i, (where, row) in enumerate(rows):
        p = _pick(row, prompt_key, PROMPT_FIELDS)
        a = _pick(row, answer_key, REFERENCE_FIELDS)
        for name, flag, value in (("problem", "prompt_field", p), ("reference", "answer_field", a)):
            if value is None or row.get(value) is None or not _text(row[value]).strip():
                raise UserError(
                    f"{where}: row has no {name} field"
                    + (f" '{value}'" if value else "")
                    + f" (set {flag}=NAME); fields present: {sorted(row)}"
                )
        assert p is not None and a is not None
        id_key = _pick(row, None, ID_FIELDS)
        ex_id = _text(row[id_key]) if id_key else str(i)
        if ex_id in seen:
            raise UserError(f"{where}: id {ex_id!r} appears twice in {shown}")
        seen.add(ex_id)
        examples.append(Example(ex_id, _text(row[p]), read_reference(row[a], mode, where)))
        if cfg.limit and len(examples) == cfg.limit:
            break
    return examples, shown, label


@dataclass
class Prediction:
    """One problem of a predictions file with every completion written for it."""

    id: str
    question: str | None
    reference: str
    completions: list[str] = field(default_factory=list)


def _completions(row: dict[str, Any], where: str) -> tuple[list[str], str]:
    name = next((c for c in COMPLETION_FIELDS if c in row), None)
    if name is None and "solution" in row:
        name = "solution"  # MATH rows as they are: the worked solution is the completion
    if name is None:
        raise UserError(
            f"{where}: row has no completion (one of {', '.join(COMPLETION_FIELDS)}, or "
            f"solution); fields present: {sorted(row)}"
        )
    value = row[name]
    texts = value if isinstance(value, list) else [value]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise UserError(f"{where}: '{name}' must be a string or a non-empty list of strings")
    return texts, name


def load_predictions(path: str, cfg: BenchConfig) -> tuple[list[Prediction], str]:
    """Completions to score, grouped by problem (rows with one id add completions to it).

    A row has an id (``id``, ``unique_id``, ...) or the problem text (``problem``,
    ``question``, ``prompt``), one or more completions (``completion``, ``completions``,
    ``response``, ...; a MATH row's ``solution``), and the reference (``answer``,
    ``reference``, ...; a GSM8K ``#### N`` answer or a ``\\boxed{}`` solution is read as such).
    With ``benchmark=NAME`` that benchmark's field names and reference rule apply.
    """
    bench = BENCHMARKS.get(cfg.name or "")
    prompt_key = cfg.prompt_field or (bench.prompt_field if bench else None)
    answer_key = cfg.answer_field or (bench.answer_field if bench else None)
    mode = cfg.reference or (bench.reference if bench else None)
    file = Path(path).expanduser()
    by_id: dict[str, Prediction] = {}
    first_line: dict[str, int] = {}
    for lineno, row in read_jsonl(file, "predictions"):
        where = f"{file}:{lineno}"
        texts, used = _completions(row, where)
        candidates = tuple(f for f in REFERENCE_FIELDS if f != used)
        a = answer_key if answer_key and answer_key != used else _pick(row, None, candidates)
        if a is None or row.get(a) is None:
            raise UserError(
                f"{where}: row has no reference answer (one of {', '.join(candidates)}, or "
                f"set answer_field=NAME); fields present: {sorted(row)}"
            )
        reference = read_reference(row[a], mode, where)
        q_key = _pick(row, prompt_key, PROMPT_FIELDS)
        question = _text(row[q_key]) if q_key and row.get(q_key) is not None else None
        id_key = _pick(row, None, ID_FIELDS)
        pid = _text(row[id_key]) if id_key else question
        if pid is None:
            raise UserError(
                f"{where}: row has neither an id ({', '.join(ID_FIELDS)}) nor the problem "
                f"({', '.join(PROMPT_FIELDS)}); fields present: {sorted(row)}"
            )
        pred = by_id.get(pid)
        if pred is None:
            by_id[pid] = pred = Prediction(pid, question, reference)
            first_line[pid] = lineno
        elif pred.reference != reference:
            raise UserError(
                f"{where}: problem {pid[:60]!r} has reference {reference!r} here but "
                f"{pred.reference!r} on line {first_line[pid]}"
            )
        pred.completions.extend(texts)
    preds = list(by_id.values())
    return preds[: cfg.limit] if cfg.limit else preds, str(file)
