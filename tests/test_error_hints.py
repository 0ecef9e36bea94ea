"""Library errors carry structured hints: arguments and commands, spelled as Python by str(), as the CLI by
render()."""
from featx.cli.app import flag
from featx.errors import FeatxError, arg, command


def test_a_command_hint_reads_as_python_in_the_library_and_as_a_command_line_in_the_cli():
    err = FeatxError(f"store.h5: no rows; run {command('extract --shard 1/2', 'featx.extract(..., shard=(1, 2))')} "
                     f"or lower {arg('n_folds', 3)}")
    assert str(err) == "store.h5: no rows; run `featx.extract(..., shard=(1, 2))` or lower n_folds=3"
    assert err.render(flag) == "store.h5: no rows; run `featx extract --shard 1/2` or lower --folds 3"
    assert "featx extract" not in str(err) and "--" not in str(err)
