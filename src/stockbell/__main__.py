"""`python -m stockbell ...`: the same command as the `stockbell` console script."""

from stockbell.cli import main

main()
