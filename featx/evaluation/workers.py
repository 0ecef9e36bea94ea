"""The old name of :mod:`featx.evaluation.pool` (the grid's process pool; ``workers`` in featx are the decode
workers of extraction and fine-tuning). Kept only while :mod:`featx.evaluation.inputs` imports ``check_jobs``
from here; import from :mod:`featx.evaluation.pool`."""
from featx.evaluation.pool import check_jobs

__all__ = ["check_jobs"]
