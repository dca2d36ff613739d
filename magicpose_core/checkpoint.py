"""Old entry point kept for the documented command: ``python -m magicpose_core.checkpoint`` runs
``python -m magicpose_core.weights`` (convert, download, inspect). The code lives in ``magicpose_core/weights/``."""
if __name__ == "__main__":
    import sys

    from .weights.cli import main

    sys.exit(main())
