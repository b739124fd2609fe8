"""Reading a study file: TOML → a checked ``Study`` (its grid of ``ScoreRequest``), every mistake one
line naming the file, the line and the key. The file format is in ``alignbench.scoring.study``."""

from __future__ import annotations

import dataclasses
import itertools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignbench.datasets import DATASETS, PROTOCOLS, open_dataset
from alignbench.errors import AlignbenchError, DatasetError, ExplainerError, MetricError, ModelError
from alignbench.explainers import explainer_setting, resolve_method
from alignbench.metrics import metric_spec
from alignbench.models import ModelRequest, model_identity
from alignbench.models.specs import variant_name
from alignbench.scoring import ScoreRequest, trained_request
from alignbench.scoring.scorer import _check_metrics_fit, _validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the same parser, from PyPI
    import tomli as tomllib

BUILT_IN_STUDIES = ("paper", "demo")
# Fields of a ScoreRequest that the grid itself sets, or that belong to the command line (the machine
# the study runs on), not to the study file's [run] table.
_GRID_FIELDS = frozenset(
    {"model", "explainer", "explainer_params", "dataset", "data_dir", "fixation_sigma", "protocol", "metrics", "metric_params"}
)
_COMMAND_LINE_FIELDS = frozenset({"device", "force"})
_TOP_LEVEL = ("name", "description", "protocols", "metrics", "metric_params", "model", "explainer", "dataset", "run")


class StudyError(AlignbenchError):
    """A study file that cannot be read, or names something that does not exist."""


@dataclass(frozen=True)
class StudyDataset:
    name: str
    data_dir: Path | None = None
    fixation_sigma: float | None = None  # eye-tracking datasets: the density's blur in px (None: default)


@dataclass(frozen=True)
class Study:
    """A parsed study: the lists its grid is the product of, and the options every run shares."""

    name: str
    source: str  # the file it was read from (or "built-in <name>")
    models: tuple[ModelRequest, ...]
    explainers: tuple[tuple[str, dict[str, Any]], ...]  # canonical (method, full parameters)
    datasets: tuple[StudyDataset, ...]
    protocols: tuple[str, ...] = ("aligned",)
    metrics: tuple[str, ...] = ("spearman",)
    metric_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # ScoreRequest fields for every run
    description: str = ""

    def requests(self, **overrides: Any) -> list[ScoreRequest]:
        """The grid, one ScoreRequest per cell: datasets × protocols × explainers × models, in file
        order. ``overrides``: ScoreRequest fields from the command line (device, limit, ...); None
        values are ignored."""
        options = {**self.options, **{k: v for k, v in overrides.items() if v is not None}}
        return [
            ScoreRequest(
                model=model,
                explainer=method,
                explainer_params=dict(params),
                dataset=dataset.name,
                data_dir=dataset.data_dir,
                fixation_sigma=dataset.fixation_sigma,
                protocol=protocol,
                metrics=self.metrics,
                metric_params=self.metric_params,
                **options,
            )
            for dataset, protocol, (method, params), model in itertools.product(self.datasets, self.protocols, self.explainers, self.models)
        ]


