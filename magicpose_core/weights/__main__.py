"""``python -m magicpose_core.weights {convert,download,inspect}``: the weights command line."""
import sys

from .checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
