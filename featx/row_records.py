"""The parts of a result row (:class:`featx.results.ResultRow`) that only some rows have, each a frozen record:
:class:`NetworkRecord` (a fine-tuned network scored with its own softmax), :class:`SearchRecord` (a nested
parameter search) and :class:`TunedRecord` (features of a fine-tuned network's weights); and
:class:`FrozenDict`, the read-only mapping a row keeps its settings (and its other mappings) in.

A row is a value: nothing changes it after it is built. A different row is a new one
(``dataclasses.replace(row, settings={**row.settings, "tag": "a"})``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


class FrozenDict(dict):
    """A dict that refuses every change with a TypeError. It is still a dict: it equals the dict of the same
    items, JSON writes it as one, and it pickles and copies."""

    def _refuse(self, *_args, **_kwargs):
        raise TypeError("a result row is read-only: build a new one (dataclasses.replace) instead of changing it")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):
        return FrozenDict, (dict(self),)


def frozen(value):
    """``value`` with its mappings made :class:`FrozenDict` and its sequences tuples, all the way down."""
    if isinstance(value, dict):
        return FrozenDict({k: frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    return value


def _freeze_fields(record) -> None:
    for f in fields(record):
        object.__setattr__(record, f.name, frozen(getattr(record, f.name)))


@dataclass(frozen=True)
class NetworkRecord:
    """A fine-tuned network's row: the epoch chosen (``best_epoch``, best.pt) and the epoch scored, how many
    epochs ran, images skipped and how the scored epoch was chosen (``selection``); a hybrid run's network row
    has the scored epoch and last training accuracy of each outer fold instead."""

    best_epoch: int | None = None
    scored_epoch: int | None = None
    epochs_run: int | None = None
    n_skipped: int | None = None
    selection: str | None = None
    scored_epochs: tuple[int, ...] | None = None
    train_accuracy_last_epoch: tuple[float, ...] | None = None

    def __post_init__(self):
        _freeze_fields(self)


NETWORK_KEYS = tuple(f.name for f in fields(NetworkRecord))  # its keys in results.json, in this order


@dataclass(frozen=True)
class SearchRecord:
    """A nested parameter search (:mod:`featx.evaluation.search`): its settings (``method``, ``metric``,
    ``inner_folds``, ``n_iter``, ``space`` as text per head), the parameters chosen in each outer fold and every
    inner candidate's score (``inner_scores``: written to ``search/<row>.csv``, never results.json)."""

    method: str | None = None
    metric: str | None = None
    inner_folds: int | None = None
    n_iter: int | None = None
    space: FrozenDict | None = None
    chosen_params: tuple[FrozenDict, ...] | None = None   # one per outer fold
    inner_scores: tuple[FrozenDict, ...] | None = None

    def __post_init__(self):
        _freeze_fields(self)

    @classmethod
    def of(cls, settings: dict | None, chosen_params=None, inner_scores=None) -> SearchRecord:
        """The record of a search's settings (:meth:`featx.evaluation.Search.describe`) and its choices."""
        return cls(**(settings or {}), chosen_params=chosen_params, inner_scores=inner_scores)

    @property
    def settings(self) -> dict | None:
        """The search's settings as results.json writes them (``search``); None when none were recorded."""
        out = {k: getattr(self, k) for k in SEARCH_SETTINGS}
        return None if all(v is None for v in out.values()) else out


SEARCH_SETTINGS = ("method", "metric", "inner_folds", "n_iter", "space")


@dataclass(frozen=True)
class TunedRecord:
    """Features of a fine-tuned network's weights: how many labelled rows its network saw (``n_seen``) or
    never saw (``n_unseen``) and the checkpoints behind the store (store, checkpoint, sha256, provenance)."""

    n_seen: int
    n_unseen: int
    checkpoints: tuple[FrozenDict, ...] = ()

    def __post_init__(self):
        _freeze_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)
