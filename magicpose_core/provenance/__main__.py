"""Command line: ``python -m magicpose_core.provenance check FILE...``.

Prints, per file, whether the invisible MagicPose watermark is present, the decoded payload and its bit
accuracy, and the 'AI-generated with MagicPose' metadata label. Exit status: 0 when every file carries
the watermark, 1 when one does not, 2 when one could not be checked (unreadable file, package missing).
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m magicpose_core.provenance",
                                     description="Check files for MagicPose's invisible watermark and label.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check videos and images")
    check.add_argument("files", nargs="+", help="video (mp4, webm, …) or image (png, jpg, webp, gif) files")
    check.add_argument("--json", action="store_true", help="one JSON object per file instead of text")
    args = parser.parse_args(argv)

    from .check import check_file

    status = 0
    for path in args.files:
        try:
            report = check_file(path)
        except Exception as e:  # one bad file must not hide the others' results
            print(json.dumps({"source": path, "error": str(e)}) if args.json else f"{path}: error: {e}")
            status = 2
            continue
        print(json.dumps(report.as_dict()) if args.json else report.text())
        if report.watermark is None:
            status = 2
        elif not report.present:
            status = max(status, 1)
    return status


if __name__ == "__main__":
    sys.exit(main())