class _Source:
    """The study file's text, to name the line of a key in messages (tomllib keeps no positions, so
    the lines are found by scanning table headers and ``key =`` lines; enough for plain TOML)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"""^\s*["']?([A-Za-z0-9_.-]+)["']?\s*=""")

    def __init__(self, label: str, text: str) -> None:
        self.label = label
        self.lines = text.splitlines()

    def line(self, table: str | None = None, index: int = 0, key: str | None = None) -> int:
        """The line of ``key`` in the ``index``-th ``[[table]]`` (or ``[table]``; None: the top level)."""
        current, seen, header_line = None, {}, None
        for number, text in enumerate(self.lines, start=1):
            header = self._HEADER.match(text)
            if header:
                current = header.group(2)
                seen[current] = seen.get(current, -1) + 1
                if current == table and seen[current] == index:
                    header_line = number
                    if key is None:
                        return number
                continue
            if key is not None and current == table and seen.get(current, 0) == index:
                found = self._KEY.match(text)
                if found and found.group(1).replace("-", "_") == key.replace("-", "_"):
                    return number
        return header_line or 1

    def error(self, message: str, table: str | None = None, index: int = 0, key: str | None = None) -> StudyError:
        return StudyError(f"{self.label}:{self.line(table, index, key)}: {message}")


def _study_file(study: str | Path) -> tuple[Path, str]:
    """(path, label) of a study name or file."""
    text = str(study)
    if text in BUILT_IN_STUDIES:
        return Path(__file__).resolve().parents[2] / "data" / "studies" / f"{text}.toml", f"built-in study {text}"
    path = Path(study).expanduser()
    if not path.is_file():
        raise StudyError(f"no study file {path}; give a TOML file or a built-in study ({', '.join(BUILT_IN_STUDIES)})")
    return path, str(path)


def load_study(study: str | Path, *, db: str | None = None, files: bool = True) -> Study:
    """Parse and check a study file (or a built-in name); StudyError naming file, line and key otherwise.
    ``db``: the store a ``trained = "TAG"`` model entry is looked up in (``alignbench models --trained``).

    ``files``: every file the cells will read is checked too — each checkpoint, each dataset's
    ``data_dir`` (opened) — so a study whose last cell could not run stops before its first one
    (``study run``); without, a model or dataset whose files are not on this machine is kept
    (``study status`` matches such cells by name)."""
    path, label = _study_file(study)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise StudyError(f"cannot read study file {label}: {error}") from None
    source = _Source(label, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyError(f"{label}: not valid TOML: {error}") from None
    return _parse(data, source, path.parent, db, files)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _expand(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict per combination of the list-valued keys (the product, in key order)."""
    keys = list(entry)
    return [dict(zip(keys, values)) for values in itertools.product(*(_as_list(entry[k]) for k in keys))]


def _tables(data: dict[str, Any], name: str, source: _Source) -> list[dict[str, Any]]:
    tables = data.get(name, [])
    if isinstance(tables, dict):
        tables = [tables]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise source.error(f"`{name}` must be tables ([[{name}]]), one per entry", key=name)
    return tables


def _strings(data: dict[str, Any], name: str, default: tuple[str, ...], source: _Source) -> tuple[str, ...]:
    values = data.get(name, list(default))
    values = _as_list(values)
    if not values or not all(isinstance(v, str) for v in values):
        raise source.error(f"`{name}` must be a non-empty list of names", key=name)
    return tuple(dict.fromkeys(values))


def _field_types(annotation: Any) -> tuple[type, ...]:
    """The Python types a dataclass field's annotation (a string, with postponed annotations) admits."""
    text = str(annotation)
    kinds = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "Path": (str,)}
    found = tuple(t for name, types in kinds.items() if re.search(rf"\b{name}\b", text) for t in types)
    return found or (object,)


def _check_type(value: Any, annotation: Any) -> bool:
    allowed = _field_types(annotation)
    if isinstance(value, bool) and bool not in allowed:
        return False  # TOML true/false is not a number
    return isinstance(value, allowed)


# model keys naming files: relative to the study file
_PATH_KEYS = ("checkpoint", "head", "stream_checkpoint")


def _trained_models(table: dict[str, Any], source: _Source, index: int, db: str | None) -> list[ModelRequest]:
    """A ``trained = "TAG"`` (or a list of tags) entry: the models ``alignbench train`` recorded under
    those tags, with the options and checkpoint it recorded (as ``score --trained TAG``)."""
    others = [key for key in table if key != "trained"]
    if others:
        raise source.error(
            f"a [[model]] with trained = ... takes no other key (it has {others[0]!r}): the tag names the model, "
            "its options and its checkpoint",
            "model",
            index,
            others[0],
        )
    models = []
    for tag in _as_list(table["trained"]):
        if not isinstance(tag, str):
            raise source.error(f"model key 'trained' = {tag!r} is not a tag (a string)", "model", index, "trained")
        try:
            models.append(trained_request(tag, db))
        except ModelError as error:
            raise source.error(error.message, "model", index, "trained") from None
    return models


def _parse_models(data: dict[str, Any], source: _Source, base: Path, db: str | None, files: bool = True) -> tuple[ModelRequest, ...]:
    fields = {f.name: f for f in dataclasses.fields(ModelRequest)}
    models: list[ModelRequest] = []
    tables = _tables(data, "model", source)
    if not tables:
        raise source.error('a study needs at least one [[model]] (name = "resnet50", ...)')
    for index, table in enumerate(tables):
        if "trained" in table:
            models += _trained_models(table, source, index, db)
            continue
        entry = {}
        for key, value in table.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise source.error(f"unknown model key {key!r}; model keys: {', '.join([*fields, 'trained'])}", "model", index, key)
            for item in _as_list(value):
                if not _check_type(item, fields[name].type):
                    raise source.error(f"model key {key!r} = {item!r} is not a {fields[name].type}", "model", index, key)
            if name in _PATH_KEYS:
                value = [str(base / Path(v).expanduser()) for v in _as_list(value)]
            entry[name] = value
        if "name" not in entry:
            raise source.error("a [[model]] needs a name (a registry name or any timm model)", "model", index)
        for options in _expand(entry):
            request = ModelRequest(**options)
            missing = next((key for key in _PATH_KEYS if options.get(key) and not Path(options[key]).exists()), None)
            if missing is not None and files:
                raise source.error(
                    f"{missing} {options[missing]} does not exist; fix the path (relative to the study file)", "model", index, missing
                )
            try:
                model_identity(request)  # unknown names, bad option combinations, missing checkpoints
            except ModelError as error:
                if missing is None:  # a file that is not here is checked by `study run` only
                    key = "name" if "unknown model" in error.message else None
                    raise source.error(error.message, "model", index, key) from None
            models.append(request)
    return tuple(dict.fromkeys(models))


def _parse_explainers(data: dict[str, Any], source: _Source) -> tuple[tuple[str, dict[str, Any]], ...]:
    tables = _tables(data, "explainer", source) or [{"method": "threshold-gradcam"}]
    settings: list[tuple[str, dict[str, Any]]] = []
    for index, table in enumerate(tables):
        table = dict(table)
        method = table.pop("method", table.pop("name", None))
        if not isinstance(method, str):
            raise source.error('an [[explainer]] needs method = "NAME" (e.g. gradcam, threshold-gradcam)', "explainer", index)
        try:
            spec = resolve_method(method)
        except ExplainerError as error:
            raise source.error(error.message, "explainer", index, "method") from None
        for key in table:
            if key not in spec.defaults:
                allowed = ", ".join(spec.defaults) or "none"
                raise source.error(
                    f"explainer {spec.name!r} takes no parameter {key!r} (its parameters: {allowed})", "explainer", index, key
                )
        for params in _expand(table):
            try:
                settings.append(explainer_setting(method, **params))
            except ExplainerError as error:
                raise source.error(error.message, "explainer", index, next(iter(params), None)) from None
    unique = {(name, tuple(sorted(params.items()))): (name, params) for name, params in settings}
    return tuple(unique.values())


def _parse_datasets(
    data: dict[str, Any], source: _Source, base: Path, files: bool = True, metrics: tuple[str, ...] = ()
) -> tuple[StudyDataset, ...]:
    datasets = []
    for index, table in enumerate(_tables(data, "dataset", source) or [{"name": "sample"}]):
        for key in table:
            if key.replace("-", "_") not in ("name", "data_dir", "fixation_sigma"):
                raise source.error(f"unknown dataset key {key!r}; dataset keys: name, data_dir, fixation_sigma", "dataset", index, key)
        name = table.get("name")
        if name not in DATASETS:
            raise source.error(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}", "dataset", index, "name")
        data_dir = table.get("data_dir", table.get("data-dir"))
        if data_dir is not None and not isinstance(data_dir, str):
            raise source.error("data_dir must be a path (a string)", "dataset", index, "data_dir")
        sigma = table.get("fixation_sigma", table.get("fixation-sigma"))
        if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not DATASETS[name].has_fixations):
            why = "a number of pixels" if DATASETS[name].has_fixations else f"only for eye-tracking datasets, not {name!r}"
            raise source.error(f"fixation_sigma is {why}", "dataset", index, "fixation_sigma")
        dataset = StudyDataset(
            name, None if data_dir is None else base / Path(data_dir).expanduser(), None if sigma is None else float(sigma)
        )
        if files:
            _check_dataset_files(dataset, source, index, metrics)
        datasets.append(dataset)
    return tuple(dict.fromkeys(datasets))


def _check_dataset_files(dataset: StudyDataset, source: _Source, index: int, metrics: tuple[str, ...]) -> None:
    """The dataset's files are where the study says (opened as its cells will open them, never
    downloading) and have what the study's metrics need (boxes, reference maps)."""
    if dataset.data_dir is None:
        if DATASETS[dataset.name].needs_data_dir:
            raise source.error(f'dataset {dataset.name!r} needs data_dir = "DIR" (its files)', "dataset", index)
        return
    if not dataset.data_dir.is_dir():
        raise source.error(
            f"data_dir {dataset.data_dir} is not a directory; fix the path (relative to the study file)", "dataset", index, "data_dir"
        )
    try:
        opened = open_dataset(dataset.name, dataset.data_dir, download=False, fixation_sigma=dataset.fixation_sigma)
    except DatasetError as error:
        raise source.error(error.message, "dataset", index, "data_dir") from None
    try:
        _check_metrics_fit(metrics, opened)
    except MetricError as error:
        raise source.error(error.message, "dataset", index) from None


def _parse(data: dict[str, Any], source: _Source, base: Path, db: str | None = None, files: bool = True) -> Study:
    for key in data:
        if key not in _TOP_LEVEL:
            raise source.error(f"unknown key {key!r}; a study has: {', '.join(_TOP_LEVEL)}", key=key)
    protocols = _parse_protocols(data, source)
    metrics = _parse_metrics(data, source)
    metric_params = _parse_metric_params(data, source, metrics)
    options = _parse_run_options(data, source)
    name = data.get("name", Path(source.label).stem)
    study = Study(
        name=str(name),
        source=source.label,
        models=_parse_models(data, source, base, db, files),
        explainers=_parse_explainers(data, source),
        datasets=_parse_datasets(data, source, base, files, metrics),
        protocols=protocols,
        metrics=metrics,
        metric_params={m: dict(p) for m, p in metric_params.items()},
        options=options,
        description=str(data.get("description", "")),
    )
    # one request checked end to end (precision, limit, batch size, ...), as score would check it
    try:
        _validate(study.requests()[0])
    except AlignbenchError as error:
        raise source.error(error.message, "run") from None
    return study


def _parse_protocols(data: dict[str, Any], source: _Source) -> tuple[str, ...]:
    protocols = _strings(data, "protocols", ("aligned",), source)
    for protocol in protocols:
        if protocol not in PROTOCOLS:
            raise source.error(f"unknown protocol {protocol!r}; use one of: {', '.join(PROTOCOLS)}", key="protocols")
    return protocols


def _parse_metrics(data: dict[str, Any], source: _Source) -> tuple[str, ...]:
    metrics = _strings(data, "metrics", ("spearman",), source)
    for metric in metrics:
        try:
            metric_spec(metric)
        except MetricError as error:
            raise source.error(error.message, key="metrics") from None
    return metrics


def _parse_metric_params(data: dict[str, Any], source: _Source, metrics: tuple[str, ...]) -> dict[str, Any]:
    metric_params = data.get("metric_params", {})
    if not isinstance(metric_params, dict):
        raise source.error("metric_params must be a table of tables ([metric_params.deletion])", key="metric_params")
    for metric, params in metric_params.items():
        table = f"metric_params.{metric}"
        if metric not in metrics:
            raise source.error(f"metric_params for {metric!r}, which is not in metrics", table)
        allowed = metric_spec(metric).params
        for key in params if isinstance(params, dict) else ():
            if key not in allowed:
                raise source.error(
                    f"metric {metric!r} takes no parameter {key!r} (its parameters: {', '.join(allowed) or 'none'})", table, 0, key
                )
    return metric_params


def _parse_run_options(data: dict[str, Any], source: _Source) -> dict[str, Any]:
    """The [run] table: ScoreRequest fields every cell shares."""
    options = data.get("run", {})
    allowed = {f.name: f for f in dataclasses.fields(ScoreRequest) if f.name not in _GRID_FIELDS | _COMMAND_LINE_FIELDS}
    for key, value in options.items():
        name = key.replace("-", "_")
        if name not in allowed:
            raise source.error(f"unknown [run] key {key!r}; [run] keys: {', '.join(allowed)}", "run", 0, key)
        if not _check_type(value, allowed[name].type):
            raise source.error(f"[run] {key} = {value!r} is not a {allowed[name].type}", "run", 0, key)
    return {key.replace("-", "_"): value for key, value in options.items()}


def describe(request: ScoreRequest) -> str:
    """One line naming a cell: the model variant, explainer, dataset, protocol."""
    method, params = explainer_setting(request.explainer, **request.explainer_params)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    model = variant_name(request.model.tag or request.model.name, dcls=request.model.dcls, ca_stream=request.model.ca_stream)
    precision = f" · {request.precision}" if request.precision != "fp32" else ""
    return f"{model} · {method}{f' ({shown})' if shown else ''} · {request.dataset} · {request.protocol}{precision}"
