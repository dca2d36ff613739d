"""``python -m magicpose_core.client``: the headless client's command line (`cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
