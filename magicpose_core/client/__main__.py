"""``python -m magicpose_core.client``: the headless client's command line."""
import sys

from .core import main

if __name__ == "__main__":
    sys.exit(main())
