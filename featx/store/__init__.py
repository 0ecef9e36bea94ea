"""The HDF5 feature store: one file per (dataset, backbone, weights, preprocessing), one dataset per tap.

Layout (schema version 3; version 2 had no meta_checksum and no file, and still loads)::

    /                attrs: schema_version, featx_version, backbone, weights, weights_kind, weights_sha256,
                            weights_seed, input_size, mean, std, resize, dtype, taps (in extraction order),
                            default_tap (the tap read when none is named; absent in older stores: the last
                            of taps), torch/torchvision versions (every version that computed rows, joined
                            by ", ", when a run was resumed or shards merged under others), created,
                            dataset_fingerprint, data_root, layout
    /samples/path    vlen utf-8 (N)    relative to data_root: the key that aligns stores
    /samples/label   int64 (N)         index into attrs["classes"], -1 = unlabelled
    /samples/subject vlen utf-8 (N)    "" when unknown
    /samples/split   vlen utf-8 (N)    "" when none
    /samples/done    bool (N)          rows whose features are written (resume)
    /samples/error   utf-8, 512 bytes (N) why a row could not be extracted ("" when fine)
    /samples/checksum uint64 (N, T)    per row and tap (column order: its attrs["taps"]): crc32 of the row's
                                       stored bytes and its index, plus 2**32; 0 = never written
    /samples/meta_checksum uint64 (N)  crc32 of the row's index, label, path, subject and split, plus 2**32
    /samples/file    compound (N)      size, mtime_ns, ctime_ns, sha256 of the image file the row's features
                                       came from (:mod:`~featx.store.rowid`): a resume recomputes changed ones
    /samples/network_role  vlen utf-8 (N)  only with fine-tuned weights: train, train-subject, val-choose,
                     val, "" (never seen) or unknown (see featx.provenance); attrs["tuned_provenance"] says what
                     was matched, attrs["weights_provenance"] what featx knows of where the weights come from
    /features/<tap>  float32|float16 (N, D), chunked along rows, every chunk allocated (and zero-filled)
                     when the store is created

Every dataset has a ``description`` attribute, /samples/label a ``meaning`` (``0 = all, 1 = hem; -1 =
unlabelled``), the root a ``description`` of this layout and the preprocessing in words (``preprocessing``,
``transform``, ...): see :mod:`~featx.store.describe`; stores written before them load unchanged.
A store is reopened, never rebuilt: finished rows are kept and a store made with other settings is refused.
:func:`summarize` (what ``featx info`` shows) returns a :class:`StoreSummary`.
:mod:`~featx.store.writer` says how a store survives ``kill -9`` and a full disk.
:mod:`~featx.store.shards`: a shard store (``extract(shard=...)``), one block of the single-run order, with
``/samples/index``; :mod:`~featx.store.merge`: ``merge_stores`` joins the shards into the single-run store.
"""
from featx.files import is_disk_full
from featx.store.inspect import StoreSummary, sample_table, settings_json, store_settings, summarize, verify
from featx.store.lock import lock_path, writer_active
from featx.store.merge import merge_stores
from featx.store.reader import FeatureSet, load_features
from featx.store.schema import CHUNK_BYTES, ERROR_BYTES, IDENTITY_KEYS, SCHEMA_VERSION, row_checksums
from featx.store.shards import Shard, parse_shard, part_path, shard_rows
from featx.store.writer import FeatureStore

__all__ = ["CHUNK_BYTES", "ERROR_BYTES", "IDENTITY_KEYS", "SCHEMA_VERSION", "FeatureSet", "FeatureStore", "Shard",
           "StoreSummary", "is_disk_full", "load_features", "lock_path", "merge_stores", "parse_shard", "part_path",
           "row_checksums", "sample_table", "settings_json", "shard_rows", "store_settings", "summarize", "verify",
           "writer_active"]
