"""``python -m magicpose_core.weights {convert,download,inspect}``: the weights command line (cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
