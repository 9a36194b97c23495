"""`python -m flywheel.cli` runs the `flywheel` command."""

from flywheel.cli import main

main()
