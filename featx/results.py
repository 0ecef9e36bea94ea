"""Result rows: one typed record per evaluated backbone x tap x (head or fine-tuned network) x protocol.

Evaluation and fine-tuning build :class:`ResultRow` objects; reports, ``featx table`` and saved models read
them. ``results.json`` holds :meth:`ResultRow.to_dict` of each row (flat: each metric as ``<metric>``,
``<metric>_std``, ``<metric>_ci_low``, ``<metric>_ci_high``); ``results.csv`` one line per row with the
settings spread over ``settings.<key>`` columns. Both read back to equal rows (:meth:`from_dict`,
:func:`rows_from_csv`): a row holds JSON-ready values (numpy made plain, NaN as None) from construction on.
A row is frozen: built once with everything it says (its sub-records in :mod:`featx.row_records`), never changed.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from featx import csvfiles
from featx.row_records import NETWORK_KEYS, FrozenDict, NetworkRecord, SearchRecord, TunedRecord
from featx.scoring import METRICS  # every metric a row reports, in table order

_SUFFIXES = {"std": "_std", "ci_low": "_ci_low", "ci_high": "_ci_high"}
# The mark of a row's weights_provenance (featx.provenance) in every output.
WEIGHTS_MARKS = {"unknown": "weights of unknown provenance", "stated-unseen": "weights stated unseen by the user"}


@dataclass(frozen=True)
class Score:
    """One metric of a row: the mean over folds (None where the metric is undefined: NaN is stored as None),
    the sample std of the fold values (ddof=1; None with one fold) and the 95% interval of that mean (None
    when the design supports none: the row's ``interval["na"]`` says why)."""

    mean: float | None
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def __post_init__(self):
        for f in fields(self):  # NaN (an undefined metric) is stored as None, as JSON writes it
            object.__setattr__(self, f.name, _number(getattr(self, f.name)))


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class ResultRow:
    """What one evaluated combination scored, how, and on which rows: a value, built once with everything it
    says (its attributes cannot be set and its mappings are read-only :class:`FrozenDict`; a changed row is a
    new one, ``dataclasses.replace(row, ...)``).

    ``head`` is the classifier trained on stored features (``"svm"``, ...), or None for a fine-tuned
    network scored with its own softmax (then ``tap`` is ``"logits"``, and ``network`` says which epoch). ``name``
    is the display name. The protocol's facts are fields (``protocol``, ``protocol_label``, ``image_level``,
    ``optimistic``, ``dropped_unknown_subjects``): readers decide marks from them, never from the label's text.
    Rows of some kinds carry a sub-record: ``network`` (:class:`NetworkRecord`), ``nested_search``
    (:class:`SearchRecord`), ``tuned_store`` (:class:`TunedRecord`); their results.json keys (``best_epoch``,
    ``nested``, ``chosen_params``, ``search``, ``tuned``, ...) read as properties of the row.
    """

    name: str
    backbone: str
    tap: str
    head: str | None
    protocol: str
    protocol_label: str
    image_level: bool
    n_folds: int
    n_train: int
    n_test: int
    n_subjects: int
    classes: list[str]
    positive: str
    scores: dict[str, Score] = field(default_factory=dict)
    confusion: list[list[int]] | None = None
    ci_unit: str | None = None
    # how the intervals were made: method, level, unit, n_units, and per metric why there is none ("na")
    interval: dict | None = None
    # the paired difference from the protocol's reference row (featx.evaluation.differences.compare_rows)
    comparison: dict | None = None
    per_subject_accuracy: dict[str, float] | None = None
    roc: dict | None = None
    predictions: dict | None = None  # out-of-fold predictions: predictions/<row>.csv, never results.json
    fit_seconds: float | None = None
    wall_seconds: float | None = None
    settings: dict = field(default_factory=dict)
    # the protocol's compact name as its protocol object gives it ("subject 5-fold", "IMAGE-LEVEL C-NMC folds (3)");
    # None in results.json of featx before protocol objects
    protocol_short: str | None = None
    # why a number may not be an estimate for new patients, and what the data lacked
    optimistic: bool = False
    tuned_store: TunedRecord | None = None  # features of fine-tuned weights (results.json: ``tuned``)
    partial: str | None = None
    excluded_images: int = 0
    dropped_unknown_subjects: int = 0
    selection_uncorrected: bool = False  # one of many rows compared with a selected row (compare --select)
    # what featx knows of the weights behind the features: None (known), "unknown" (no featx provenance) or
    # "stated-unseen" (the user stated that they never saw these images); see featx.provenance
    weights_provenance: str | None = None
    network: NetworkRecord | None = None        # a fine-tuned network's own row
    nested_search: SearchRecord | None = None   # parameters searched inside each outer fold

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "scores":
                value = FrozenDict(_all_metrics(value))
            elif f.name == "predictions":  # arrays stay as they are (written to their own CSV)
                value = FrozenDict(value) if isinstance(value, dict) else value
            elif f.name not in _RECORDS:
                value = jsonable(value)
                value = FrozenDict(value) if isinstance(value, dict) else value
            object.__setattr__(self, f.name, value)
        if self.network == NetworkRecord():  # an empty record reads back as none
            object.__setattr__(self, "network", None)

    # results.json keys of the sub-records, as plain values (None where the row has no such record)
    @property
    def tuned(self) -> dict | None:
        """``{"n_seen", "n_unseen", "checkpoints"}`` of :attr:`tuned_store` (results.json ``tuned``)."""
        return None if self.tuned_store is None else jsonable(asdict(self.tuned_store))

    best_epoch = property(lambda self: self._network("best_epoch"), doc="``network.best_epoch``")
    scored_epoch = property(lambda self: self._network("scored_epoch"), doc="``network.scored_epoch``")
    epochs_run = property(lambda self: self._network("epochs_run"), doc="``network.epochs_run``")
    n_skipped = property(lambda self: self._network("n_skipped"), doc="``network.n_skipped``")
    selection = property(lambda self: self._network("selection"), doc="``network.selection``")
    scored_epochs = property(lambda self: self._network("scored_epochs"), doc="``network.scored_epochs``")
    train_accuracy_last_epoch = property(lambda self: self._network("train_accuracy_last_epoch"),
                                         doc="``network.train_accuracy_last_epoch``")

    def _network(self, key: str):
        return None if self.network is None else jsonable(getattr(self.network, key))

    @property
    def nested(self) -> bool:
        """Whether the row's parameters were searched inside each outer fold (:attr:`nested_search`)."""
        return self.nested_search is not None

    @property
    def chosen_params(self) -> list[dict] | None:
        """The parameters chosen in each outer fold (None for a row without a nested search)."""
        return None if self.nested_search is None else jsonable(self.nested_search.chosen_params)

    @property
    def search(self) -> dict | None:
        """The nested search's settings: method, metric, inner_folds, n_iter, space as text."""
        return None if self.nested_search is None else jsonable(self.nested_search.settings)

    @property
    def inner_scores(self) -> list[dict] | None:
        """Every inner candidate per outer fold (``search/<row>.csv`` only)."""
        return None if self.nested_search is None else jsonable(self.nested_search.inner_scores)

    @property
    def kind(self) -> str:
        """``"head"`` (a classifier on stored features) or ``"network"`` (a fine-tuned network's softmax)."""
        return "network" if self.head is None else "head"

    @property
    def flag(self) -> str:
        """``"OPTIMISTIC"``, ``"IMAGE-LEVEL"`` or ``""``: why the number is not an estimate for new patients."""
        if self.optimistic:
            return "OPTIMISTIC"
        return "IMAGE-LEVEL" if self.image_level else ""

    @property
    def provenance_mark(self) -> str:
        """``"weights of unknown provenance"``, ``"weights stated unseen by the user"`` or ``""``."""
        return WEIGHTS_MARKS.get(self.weights_provenance or "", "")

    @property
    def close_mark(self) -> str:
        """``"≈ best"`` (or ``"≈ ref"``) when the row's paired difference from its protocol's reference row has an
        interval holding 0 (:attr:`comparison`); ``""`` otherwise."""
        return str((self.comparison or {}).get("mark") or "")

    @property
    def marks(self) -> list[str]:
        """Every mark the row carries into each output, in the order they are printed: its :attr:`flag`, its
        :attr:`provenance_mark`, then its :attr:`close_mark`."""
        return [m for m in (self.flag, self.provenance_mark, self.close_mark) if m]

    @property
    def marked(self) -> bool:
        """Whether outputs highlight the row: a :attr:`flag`, or weights of unknown provenance."""
        return bool(self.flag) or self.weights_provenance == "unknown"

    def score(self, metric: str) -> Score:
        """The row's :class:`Score` of ``metric`` (all None when it was not computed)."""
        return self.scores.get(metric) or Score(None)

    def mean(self, metric: str) -> float:
        """The row's estimate of ``metric`` (NaN when it was not computed or is undefined)."""
        mean = self.score(metric).mean
        return float("nan") if mean is None else mean

    def to_dict(self, *, predictions: bool = False) -> dict[str, Any]:
        """The flat, JSON-ready form written to results.json (``predictions`` and ``inner_scores``, written to
        their own CSVs, left out unless asked), with the row's :attr:`marks` (derived; read back from the fields
        that make them). The sub-records' keys are flat, where featx always wrote them."""
        out: dict[str, Any] = {"marks": self.marks}
        for key in _FLAT:
            if key == "scores":
                for m, s in self.scores.items():
                    out[m] = s.mean
                    for attr, suffix in _SUFFIXES.items():
                        out[m + suffix] = getattr(s, attr)
            elif key not in _OWN_FILES or predictions:
                out[key] = getattr(self, key)
        return jsonable(out)

    @classmethod
    def from_dict(cls, data: dict) -> ResultRow:
        """A row from :meth:`to_dict` output (also reads results.json of featx before the typed rows)."""
        data = dict(data)
        data.pop("marks", None)  # derived from the row's fields
        if "name" not in data and "model" in data:  # results.json before ResultRow
            data["name"] = data.pop("model")
        if data.get("head") == "finetune":
            data["head"] = None
        unknown = set(data) - set(_FLAT) - _metric_keys()
        if unknown:
            raise ValueError(f"not a result row: unknown keys {sorted(unknown)}")
        missing = [k for k, default in _FLAT.items() if k not in data and default is _REQUIRED]
        if missing:
            raise ValueError(f"not a result row: missing keys {missing}")
        kwargs = {k: v for k, v in data.items() if k in _PLAIN}
        tuned = data.get("tuned")
        search = {k: data.get(k) for k in ("chosen_params", "search", "inner_scores")}
        return cls(**kwargs, scores=_scores_from_flat(data),
                   tuned_store=None if tuned is None else TunedRecord(**tuned),
                   network=NetworkRecord(**{k: data.get(k) for k in NETWORK_KEYS}),
                   nested_search=(SearchRecord.of(search["search"], search["chosen_params"], search["inner_scores"])
                                  if data.get("nested") or any(v is not None for v in search.values()) else None))


def summary_scores(summary: dict) -> dict[str, Score]:
    """The scores of a fold summary (``<metric>``, ``<metric>_std``, ``_ci_low``, ``_ci_high``), for a row's
    ``scores``."""
    return _scores_from_flat(summary)


_REQUIRED = object()
_OWN_FILES = ("predictions", "inner_scores")  # fields with files of their own, not in results.json/csv


def _default(f):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else _REQUIRED


# The sub-records and the flat keys (with their defaults) they are written as, in results.json's order.
_RECORDS = {"tuned_store": {"tuned": None}, "network": dict.fromkeys(NETWORK_KEYS),
            "nested_search": {"nested": False, "chosen_params": None, "search": None, "inner_scores": None}}
_PLAIN = tuple(f.name for f in fields(ResultRow) if f.name not in (*_RECORDS, "scores"))  # fields = keys
_FLAT = {k: v for f in fields(ResultRow) for k, v in _RECORDS.get(f.name, {f.name: _default(f)}).items()}


def _metric_keys() -> set[str]:
    return {m + s for m in METRICS for s in ("", *_SUFFIXES.values())}


def _all_metrics(scores: dict[str, Score]) -> dict[str, Score]:
    """Every metric of :data:`METRICS`, in table order (an uncomputed one as ``Score(None)``), then others."""
    return {**{m: scores.get(m) or Score(None) for m in METRICS}, **scores}


def _scores_from_flat(flat: dict) -> dict[str, Score]:
    return {m: Score(flat.get(m), *(flat.get(m + s) for s in _SUFFIXES.values())) for m in METRICS if m in flat}


def jsonable(value):
    """``value`` with numpy types made plain and non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):  # a FrozenDict too: JSON-ready values are plain dicts and lists
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------------------
# JSON and CSV files
# --------------------------------------------------------------------------------------------------
_FIRST = ("name", "backbone", "tap", "head", "protocol", "protocol_label", "marks", "image_level", "n_folds",
          "n_train", "n_test", "n_subjects", "positive")


def write_json(rows: Sequence[ResultRow], path: str | Path) -> Path:
    """``results.json``: a list of :meth:`ResultRow.to_dict`."""
    path = Path(path)
    path.write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n", encoding="utf-8")
    return path


def read_json(path: str | Path) -> list[ResultRow]:
    """Rows of a results.json; ValueError when the file is not a list of result rows."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError("expected a list of result rows")
    rows = []
    for i, r in enumerate(data):
        try:
            rows.append(ResultRow.from_dict(r))
        except ValueError as exc:
            raise ValueError(f"expected a list of result rows; row {i + 1} is {exc}") from None
    return rows


def csv_columns(rows: Iterable[ResultRow]) -> list[str]:
    """The columns of results.csv: identity, every metric with its spread, the other fields (those at their
    default in every row left out), then ``settings.<key>`` of every setting any row has."""
    rows = list(rows)
    metric_cols = [m + s for m in METRICS for s in ("", *_SUFFIXES.values())]
    rest = [k for k, default in _FLAT.items() if k not in (*_FIRST, "scores", "settings", *_OWN_FILES)
            and (default is _REQUIRED or any(getattr(r, k) != default for r in rows))]
    settings: list[str] = []
    for r in rows:
        settings += [f"settings.{k}" for k in r.settings if f"settings.{k}" not in settings]
    return [*_FIRST, *metric_cols, *rest, *settings]


# A cell is empty for None, True/False for booleans (as featx always wrote them), the text of a string
# (JSON-quoted when it would read back as something else: "", "1", "null", "True"), JSON for the rest.
_BOOLS = {"True": True, "False": False}


def _cell(value) -> str:
    """A CSV cell that reads back to ``value`` through :func:`_uncell`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value) if value == "" or _uncell(value) != value else value
    return json.dumps(jsonable(value), sort_keys=True)


def _settings_cell(settings: dict, key: str) -> str:
    """A setting's cell: empty when the row has no such setting, ``null`` when it is None."""
    if key not in settings:
        return ""
    return "null" if settings[key] is None else _cell(settings[key])


def _uncell(text: str):
    if text == "":
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    try:
        return json.loads(text)
    except ValueError:
        return text


def write_csv(rows: Sequence[ResultRow], path: str | Path) -> Path:
    """``results.csv``: one line per row (see :func:`csv_columns`)."""
    path = Path(path)
    cols = csv_columns(rows)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csvfiles.writer(fh)
        writer.writerow(cols)
        for r in rows:
            flat = r.to_dict()
            writer.writerow([_settings_cell(r.settings, c[9:]) if c.startswith("settings.") else _cell(flat.get(c))
                             for c in cols])
    return path


def rows_from_csv(path: str | Path) -> list[ResultRow]:
    """Rows of a results.csv written by :func:`write_csv`."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        records = list(csvfiles.DictReader(fh))
    rows = []
    for rec in records:
        flat = {k: _uncell(v) for k, v in rec.items() if not k.startswith("settings.")}
        flat["settings"] = {k[9:]: _uncell(v) for k, v in rec.items() if k.startswith("settings.") and v != ""}
        rows.append(ResultRow.from_dict(flat))
    return rows
