"""`python -m featx` runs the command line (also what `torchrun -m featx` starts)."""
from featx.cli import main

main()
